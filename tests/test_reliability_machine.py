"""Several workers at once, with crashes and stalls, driven by a Hypothesis state machine.

The spec's state machine (spec/test_11_model.py) runs one worker at a time.
This one runs up to three real :class:`~background_task.worker.Worker`
objects at once. Each lives in a thread of its own, with its own database
connection, and takes one step at a time on command from the machine:

* a task is enqueued, or a worker is started;
* worker i takes its next step: it runs or settles the task it claimed
  along with its last outcome, or claims the earliest due task. A task that
  starts waits for the machine to end its run;
* two idle workers take their next step at the same moment, released
  together by a barrier;
* worker i ends its running task with a success or a failure;
* worker i crashes, as after SIGKILL: it never writes again, whether it was
  running a task or holding a claim;
* worker i stalls past MAX_RUN_TIME, so its locks expire while it still
  believes it holds them;
* worker i stops, as after SIGTERM, and releases the task it claimed next;
* time passes.

After every step the machine reads the table and checks that:

* every task a live worker holds is locked by that worker with the lock it
  took, so no two workers hold one task. A stalled worker is the exception,
  because its locks have expired;
* a row locked by a live worker is one that worker runs or claimed next, or
  its lock has expired;
* each enqueued task was deleted after exactly one recorded success, or is
  pending (possibly locked by a live or crashed worker), or failed with a
  non-empty last_error. Its attempts equal the failed and lost runs that
  workers recorded for it, and never exceed MAX_ATTEMPTS;
* the runs of the task function, counted in this process, match the row:
  every run beyond the first is explained by a failed attempt, or by a
  crash or stall that the row records as a lost run;
* a claim takes the earliest due task, and finds none only if none was due;
* a released claim leaves the row as it was before the claim.

At the end of each example, the running tasks succeed, the workers stop,
time moves past every lock and retry delay, and a fresh worker drains the
queue. Every task must then be gone after one success, or failed with a
reason, and no row may be left locked.

A crash closes the thread's connection and points it at a database that
cannot be opened, so the worker's attempt to record the run raises, as the
write of a killed process never happens. The machine reads two private
attributes of Worker: the claim it took along with its last outcome, which
is the worker's own belief of what it holds, and the release it makes on
its way out.

Time is controlled without freezegun, which patches the clock of the whole
process, worker threads included, so moving it would race with their reads.
MAX_RUN_TIME is 600 s, far longer than an example takes, and "time passes"
moves the stored times back: run_at of every row, and locked_at of the rows
locked by crashed or stalled workers. The locks of live workers do not age,
because under ``process_tasks`` SIGALRM ends a run before its lock expires.
A stall models a worker that SIGALRM could not stop in time, or a process
that was paused for that long.

The machine runs on SQLite too, where the threads share the test database
file and a conditional UPDATE, not SKIP LOCKED, keeps two claims apart.
"""

import queue
import threading
import traceback
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.db import DatabaseError, InterfaceError, connection
from django.db.models import F
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from background_task.models import Task
from background_task.outcomes import Outcome
from background_task.worker import Worker
from tests.taskapp import machine_tasks

pytestmark = pytest.mark.django_db(transaction=True)

MAX_RUN_TIME_SECONDS = 600
LOCK_LIFETIME = timedelta(seconds=MAX_RUN_TIME_SECONDS)
#: How far a stall moves a worker's locks back: past their lifetime, with a
#: margin for the real time that passes during an example.
STALL = LOCK_LIFETIME + timedelta(seconds=60)
#: Steps of time: half a first retry's 6 s delay, past a second retry's
#: 21 s, and past a lock's lifetime. Like the enqueue delays and the retry
#: delays, they are multiples of 3 s, so a stored time is either due or at
#: least 3 s from due, and the real time an example takes does not decide.
TIME_STEPS = (timedelta(seconds=3), timedelta(seconds=30), STALL)
ENQUEUE_DELAYS = (0, 60)
MAX_LIVE_WORKERS = 3
#: Picks a worker among those a step applies to, modulo their number.
WORKER_INDEX = st.integers(min_value=0, max_value=MAX_LIVE_WORKERS - 1)
MAX_TASKS = 10
#: How many times the drain at the end of an example moves time and runs the queue.
DRAIN_ROUNDS = 6
#: Seconds to wait for a worker thread's reply: a safety net for a hung thread.
REPLY_TIMEOUT = 120

MACHINE_SETTINGS = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# The table, as the test process reads it


@dataclass(frozen=True)
class Row:
    """One stored task, as a step left it."""

    pk: int
    run_at: datetime
    attempts: int
    failed_at: datetime | None
    last_error: str
    locked_by: str | None
    locked_at: datetime | None

    def lock_expired(self, now: datetime) -> bool:
        return self.locked_at is not None and self.locked_at < now - LOCK_LIFETIME

    def is_due(self, now: datetime) -> bool:
        """Whether a worker may claim the row at ``now``: the rule of ``Task.objects.due``, written out."""
        unlocked_or_expired = self.locked_at is None or self.lock_expired(now)
        return self.failed_at is None and self.run_at <= now and unlocked_or_expired

    def order(self) -> tuple[datetime, int]:
        """The claim order: earliest run_at first, ties by id."""
        return (self.run_at, self.pk)


