"""The measurements. Each returns plain numbers; the caller repeats them and reports.

Drain rates come from the marks the tasks write when they start: tasks per
second from the first task's start to the last one's, so process start-up
and shutdown are left out, for the workers and the limit loop alike.
"""

import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from benchmarks import sql
from benchmarks.marks import duplicates, rate, read_marks
from benchmarks.workers import Workers, run_probe, wait_for_marks

#: Idle workers poll this often during drains, so they join a fresh fill at once.
DRAIN_SLEEP = 0.05


@dataclass
class Context:
    target: object
    folder: Path

    def marks_file(self, measurement: str) -> Path:
        return self.folder / f"marks-{measurement}-{uuid.uuid4().hex[:8]}.txt"


def limit(ctx: Context, tasks: int, loop: str = "limit") -> float:
    """Tasks per second of a raw-driver loop on ``tasks`` due rows, added to the rows the table already contains.

    ``loop`` is the probe's "limit" (claim, delete, commit) or "floor" (claim-and-delete, commit).
    """
    marks = ctx.marks_file(loop)
    ctx.target.fill(tasks)
    result = run_probe(ctx.target, loop, tasks, BENCH_MARKS=str(marks))
    if result["done"] != tasks:
        raise RuntimeError(f"the {loop} loop ran {result['done']} of {tasks} tasks")
    return rate(read_marks(str(marks)))


def warm_up(ctx: Context, workers: Workers, marks: Path, count: int) -> int:
    """Run throw-away tasks until every worker has run one, so all are started and idle.

    Returns how many marks the warm-up wrote. Warm-up tokens are negative.
    """
    expected_pids = {process.pid for process in workers.processes}
    written, batch = 0, 0
    deadline = time.monotonic() + 120
    while {mark.pid for mark in read_marks(str(marks))} != expected_pids:
        workers.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("not every worker started running tasks within 120 s")
        batch += 1
        ctx.target.fill(count, first_token=-batch * count)
        written += count
        wait_for_marks(marks, written, workers)
        time.sleep(0.1)
    time.sleep(0.3)
    return written


def drain(ctx: Context, tasks: int, worker_count: int) -> dict:
    """Start ``worker_count`` idle workers, add ``tasks`` due rows, and time the drain."""
    marks = ctx.marks_file(f"drain{worker_count}")
    with Workers(ctx.target, ctx.folder, worker_count, DRAIN_SLEEP, BENCH_MARKS=str(marks)) as workers:
        written = warm_up(ctx, workers, marks, worker_count)
        ctx.target.fill(tasks)
        wait_for_marks(marks, written + tasks, workers)
        workers.stop()
    runs = [mark for mark in read_marks(str(marks)) if mark.token > 0]
    return {"rate": rate(runs), "duplicates": duplicates(runs), "left": ctx.target.count()}


def enqueue(ctx: Context, tasks: int) -> dict:
    """Rates of the raw INSERT loop, of autocommit calls and of calls inside one transaction."""
    figures = {}
    for name, mode, extra in (("insert", "insert", ()), ("autocommit", "enqueue", ()), ("atomic", "enqueue", ("--atomic",))):
        ctx.target.empty()
        figures[name] = run_probe(ctx.target, mode, tasks, *extra)["rate"]
    ctx.target.empty()
    return figures


def pickup_latency(ctx: Context, sleep: float, samples: int) -> list[float]:
    """Seconds from committing a task due now to its start, with one idle worker polling every ``sleep``."""
    marks = ctx.marks_file(f"latency{sleep:g}")
    latencies = []
    with Workers(ctx.target, ctx.folder, 1, sleep, BENCH_MARKS=str(marks)) as workers:
        written = warm_up(ctx, workers, marks, 1)
        connection = ctx.target.connect()
        try:
            for number in range(1, samples + 1):
                # A random wait puts the enqueue at a random point of the worker's sleep.
                time.sleep(random.uniform(0.05, 0.05 + sleep))
                cursor = connection.cursor()
                cursor.execute(
                    sql.INSERT[ctx.target.vendor],
                    ("bench.noop", f"[[{number}],{{}}]", sql.param(ctx.target.vendor, sql.now())),
                )
                cursor.fetchall()
                connection.commit()
                enqueued = time.time()
                written += 1
                wait_for_marks(marks, written, workers, timeout=sleep + 60)
                started = next(mark.time for mark in read_marks(str(marks)) if mark.token == number)
                latencies.append(max(started - enqueued, 0.0))
        finally:
            connection.close()
        workers.stop()
    return latencies


def memory(ctx: Context, tasks: int) -> dict:
    """Worker RSS with DEBUG = True after its warm-up and after ``tasks`` more tasks, in MB."""
    marks = ctx.marks_file("memory")
    with Workers(ctx.target, ctx.folder, 1, DRAIN_SLEEP, BENCH_MARKS=str(marks), BENCH_DEBUG="1") as workers:
        written = warm_up(ctx, workers, marks, 100)
        before = workers.rss_kib()
        ctx.target.fill(tasks)
        wait_for_marks(marks, written + tasks, workers)
        time.sleep(0.2)
        after = workers.rss_kib()
        workers.stop()
    runs = [mark for mark in read_marks(str(marks)) if mark.token > 0]
    return {"before_mb": before / 1024, "after_mb": after / 1024, "growth_mb": (after - before) / 1024, "rate": rate(runs)}


def queries_per_task(ctx: Context, tasks: int) -> dict:
    """Statements and commits one worker sends per successful and per failed task."""
    figures = {}
    for outcome, name in (("success", "bench.noop"), ("failure", "bench.fail")):
        ctx.target.empty()
        marks = ctx.marks_file(f"queries-{outcome}")
        ctx.target.fill(tasks, name=name)
        with Workers(ctx.target, ctx.folder, 1, DRAIN_SLEEP, BENCH_MARKS=str(marks), BENCH_COUNT="1") as workers:
            wait_for_marks(marks, tasks, workers)
            workers.stop()
        runs = sorted(read_marks(str(marks)), key=lambda mark: mark.time)
        # Each mark carries the counts at its task's start, so the difference
        # between the first and the last spans whole claim-run-record cycles.
        cycles = len(runs) - 1
        figures[f"{outcome}_statements"] = (runs[-1].statements - runs[0].statements) / cycles
        figures[f"{outcome}_commits"] = (runs[-1].commits - runs[0].commits) / cycles
    ctx.target.empty()
    return figures


def explain(ctx: Context) -> dict:
    """Return the plan of the worker's claim query on the table as it is now."""
    return run_probe(ctx.target, "explain")
