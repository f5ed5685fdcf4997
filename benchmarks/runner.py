"""Running every measurement on one database, repeated, with progress lines."""

import sys
import time
from dataclasses import dataclass

from benchmarks import measures
from benchmarks.report import summary


@dataclass
class Sizes:
    tasks: int = 5000
    repeat: int = 3
    deep_future: int = 1_000_000
    deep_failed: int = 100_000
    memory_tasks: int = 100_000
    default_sleep: float = 5.0
    default_sleep_samples: int = 6
    fast_sleep: float = 0.05
    fast_sleep_samples: int = 20
    query_tasks: int = 200

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(tasks=200, repeat=1, deep_future=20_000, deep_failed=2_000, memory_tasks=500,
                   default_sleep=0.5, default_sleep_samples=2, fast_sleep_samples=3, query_tasks=30)


def progress(label: str, text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {text}", file=sys.stderr, flush=True)


def measure_database(ctx: measures.Context, sizes: Sizes) -> dict:
    """Run every measurement on ``ctx.target`` and return its measurements and plans."""
    label = ctx.target.label
    samples: dict[str, list[float]] = {}
    extra: dict[str, dict] = {}

    def record(name: str, value: float, unit: str) -> None:
        samples.setdefault(name, []).append(value)
        units[name] = unit

    units: dict[str, str] = {}
    ctx.target.migrate()
    ctx.target.empty()

    for run in range(1, sizes.repeat + 1):
        step = f"repeat {run}/{sizes.repeat}"
        figures = measures.enqueue(ctx, sizes.tasks)
        record("insert_limit", figures["insert"], "tasks/s")
        record("enqueue_autocommit", figures["autocommit"], "tasks/s")
        record("enqueue_atomic", figures["atomic"], "tasks/s")
        progress(label, f"{step} enqueue {sizes.tasks}: raw INSERT {figures['insert']:.0f}/s, "
                        f"autocommit {figures['autocommit']:.0f}/s, one transaction {figures['atomic']:.0f}/s")

        ctx.target.empty()
        value = measures.limit(ctx, sizes.tasks)
        record("limit", value, "tasks/s")
        progress(label, f"{step} limit loop on {sizes.tasks} tasks: {value:.0f}/s")
        ctx.target.empty()
        value = measures.limit(ctx, sizes.tasks, loop="floor")
        record("floor", value, "tasks/s")
        progress(label, f"{step} floor loop (claim-and-delete) on {sizes.tasks} tasks: {value:.0f}/s")
        for count in (1, 2, 4):
            ctx.target.empty()
            result = measures.drain(ctx, sizes.tasks, count)
            name = "drain_1_worker" if count == 1 else f"drain_{count}_workers"
            record(name, result["rate"], "tasks/s")
            entry = extra.setdefault(name, {"duplicates": 0, "left": 0})
            entry["duplicates"] += result["duplicates"]
            entry["left"] += result["left"]
            progress(label, f"{step} drain with {count} worker(s): {result['rate']:.0f}/s, "
                            f"{result['duplicates']} duplicate runs, {result['left']} rows left")

    ctx.target.empty()
    progress(label, f"filling {sizes.deep_future:,} future and {sizes.deep_failed:,} failed rows with bulk SQL")
    started = time.monotonic()
    ctx.target.fill(sizes.deep_future, ahead=86400)
    ctx.target.fill(sizes.deep_failed, name="bench.noop", failed=True)
    ctx.target.analyze()
    progress(label, f"filled in {time.monotonic() - started:.1f} s")
    ctx.target.fill(sizes.tasks)
    plan = measures.explain(ctx)
    ctx.target.execute("DELETE FROM background_task WHERE failed_at IS NULL AND run_at <= "
                       + ("%s" if ctx.target.vendor == "postgresql" else "?"),
                       (measures.sql.param(ctx.target.vendor, measures.sql.now()),))
    # NOTE: each repeat leaves the rows it deleted to a VACUUM that never runs
    # in this phase, so later repeats can be slower on PostgreSQL.
    for run in range(1, sizes.repeat + 1):
        step = f"repeat {run}/{sizes.repeat}"
        value = measures.limit(ctx, sizes.tasks)
        record("limit_deep", value, "tasks/s")
        result = measures.drain(ctx, sizes.tasks, 1)
        record("drain_1_worker_deep", result["rate"], "tasks/s")
        progress(label, f"{step} deep table: limit {value:.0f}/s, one worker {result['rate']:.0f}/s")
    ctx.target.empty()

    for key, sleep, count in (("pickup_default_sleep", sizes.default_sleep, sizes.default_sleep_samples),
                              ("pickup_fast_sleep", sizes.fast_sleep, sizes.fast_sleep_samples)):
        progress(label, f"pickup latency with --sleep {sleep:g}, {count} samples")
        for value in measures.pickup_latency(ctx, sleep, count):
            record(key, value, "s")
        extra.setdefault(key, {})["sleep"] = sleep
        ctx.target.empty()
        progress(label, f"pickup latency with --sleep {sleep:g}: median {sorted(samples[key])[len(samples[key]) // 2] * 1000:.1f} ms")

    progress(label, f"memory: one worker with DEBUG = True over {sizes.memory_tasks:,} tasks")
    result = measures.memory(ctx, sizes.memory_tasks)
    record("memory_before", result["before_mb"], "MB")
    record("memory_after", result["after_mb"], "MB")
    record("memory_growth", result["growth_mb"], "MB")
    record("drain_1_worker_debug", result["rate"], "tasks/s")
    extra["memory_growth"] = {"tasks": sizes.memory_tasks}
    progress(label, f"memory: {result['before_mb']:.1f} MB -> {result['after_mb']:.1f} MB at {result['rate']:.0f} tasks/s")

    ctx.target.empty()
    figures = measures.queries_per_task(ctx, sizes.query_tasks)
    for name, value in figures.items():
        record(name, value, "per task")
    progress(label, "queries per task: " + ", ".join(f"{name} {value:.2f}" for name, value in figures.items()))

    measurements = {name: {**summary(values, units[name]), **extra.get(name, {})} for name, values in samples.items()}
    return {"settings": ctx.target.describe(), "measurements": measurements, "claim_plan_deep_table": plan}