@dataclass(frozen=True)
class Snapshot:
    """Every row of the table, and a time taken just after reading them."""

    rows: dict[int, Row]
    now: datetime

    @classmethod
    def take(cls) -> "Snapshot":
        fields = ("pk", "run_at", "attempts", "failed_at", "last_error", "locked_by", "locked_at")
        rows = {values[0]: Row(*values) for values in Task.objects.values_list(*fields)}
        return cls(rows, timezone.now())

    def due(self, excluded: Collection[int] = ()) -> list[Row]:
        """Rows due at this snapshot's time, in claim order, leaving out ``excluded``."""
        due = [row for row in self.rows.values() if row.is_due(self.now) and row.pk not in excluded]
        return sorted(due, key=Row.order)


# What the test process counts outside the database


@dataclass
class Execution:
    """One run of the task function, as the thread that ran it reported it."""

    token: str
    worker: str
    #: "running", then "returned", "raised" or "crashed".
    ending: str = "running"


class RunLog:
    """Every run of a task function in this process, shared by the worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executions: list[Execution] = []

    def start(self, token: str, worker: str) -> Execution:
        execution = Execution(token, worker)
        with self._lock:
            self._executions.append(execution)
        return execution

    def end(self, execution: Execution, ending: str) -> None:
        with self._lock:
            execution.ending = ending

    def of(self, token: str) -> list[Execution]:
        with self._lock:
            return [execution for execution in self._executions if execution.token == token]


@dataclass
class Account:
    """The outcomes that workers reported for one enqueued task."""

    token: str
    pk: int
    successes: int = 0
    #: Failed runs and lost runs that a worker recorded; the row's attempts must equal it.
    failures: int = 0
    #: Outcomes not written because the lock had expired during a stall.
    lock_lost_outcomes: int = 0
    #: Whether a worker stalled while holding the task.
    stalled: bool = False


@dataclass
class Totals:
    """Counts across all examples, for the reliability report."""

    examples: int = 0
    steps: int = 0
    tasks: int = 0
    succeeded: int = 0
    #: Tasks failed for good: the machine fails runs on purpose.
    failed: int = 0
    lost: int = 0
    #: Tasks whose function returned more than once, which only a stall allows.
    run_twice: int = 0
    #: Tasks that ran more often than their rows record.
    unexplained_runs: int = 0
    left_locked: int = 0
    crashes: int = 0
    stalls: int = 0
    claims_together: int = 0
    #: Steps in which both workers looked for a due task at the same moment.
    races: int = 0
    #: Runs beyond a task's first.
    reruns: int = 0
    #: Runs recorded as lost once another worker found their expired lock.
    lost_runs: int = 0
    #: Outcomes not written because the lock had expired during a stall (Outcome.LOCK_LOST).
    lock_lost_outcomes: int = 0


# Worker threads


class TaskFailure(Exception):
    """Raised by a task whose run the machine ends as failed."""


class Crash(BaseException):
    """Unwinds a task whose worker thread has crashed; the worker's attempt to record the run then fails."""


@dataclass
class Command:
    #: "claim", "succeed", "fail", "crash" or "stop".
    kind: str
    barrier: threading.Barrier | None = None


@dataclass
class Reply:
    #: "started", "settled", "dead", "stopped" or "error".
    kind: str
    token: str | None = None
    outcome: Outcome | None = None
    #: The row's (locked_by, locked_at, run_at) as the task read it when it started.
    seen: tuple | None = None
    detail: str = ""


@dataclass
class Holding:
    """A task a worker believes it holds: the one it runs, or the one it claimed next."""

    pk: int
    locked_at: datetime
    #: Whether its lock expired during a stall of the worker.
    stale: bool = False
    #: The lock the row carried before the claim: set when the claim took the
    #: row from an expired lock, so the worker records a lost run instead of running it.
    previous_lock: tuple[str | None, datetime | None] = (None, None)

    @property
    def took_expired_lock(self) -> bool:
        return self.previous_lock[0] is not None


def unreachable_settings(settings_dict: dict, missing_dir: Path) -> dict:
    """Return a copy of ``settings_dict`` that names a database in a folder that does not exist."""
    unreachable = dict(settings_dict)
    if settings_dict["ENGINE"].endswith("sqlite3"):
        unreachable["NAME"] = str(missing_dir / "queue.sqlite3")
    else:
        # A unix socket folder that does not exist: the connection fails
        # without reaching any server.
        unreachable["HOST"] = str(missing_dir)
    return unreachable


class WorkerThread:
    """A real Worker in a thread of its own, moved one step at a time by the test's thread.

    The test's thread sends a command and waits for the reply, so only one
    side runs at a time, except while two threads claim together. The
    attributes below the thread's own are the test's view of the worker.
    """

    def __init__(self, name: str, pks: dict[str, int], run_log: RunLog, missing_dir: Path, *, auto_succeed: bool = False) -> None:
        self.name = name
        self.worker = Worker(worker_id=name)
        self.alive = True
        self.running: Holding | None = None
        self.next_claim: Holding | None = None
        #: Whether the worker's last claim, made with an outcome, found no task due.
        self.found_none = False

        self._pks = pks
        self._run_log = run_log
        self._missing_dir = missing_dir
        self._auto_succeed = auto_succeed
        self._severed = False
        self._started: tuple[str, tuple | None] | None = None
        self._commands: queue.Queue[Command] = queue.Queue()
        self._replies: queue.Queue[Reply] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    # The test's side

    def holdings(self) -> list[Holding]:
        return [holding for holding in (self.running, self.next_claim) if holding is not None]

    def fresh_holdings(self) -> list[Holding]:
        return [holding for holding in self.holdings() if not holding.stale]

    def send(self, kind: str, barrier: threading.Barrier | None = None) -> None:
        self._commands.put(Command(kind, barrier))

    def receive(self) -> Reply:
        try:
            reply = self._replies.get(timeout=REPLY_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"worker {self.name} did not reply within {REPLY_TIMEOUT} s") from None
        if reply.kind == "error":
            self.alive = False
            raise AssertionError(f"worker {self.name} raised:\n{reply.detail}")
        return reply

    def request(self, kind: str) -> Reply:
        self.send(kind)
        return self.receive()

    def join(self) -> None:
        self._thread.join(timeout=REPLY_TIMEOUT)
        assert not self._thread.is_alive(), f"worker thread {self.name} did not end"
        self.alive = False

    # The worker thread's side

    def _serve(self) -> None:
        machine_tasks.set_run_handler(self._run_task)
        try:
            while self._handle(self._commands.get()):
                pass
        except BaseException:
            self._replies.put(Reply("error", detail=traceback.format_exc()))
        finally:
            machine_tasks.clear_run_handler()
            connection.close()

    def _handle(self, command: Command) -> bool:
        """Carry out one command of an idle worker; return whether the thread goes on."""
        if command.kind == "claim":
            return self._take_step(command.barrier)
        if command.kind == "crash":
            self._sever()
            self._replies.put(Reply("dead"))
            return False
        if command.kind == "stop":
            # What Worker.run() and run_until_idle() do on their way out.
            self.worker._release_next_claim()
            self._replies.put(Reply("stopped"))
            return False
        raise ValueError(f"worker {self.name} is idle and cannot {command.kind!r}")

    def _take_step(self, barrier: threading.Barrier | None) -> bool:
        self._started = None
        if barrier is not None:
            barrier.wait(timeout=REPLY_TIMEOUT)
        try:
            # NOTE: outside Worker.run() a database error is not waited out,
            # so it ends the step. The outcome write that run() retries after
            # a lost connection is not exercised here.
            outcome = self.worker.run_next()
        except (DatabaseError, InterfaceError):
            if not self._severed:
                raise
            # The crash cut the connection, so recording the run failed.
            self._replies.put(Reply("dead"))
            return False

        token, seen = self._started or (None, None)
        self._replies.put(Reply("settled", token=token, outcome=outcome, seen=seen))
        return True

    def _run_task(self, token: str) -> None:
        """Run one task: report its start, then end it as the next command requests."""
        seen = Task.objects.filter(pk=self._pks[token]).values_list("locked_by", "locked_at", "run_at").first()
        self._started = (token, seen)
        execution = self._run_log.start(token, self.name)
        if self._auto_succeed:
            self._run_log.end(execution, "returned")
            return

        self._replies.put(Reply("started", token=token, seen=seen))
        command = self._commands.get()
        if command.kind == "succeed":
            self._run_log.end(execution, "returned")
            return
        if command.kind == "fail":
            self._run_log.end(execution, "raised")
            raise TaskFailure(f"task {token} failed on purpose")
        if command.kind == "crash":
            self._run_log.end(execution, "crashed")
            self._sever()
            raise Crash()
        raise ValueError(f"worker {self.name} is running {token} and cannot {command.kind!r}")

    def _sever(self) -> None:
        """Close this thread's connection for good, as a killed process loses its own.

        The connection's settings then name a database that cannot be
        opened, so any write the worker still tries raises instead of
        reaching the queue.
        """
        connection.close()
        connection.settings_dict = unreachable_settings(connection.settings_dict, self._missing_dir)
        self._severed = True


# The state machine


class WorkersMachine(RuleBasedStateMachine):
    """Several workers, crashes and stalls, checked against the table after every step."""

    def __init__(self, totals: Totals, missing_dir: Path) -> None:
        super().__init__()
        Task.objects.all().delete()
        totals.examples += 1
        self.totals = totals
        self.example = totals.examples
        self.missing_dir = missing_dir
        self.run_log = RunLog()
        #: Token to primary key; the worker threads read it, only this thread writes it.
        self.pks: dict[str, int] = {}
        self.accounts: dict[int, Account] = {}
        self.workers: dict[str, WorkerThread] = {}
        self.max_attempts = 1
        self.settings: override_settings | None = None
        # Whether the last step passed every check. The drain at teardown
        # runs only then, so that a failed step is reported as it happened.
        self.checked = True

    @initialize(
        max_attempts=st.integers(min_value=1, max_value=3),
        workers=st.integers(min_value=2, max_value=MAX_LIVE_WORKERS),
        tasks=st.integers(min_value=0, max_value=5),
    )
    def configure(self, max_attempts: int, workers: int, tasks: int) -> None:
        """Set MAX_ATTEMPTS, start the first workers and enqueue the first due tasks."""
        self.checked = False
        self.max_attempts = max_attempts
        self.settings = override_settings(MAX_ATTEMPTS=max_attempts, MAX_RUN_TIME=MAX_RUN_TIME_SECONDS)
        self.settings.enable()
        for _ in range(workers):
            self._start_worker()
        for _ in range(tasks):
            self._enqueue(0)

    def teardown(self) -> None:
        try:
            if self.checked:
                self._drain()
        finally:
            self._end_threads()
            if self.settings is not None:
                self.settings.disable()

    # Choosing workers

    def _live(self) -> list[WorkerThread]:
        return [worker for worker in self.workers.values() if worker.alive]

    def _idle(self) -> list[WorkerThread]:
        return [worker for worker in self._live() if worker.running is None]

    def _running(self) -> list[WorkerThread]:
        return [worker for worker in self._live() if worker.running is not None]

    def _holding_fresh(self) -> list[WorkerThread]:
        return [worker for worker in self._live() if worker.fresh_holdings()]

    def _pick(self, index: int, candidates: list[WorkerThread]) -> WorkerThread | None:
        """Return the worker that ``index`` picks among ``candidates``, in name order, or None if there are none."""
        if not candidates:
            return None
        return sorted(candidates, key=lambda worker: worker.name)[index % len(candidates)]

    def _begin_step(self) -> None:
        self.checked = False
        self.totals.steps += 1

    # Steps. Workers are picked by index, and a step that does not apply does
    # nothing. So what Hypothesis draws never depends on how the workers'
    # races came out, which preconditions would, and Hypothesis would then
    # report the machine as flaky.

    @rule()
    def start_worker(self) -> None:
        self._begin_step()
        if len(self._live()) < MAX_LIVE_WORKERS:
            self._start_worker()

    @rule(delay=st.sampled_from(ENQUEUE_DELAYS))
    def enqueue(self, delay: int) -> None:
        self._begin_step()
        if len(self.accounts) < MAX_TASKS:
            self._enqueue(delay)

    @rule(index=WORKER_INDEX)
    def take_step(self, index: int) -> None:
        self._begin_step()
        worker = self._pick(index, self._idle())
        if worker is not None:
            self._claim_step(worker)

    @rule(index=WORKER_INDEX, other=WORKER_INDEX)
    def claim_together(self, index: int, other: int) -> None:
        self._begin_step()
        first = self._pick(index, self._idle())
        second = self._pick(other, [worker for worker in self._idle() if worker is not first])
        if first is not None and second is not None:
            self._claim_together(first, second)
            self.totals.claims_together += 1

    @rule(index=WORKER_INDEX, succeed=st.booleans())
    def finish(self, index: int, succeed: bool) -> None:
        self._begin_step()
        worker = self._pick(index, self._running())
        if worker is not None:
            self._finish(worker, succeed)

    @rule(index=WORKER_INDEX)
    def crash(self, index: int) -> None:
        self._begin_step()
        worker = self._pick(index, self._live())
        if worker is not None:
            self._crash(worker)
            self.totals.crashes += 1

    @rule(index=WORKER_INDEX)
    def stall(self, index: int) -> None:
        """Let worker i freeze past MAX_RUN_TIME, as a process stopped or starved for that long would."""
        self._begin_step()
        worker = self._pick(index, self._holding_fresh())
        if worker is None:
            return
        holdings = worker.fresh_holdings()
        # NOTE: moving locked_at back also makes the stalled worker's own later
        # writes miss their row, where after a real stall that no other worker
        # noticed they would still match it. Either way the row counts the
        # run at most once.
        Task.objects.filter(pk__in=[holding.pk for holding in holdings], locked_by=worker.name).update(
            locked_at=F("locked_at") - STALL
        )
        for holding in holdings:
            holding.stale = True
            self.accounts[holding.pk].stalled = True
        self.totals.stalls += 1

    @rule(index=WORKER_INDEX)
    def stop(self, index: int) -> None:
        self._begin_step()
        worker = self._pick(index, self._idle())
        if worker is not None:
            self._stop(worker)

    @rule(step=st.sampled_from(TIME_STEPS))
    def pass_time(self, step: timedelta) -> None:
        self._begin_step()
        self._pass_time(step)

    # Invariants, read from the table after every step

    @invariant()
    def queue_is_consistent(self) -> None:
        snapshot = Snapshot.take()
        self._check_holdings(snapshot)
        self._check_lock_owners(snapshot)
        self._check_attempts(snapshot)
        self._check_accounts(snapshot)
        self.checked = True

    def _check_holdings(self, snapshot: Snapshot) -> None:
        """Check that each task a live worker holds is locked by that worker alone, with the lock it took."""
        held_pks = []
        for worker in self._live():
            for holding in worker.fresh_holdings():
                row = snapshot.rows.get(holding.pk)
                assert row is not None, f"{worker.name} holds task {holding.pk}, whose row is gone"
                assert row.locked_by == worker.name, f"{worker.name} holds task {holding.pk}, locked by {row.locked_by}"
                assert row.locked_at == holding.locked_at, f"{worker.name} holds task {holding.pk} under another lock"
                held_pks.append(holding.pk)
        shared = [pk for pk, count in Counter(held_pks).items() if count > 1]
        assert not shared, f"tasks held by two workers: {shared}"

    def _check_lock_owners(self, snapshot: Snapshot) -> None:
        """Check that a row locked by a live worker is one that worker claimed, unless the lock expired."""
        for row in snapshot.rows.values():
            assert (row.locked_by is None) == (row.locked_at is None), row
            if row.locked_by is None:
                continue
            owner = self.workers.get(row.locked_by)
            assert owner is not None, f"task {row.pk} is locked by unknown worker {row.locked_by}"
            known = [holding.pk for holding in owner.holdings()]
            if owner.alive and row.pk not in known:
                assert row.lock_expired(snapshot.now), f"task {row.pk} is locked by {owner.name}, which does not know it"

    def _check_attempts(self, snapshot: Snapshot) -> None:
        for row in snapshot.rows.values():
            assert 0 <= row.attempts <= self.max_attempts, f"task {row.pk} has {row.attempts} attempts"
            assert (row.failed_at is not None) == (row.attempts == self.max_attempts), f"task {row.pk} failed_at"
            if row.failed_at is not None:
                assert row.last_error.strip(), f"task {row.pk} failed without a last_error"
                assert row.locked_by is None, f"failed task {row.pk} is locked by {row.locked_by}"

    def _check_accounts(self, snapshot: Snapshot) -> None:
        """Check each task's row against the outcomes workers reported and the runs this process counted."""
        assert set(snapshot.rows) <= set(self.accounts), "the table holds tasks the machine did not enqueue"
        for account in self.accounts.values():
            row = snapshot.rows.get(account.pk)
            assert account.successes <= 1, f"task {account.token} succeeded {account.successes} times"
            if row is None:
                assert account.successes == 1, f"task {account.token} is gone without a recorded success"
            else:
                assert account.successes == 0, f"task {account.token} succeeded, but its row is left"
                assert row.attempts == account.failures, (
                    f"task {account.token} has {row.attempts} attempts; workers recorded {account.failures} failed runs"
                )

            executions = self.run_log.of(account.token)
            returned = sum(execution.ending == "returned" for execution in executions)
            assert returned >= account.successes, f"task {account.token} succeeded without a run that returned"
            explained = _explained_runs(account, row)
            assert len(executions) <= explained, (
                f"task {account.token} ran {len(executions)} times; its row explains {explained}: {executions}"
            )

    # What each step does, and what it must leave behind

    def _start_worker(self, *, auto_succeed: bool = False) -> WorkerThread:
        name = f"m{self.example}-drain" if auto_succeed else f"m{self.example}-w{len(self.workers) + 1}"
        worker = WorkerThread(name, self.pks, self.run_log, self.missing_dir, auto_succeed=auto_succeed)
        self.workers[name] = worker
        return worker

    def _enqueue(self, delay: int) -> None:
        token = f"t{len(self.accounts) + 1}"
        task = machine_tasks.controlled(token, schedule=delay)
        self.pks[token] = task.pk
        self.accounts[task.pk] = Account(token, task.pk)

    def _pass_time(self, step: timedelta) -> None:
        fresh = [holding.pk for worker in self._live() for holding in worker.fresh_holdings()]
        Task.objects.update(run_at=F("run_at") - step)
        Task.objects.filter(locked_at__isnull=False).exclude(pk__in=fresh).update(locked_at=F("locked_at") - step)

    def _claim_step(self, worker: WorkerThread) -> bool:
        """Let ``worker`` take its next step; return whether it looked for a due task and found none."""
        before = Snapshot.take()
        next_claim, found_none = worker.next_claim, worker.found_none
        reply = worker.request("claim")
        after = Snapshot.take()
        rose = _attempts_rose(before, after)
        worker.next_claim, worker.found_none = None, False

        if next_claim is None and found_none:
            message = f"{worker.name} found nothing due with its last outcome, so its next step must not look again"
            assert reply.token is None, message
            assert reply.outcome is None, message
            assert not rose, f"{worker.name} changed {rose} without claiming a task"
            return False

        claimed = self._claimed_task(worker, reply, next_claim, rose)
        if next_claim is None:
            self._check_choice(claimed, before, after.now)
        if claimed is None:
            return True

        if reply.token is not None:
            self._check_start(worker, reply, next_claim, before, after)
            if reply.kind == "started":
                return False
            excluded = self._settle_run(worker, reply.outcome, succeeded=True, before=before, after=after)
        else:
            excluded = self._settle_lost_run(worker, reply.outcome, claimed, next_claim, before, after, rose)
        self._take_next_claim(worker, before, after, excluded)
        return False

    def _claimed_task(self, worker: WorkerThread, reply: Reply, next_claim: Holding | None, rose: list[int]) -> int | None:
        """Return the task that ``worker`` settled or started in its step, or None if it found none."""
        if reply.token is not None:
            return self.pks[reply.token]
        if reply.outcome is None:
            assert next_claim is None, f"{worker.name} held task {next_claim.pk} but did nothing with it"
            assert not rose, f"{worker.name} found no task but {rose} changed"
            return None
        if next_claim is not None:
            return next_claim.pk
        assert len(rose) == 1, f"{worker.name} recorded {reply.outcome} while {rose} changed"
        return rose[0]

    def _claim_together(self, first: WorkerThread, second: WorkerThread) -> None:
        """Let two idle workers take their next step at the same moment.

        A worker with a claim in hand settles that one, and the other looks
        for a due task at the same time. No two claims may take one task,
        and a look finds nothing only if every due task was claimed in the step.
        """
        workers = (first, second)
        plans = {worker.name: (worker.next_claim, worker.found_none) for worker in workers}
        if all(plan == (None, False) for plan in plans.values()):
            self.totals.races += 1
        before = Snapshot.take()
        barrier = threading.Barrier(len(workers))
        for worker in workers:
            worker.send("claim", barrier)
        replies = [(worker, worker.receive()) for worker in workers]
        after = Snapshot.take()
        rose = _attempts_rose(before, after)

        claimed_pks: list[int] = []
        lost_run_outcomes: list[Outcome] = []
        looked_in_vain = False
        for worker, reply in replies:
            next_claim, found_none = plans[worker.name]
            worker.next_claim, worker.found_none = None, False
            if next_claim is None and found_none:
                assert reply.token is None, f"{worker.name} looked again after finding nothing"
                assert reply.outcome is None, f"{worker.name} looked again after finding nothing"
            elif reply.token is not None:
                self._check_start(worker, reply, next_claim, before, after)
                if next_claim is None:
                    claimed_pks.append(self.pks[reply.token])
            elif reply.outcome is None:
                assert next_claim is None, f"{worker.name} held task {next_claim.pk} but did nothing with it"
                looked_in_vain = True
            elif next_claim is not None and next_claim.stale:
                assert reply.outcome is Outcome.LOCK_LOST, f"{worker.name} recorded a lost run under an expired lock"
                self.accounts[next_claim.pk].lock_lost_outcomes += 1
            else:
                assert reply.outcome in (Outcome.RETRY, Outcome.FAILED), f"{worker.name} settled a claim as {reply.outcome}"
                assert next_claim is None or next_claim.took_expired_lock, f"{worker.name} did not run task {next_claim.pk}"
                lost_run_outcomes.append(reply.outcome)

        assert len(rose) == len(lost_run_outcomes), f"lost runs of {rose} for outcomes {lost_run_outcomes}"
        recorded = [self._check_lost_run(pk, before, after) for pk in rose]
        assert Counter(recorded) == Counter(lost_run_outcomes), f"outcomes {lost_run_outcomes} for rows that read {recorded}"
        held_before = {plan.pk for plan, _ in plans.values() if plan is not None and not plan.stale}
        claimed_pks += [pk for pk in rose if pk not in held_before]
        for pk in claimed_pks:
            self._check_claimable(pk, before, after.now)

        for worker, reply in replies:
            if reply.token is None and reply.outcome is not None:
                self._take_next_claim(worker, before, after, set(claimed_pks) | set(rose), check_order=False)
                if worker.next_claim is not None:
                    claimed_pks.append(worker.next_claim.pk)
        assert len(set(claimed_pks)) == len(claimed_pks), f"two claims took one task: {claimed_pks}"
        if looked_in_vain:
            missed = [row.pk for row in before.due() if row.pk not in claimed_pks]
            assert not missed, f"a look found nothing while {missed} were due and not claimed"

    def _finish(self, worker: WorkerThread, succeed: bool) -> None:
        running = worker.running
        before = Snapshot.take()
        reply = worker.request("succeed" if succeed else "fail")
        after = Snapshot.take()

        assert reply.kind == "settled", reply
        assert reply.token == self.accounts[running.pk].token, reply
        failed_fresh = not succeed and not running.stale
        rose = _attempts_rose(before, after)
        assert rose == ([running.pk] if failed_fresh else []), f"ending the run of task {running.pk} raised the attempts of {rose}"
        excluded = self._settle_run(worker, reply.outcome, succeeded=succeed, before=before, after=after)
        self._take_next_claim(worker, before, after, excluded)

    def _crash(self, worker: WorkerThread) -> None:
        before = Snapshot.take()
        reply = worker.request("crash")
        worker.join()
        after = Snapshot.take()

        assert reply.kind == "dead", reply
        assert after.rows == before.rows, f"crashed worker {worker.name} changed the queue"

    def _stop(self, worker: WorkerThread) -> None:
        before = Snapshot.take()
        reply = worker.request("stop")
        worker.join()
        after = Snapshot.take()
        assert reply.kind == "stopped", reply

        released = worker.next_claim
        if released is None or released.stale:
            assert after.rows == before.rows, f"stopping {worker.name} changed the queue"
            return
        # A claim that took an expired lock gives it back, so that the next
        # claim still records the lost run of the worker that held it.
        previous_by, previous_at = released.previous_lock
        expected = replace(before.rows[released.pk], locked_by=previous_by, locked_at=previous_at)
        assert after.rows[released.pk] == expected, (
            f"{worker.name} released task {released.pk} as {after.rows[released.pk]}; "
            f"before its claim the row was {expected}"
        )

    # Checks of one step

    def _check_claimable(self, pk: int, before: Snapshot, now: datetime) -> None:
        """Check that task ``pk`` was due when claimed by ``now``, and that no live worker held its lock."""
        row = before.rows[pk]
        assert row.is_due(now), f"task {pk} was claimed while not due: {row}"
        if row.locked_by is not None:
            owner = self.workers[row.locked_by]
            if owner.alive:
                fresh = [holding.pk for holding in owner.fresh_holdings()]
                assert pk not in fresh, f"task {pk} was taken from live worker {owner.name}"

    def _check_choice(self, claimed: int | None, before: Snapshot, now: datetime, excluded: Collection[int] = ()) -> None:
        """Check that a claim made between ``before.now`` and ``now`` took the earliest due task, or found none due."""
        due = before.due(excluded)
        if claimed is None:
            assert not due, f"a claim found nothing while {[row.pk for row in due]} were due"
            return

        self._check_claimable(claimed, before, now)
        row = before.rows[claimed]
        if due and claimed != due[0].pk:
            # Only a row that became due during the step may come first.
            message = f"task {claimed} was claimed before the earlier due task {due[0].pk}"
            assert not row.is_due(before.now), message
            assert row.order() < due[0].order(), message

    def _check_start(self, worker: WorkerThread, reply: Reply, next_claim: Holding | None, before: Snapshot, after: Snapshot) -> None:
        """Note that ``worker`` started a task, and check that it held the task's lock when it did."""
        pk = self.pks[reply.token]
        locked_by, locked_at, run_at = reply.seen
        if next_claim is None:
            assert before.rows[pk].locked_by is None, f"{worker.name} ran task {pk}, whose run was lost"
            stale = False
        else:
            assert pk == next_claim.pk, f"{worker.name} ran task {pk}, but had claimed {next_claim.pk}"
            assert not next_claim.took_expired_lock, f"{worker.name} ran task {pk}, whose run was lost"
            stale = next_claim.stale
            locked_at = next_claim.locked_at if stale else locked_at

        if not stale:
            assert locked_by == worker.name, f"{worker.name} started task {pk}, locked by {locked_by}"
            assert next_claim is None or locked_at == next_claim.locked_at, f"{worker.name} started task {pk} under another lock"
            assert run_at <= after.now, f"task {pk} started before its run_at"
        worker.running = Holding(pk, locked_at, stale=stale)

    def _settle_run(self, worker: WorkerThread, outcome: Outcome, *, succeeded: bool, before: Snapshot, after: Snapshot) -> set[int]:
        """Check the outcome that ``worker`` recorded for its run; return the task if it is no longer due."""
        running, worker.running = worker.running, None
        account = self.accounts[running.pk]
        row_before, row_after = before.rows.get(running.pk), after.rows.get(running.pk)

        if running.stale:
            assert outcome is Outcome.LOCK_LOST, f"{worker.name} recorded a run after its lock expired: {outcome}"
            assert _same_state(row_before, row_after), f"a write under an expired lock changed task {running.pk}"
            account.lock_lost_outcomes += 1
            return set()

        assert outcome is not Outcome.LOCK_LOST, f"{worker.name} lost the lock of task {running.pk} it held"
        if succeeded:
            assert outcome is Outcome.SUCCEEDED, outcome
            assert row_after is None, f"task {running.pk} succeeded, but its row is left"
            account.successes += 1
            return {running.pk}

        attempts = row_before.attempts + 1
        assert outcome is (Outcome.FAILED if attempts >= self.max_attempts else Outcome.RETRY), outcome
        assert row_after.attempts == attempts, f"task {running.pk} attempts"
        assert (row_after.failed_at is not None) == (outcome is Outcome.FAILED), f"task {running.pk} failed_at"
        assert "TaskFailure" in row_after.last_error, row_after.last_error
        assert row_after.locked_by is None, f"task {running.pk} is left locked by {row_after.locked_by}"
        account.failures += 1
        return {running.pk}

    def _settle_lost_run(
        self,
        worker: WorkerThread,
        outcome: Outcome,
        claimed: int,
        next_claim: Holding | None,
        before: Snapshot,
        after: Snapshot,
        rose: list[int],
    ) -> set[int]:
        """Check a step in which ``worker`` claimed a task whose lock had expired and recorded the run as lost."""
        if next_claim is None:
            assert before.rows[claimed].locked_by is not None, f"{worker.name} recorded a lost run of unlocked task {claimed}"
        else:
            assert next_claim.took_expired_lock, f"{worker.name} did not run task {claimed}, which it had claimed"
            if next_claim.stale:
                assert outcome is Outcome.LOCK_LOST, f"{worker.name} recorded a lost run under an expired lock: {outcome}"
                assert rose == [], f"a write under an expired lock changed {rose}"
                self.accounts[claimed].lock_lost_outcomes += 1
                return set()

        assert rose == [claimed], f"{worker.name} recorded a lost run of {claimed}, but {rose} changed"
        assert outcome is self._check_lost_run(claimed, before, after), outcome
        return {claimed}

    def _check_lost_run(self, pk: int, before: Snapshot, after: Snapshot) -> Outcome:
        """Check the row of a lost run and count it; return the outcome the row shows."""
        row_before, row_after = before.rows[pk], after.rows[pk]
        assert row_after.attempts == row_before.attempts + 1, f"task {pk} attempts"
        assert row_after.last_error.startswith("Run lost"), row_after.last_error
        assert row_after.locked_by is None, f"task {pk} is left locked by {row_after.locked_by}"
        self.accounts[pk].failures += 1
        self.totals.lost_runs += 1
        return Outcome.RETRY if row_after.failed_at is None else Outcome.FAILED

    def _take_next_claim(
        self, worker: WorkerThread, before: Snapshot, after: Snapshot, excluded: Collection[int], *, check_order: bool = True
    ) -> None:
        """Note the task that ``worker`` claimed along with its outcome, and check that choice."""
        claim = worker.worker._next_claim  # the worker's own belief, read while its thread waits
        claimed = claim.task.pk if claim else None
        if check_order:
            self._check_choice(claimed, before, after.now, excluded)
        elif claimed is not None:
            assert claimed not in excluded, f"{worker.name} claimed task {claimed} again"
            self._check_claimable(claimed, before, after.now)

        worker.found_none = claim is None
        if claim is not None:
            row = before.rows[claimed]
            worker.next_claim = Holding(claimed, claim.locked_at, previous_lock=(row.locked_by, row.locked_at))

    # The end of an example

    def _drain(self) -> None:
        """Finish the running tasks, stop the workers, and drain the queue with a fresh worker."""
        for worker in self._running():
            self._finish(worker, succeed=True)
            self.queue_is_consistent()
        for worker in self._live():
            self._stop(worker)
            self.queue_is_consistent()

        drainer = self._start_worker(auto_succeed=True)
        for _ in range(DRAIN_ROUNDS):
            self._pass_time(STALL)
            self._run_until_idle(drainer)
            if all(row.failed_at is not None for row in Snapshot.take().rows.values()):
                break
        self._stop(drainer)
        self._count_example(Snapshot.take())

    def _run_until_idle(self, worker: WorkerThread) -> None:
        limit = 4 * MAX_TASKS + 4
        for _ in range(limit):
            looked_in_vain = self._claim_step(worker)
            self.queue_is_consistent()
            if looked_in_vain:
                return
        raise AssertionError(f"{worker.name} still found due tasks after {limit} steps")

    def _count_example(self, snapshot: Snapshot) -> None:
        """Add the example's figures to the totals, then check that no task was lost, run unaccounted or left locked."""
        succeeded = failed = lost = run_twice = unexplained = reruns = 0
        for account in self.accounts.values():
            row = snapshot.rows.get(account.pk)
            succeeded_once = row is None and account.successes == 1
            failed_with_reason = row is not None and row.failed_at is not None and bool(row.last_error.strip())
            succeeded += succeeded_once
            failed += failed_with_reason
            lost += not (succeeded_once or failed_with_reason)

            executions = self.run_log.of(account.token)
            returned = sum(execution.ending == "returned" for execution in executions)
            reruns += max(len(executions) - 1, 0)
            run_twice += returned > 1
            assert returned <= 1 or account.stalled, f"task {account.token} returned {returned} times without a stall"
            unexplained += account.successes > 1 or len(executions) > _explained_runs(account, row)
        left_locked = sum(row.locked_by is not None for row in snapshot.rows.values())

        self.totals.tasks += len(self.accounts)
        self.totals.succeeded += succeeded
        self.totals.failed += failed
        self.totals.lost += lost
        self.totals.run_twice += run_twice
        self.totals.unexplained_runs += unexplained
        self.totals.left_locked += left_locked
        self.totals.reruns += reruns
        self.totals.lock_lost_outcomes += sum(account.lock_lost_outcomes for account in self.accounts.values())
        assert lost == 0, f"{lost} tasks neither succeeded once nor failed with a reason"
        assert unexplained == 0, f"{unexplained} tasks ran more often than their rows record"
        assert left_locked == 0, f"{left_locked} tasks were left locked after the drain"

    def _end_threads(self) -> None:
        """End every worker thread that is still alive, without a write, as a crash would."""
        live = self._live()
        for worker in live:
            worker.send("crash")
        problems = []
        for worker in live:
            try:
                worker.receive()
                worker.join()
            except AssertionError as error:
                problems.append(str(error))
        assert not problems, problems


def _attempts_rose(before: Snapshot, after: Snapshot) -> list[int]:
    """Return the tasks whose attempts rose between two snapshots."""
    return sorted(pk for pk, row in after.rows.items() if pk in before.rows and row.attempts > before.rows[pk].attempts)


def _same_state(before: Row | None, after: Row | None) -> bool:
    """Whether a row kept its schedule, attempts and error; its lock may have changed."""
    if before is None or after is None:
        return before is after
    fields = ("run_at", "attempts", "failed_at", "last_error")
    return all(getattr(before, name) == getattr(after, name) for name in fields)


def _explained_runs(account: Account, row: Row | None) -> int:
    """Return how many runs of a task its row and the recorded outcomes account for.

    Each recorded success, failed run and lost run stands for one run. A row
    that is still locked adds one more: the run in progress, or the run of a
    crashed or stalled worker that no claim has recorded as lost yet.
    """
    locked = row is not None and row.locked_by is not None
    return account.successes + account.failures + int(locked)


def test_workers_share_queue_safely(reliability, tmp_path):
    """Workers that claim together, crash and stall never hold one task twice, lose a task or run it unaccounted."""
    totals = Totals()
    missing_dir = tmp_path / "no-database-here"
    try:
        run_state_machine_as_test(lambda: WorkersMachine(totals, missing_dir), settings=MACHINE_SETTINGS)
    finally:
        reliability.record(
            "Worker threads claim together, crash and stall (state machine)",
            repetitions=totals.steps,
            tasks=totals.tasks,
            lost=totals.lost,
            run_twice=totals.run_twice,
            left_locked=totals.left_locked,
            examples=totals.examples,
            succeeded=totals.succeeded,
            failed=totals.failed,
            unexplained_runs=totals.unexplained_runs,
            crashes=totals.crashes,
            stalls=totals.stalls,
            claims_together=totals.claims_together,
            races=totals.races,
            reruns=totals.reruns,
            lost_runs=totals.lost_runs,
            lock_lost_outcomes=totals.lock_lost_outcomes,
        )
