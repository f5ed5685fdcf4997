"""Running tasks.

A stored task is due once the clock reaches its ``run_at``, and it stays
queued until then. A worker runs due tasks one at a time, earliest ``run_at``
first, and breaks ties by id, which is the order in which the tasks were
stored. A task that returns normally has nothing left to do, so its row is
deleted. Rows marked failed (``failed_at`` is set) are kept for inspection
but never run again.

There are two ways to run the queue. ``run_due()`` runs what is due and
returns the number of tasks it claimed, counting the ones that failed. It
keeps claiming until nothing is due, so a task that another task queues
for now also runs in the same call. A failed task is rescheduled into the
future, so one call never runs it twice. This makes ``run_due()`` the tool
for cron jobs, scripts and tests. The caveat is that a task which keeps
queueing itself for now would keep the call from returning.

The ``process_tasks`` management command is the long-running worker. It
runs due tasks back to back and sleeps for ``--sleep`` seconds (default 5)
only when nothing is due, so a backlog drains at full speed. A task that
becomes due while the worker sleeps runs after the next wait.
``--duration`` bounds how long the worker takes new tasks. The limit is
checked between tasks, so a task in progress always finishes, and an idle
wait is cut short at the limit. A duration of 0 (the default) or less runs
until the worker is stopped, for example with Ctrl-C or SIGTERM.

The options are checked before anything runs. A value that is not a
finite number, a negative sleep or an unknown log level is rejected with an
error that names the option and the value. On the command line that is a
usage error with exit status 2, and under ``call_command`` a ``CommandError``.

A task that raises SystemExit, KeyboardInterrupt or another exception
outside ``Exception`` fails only its own run, like any other error, and the
worker goes on. What stops a worker is a signal sent to its process.
"""

import os
import signal
import time
from datetime import datetime, timezone as dt_timezone

import pytest
from django.core.management import CommandError
from django.test import override_settings
from django.utils import timezone
from freezegun import freeze_time

from spec import adapter
from spec import tasks as spec_tasks

CHAPTER = 4


@adapter.background(name="spec.running.queue_record")
def queue_record(label: str) -> None:
    """Queue ``spec.tasks.record(label)`` to run now, from inside a running task."""
    spec_tasks.record(label)


@adapter.background(name="spec.running.stop_worker")
def stop_worker() -> None:
    """Send SIGTERM to the worker's own process, as a service manager stopping it would."""
    spec_tasks.calls.append(spec_tasks.Call("stop_worker", (), {}, timezone.now()))
    os.kill(os.getpid(), signal.SIGTERM)


class TaskAbort(BaseException):
    """A BaseException subclass that is neither SystemExit nor KeyboardInterrupt."""


ESCAPES = {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt, "TaskAbort": TaskAbort}


@adapter.background(name="spec.running.escape")
def escape(kind: str) -> None:
    """Raise the BaseException named ``kind``, as sys.exit() or an uncaught Ctrl-C in the task's code would."""
    raise ESCAPES[kind]("from the task")


def recorded_args(name: str = "record") -> list[tuple]:
    """Return the arguments of each recorded run of the task ``name``, in run order."""
    return [call.args for call in spec_tasks.calls if call.name == name]


@pytest.mark.rule(1)
def test_due_task_runs_once():
    """A due task runs once and, having returned normally, is removed from the queue."""
    task = spec_tasks.record("hello", greeting="hi")

    adapter.run_due()

    assert recorded_args() == [("hello",)]
    assert spec_tasks.calls[0].kwargs == {"greeting": "hi"}
    assert adapter.stored(task) is None


@pytest.mark.rule(2)
def test_future_task_waits_for_run_at():
    """A task whose run_at lies in the future does not run until the clock reaches run_at, and then it runs.

    ``record_later`` is scheduled 60 seconds ahead, so a task stored at 12:00:00
    is not due at 12:00:59.999999 and is due from 12:01:00 exactly.
    """
    with freeze_time("2026-01-01 12:00:00") as clock:
        task = spec_tasks.record_later("later")

        clock.move_to("2026-01-01 12:00:59.999999")
        claimed_early = adapter.run_due()

        assert claimed_early == 0
        assert spec_tasks.calls == []
        assert adapter.stored(task) is not None

        clock.move_to("2026-01-01 12:01:00")
        claimed_on_time = adapter.run_due()

    assert claimed_on_time == 1
    assert recorded_args("record_later") == [("later",)]
    assert adapter.stored(task) is None


@pytest.mark.rule(3)
def test_due_tasks_run_in_order():
    """Due tasks run one at a time, earliest run_at first, and tasks with equal run_at in the order they were stored.

    Stored at 12:00:00 with schedules 30, 10, 30, 0, 12:00:20 and -5 seconds,
    the tasks are due at 12:00:30, 12:00:10, 12:00:30, 12:00:00, 12:00:20 and
    12:00:00 (zero or less means now), so they run in the order written below.
    """
    twenty_past = datetime(2026, 1, 1, 12, 0, 20, tzinfo=dt_timezone.utc)

    with freeze_time("2026-01-01 12:00:00") as clock:
        spec_tasks.record("30 s, stored first", schedule=30)
        spec_tasks.record("10 s", schedule=10)
        spec_tasks.record("30 s, stored second", schedule=30)
        spec_tasks.record("now, stored first", schedule=0)
        spec_tasks.record("12:00:20", schedule=twenty_past)
        spec_tasks.record("now, stored second", schedule=-5)

        clock.move_to("2026-01-01 12:01:00")
        adapter.run_due()

    assert recorded_args() == [
        ("now, stored first",),
        ("now, stored second",),
        ("10 s",),
        ("12:00:20",),
        ("30 s, stored first",),
        ("30 s, stored second",),
    ]


@pytest.mark.rule(4)
def test_run_due_counts_claimed_tasks():
    """run_due() runs every due task and returns how many it claimed, counting failed runs, while tasks not yet due stay queued."""
    with freeze_time("2026-01-01 12:00:00"):
        spec_tasks.record("one")
        spec_tasks.record("two")
        spec_tasks.fail("three")
        later = [spec_tasks.record("later", schedule=1), spec_tasks.record_later("later")]

        claimed = adapter.run_due()

    assert claimed == 3
    assert recorded_args() == [("one",), ("two",)]
    assert recorded_args("fail") == [("three",)]
    assert [adapter.stored(task) is not None for task in later] == [True, True]


@pytest.mark.rule(5)
def test_run_due_tries_failure_once():
    """run_due() runs a task at most once per call, even when it fails, because a failed task is retried in the future.

    The first retry comes 1 ** 4 + 5 = 6 seconds after the failure.
    """
    with freeze_time("2026-01-01 12:00:00") as clock:
        task = spec_tasks.fail("boom")

        claimed = adapter.run_due()

        assert claimed == 1
        assert recorded_args("fail") == [("boom",)]

        clock.move_to("2026-01-01 12:00:06")
        claimed_at_retry = adapter.run_due()

    assert claimed_at_retry == 1
    assert recorded_args("fail") == [("boom",), ("boom",)]
    assert adapter.stored(task).attempts == 2


@pytest.mark.rule(6)
def test_run_due_queues_tasks_for_now():
    """A task queued for now by a task that run_due() is running also runs in that call, because run_due() claims tasks until none is due."""
    with freeze_time("2026-01-01 12:00:00"):
        queue_record("queued from a task")

        claimed = adapter.run_due()

    assert claimed == 2
    assert recorded_args() == [("queued from a task",)]
    assert adapter.queued_tasks() == []


@pytest.mark.rule(7)
def test_failed_task_never_runs():
    """A task whose failed_at is set never runs, however long ago its run_at passed, and its row stays."""
    with freeze_time("2026-01-01 12:00:00") as clock:
        task = spec_tasks.record("marked failed")
        adapter.Task.objects.filter(pk=task.pk).update(failed_at=timezone.now())

        clock.move_to("2026-02-01 12:00:00")
        claimed = adapter.run_due()

    assert claimed == 0
    assert spec_tasks.calls == []
    assert adapter.stored(task) is not None


@pytest.mark.rule(8)
def test_process_tasks_stops_after_duration():
    """process_tasks returns once --duration seconds have passed, cutting an idle wait short at that limit.

    With --duration 0.5 and --sleep 30, an idle worker returns after about
    half a second instead of sleeping for 30.
    """
    started = time.monotonic()

    adapter.process_tasks("--duration", "0.5", "--sleep", "30")

    elapsed = time.monotonic() - started
    assert elapsed >= 0.5
    assert elapsed < 5


@pytest.mark.rule(9)
def test_process_tasks_finishes_running_task():
    """A task in progress when --duration ends runs to completion, is removed, and the command then returns normally."""
    task = spec_tasks.sleep_for(1.5)
    started = time.monotonic()

    adapter.process_tasks("--duration", "0.5", "--sleep", "0.1")

    assert time.monotonic() - started >= 1.5
    assert recorded_args("sleep_for") == [(1.5,)]
    assert adapter.stored(task) is None


@pytest.mark.rule(10)
def test_process_tasks_sleeps_only_when_idle():
    """The worker sleeps only when no task is due, so it runs a backlog back to back.

    With --sleep 30 and --duration 1, a single wait between tasks would use up
    the whole duration, so twenty due tasks can only all run if none happens.
    """
    for number in range(20):
        spec_tasks.record(number)

    adapter.process_tasks("--duration", "1", "--sleep", "30")

    assert recorded_args() == [(number,) for number in range(20)]
    assert adapter.queued_tasks() == []


@pytest.mark.rule(11)
def test_process_tasks_runs_newly_due_task():
    """A task that becomes due while the worker is idle runs after the worker's next wait, not before its run_at."""
    task = spec_tasks.record("half a second ahead", schedule=0.5)

    adapter.process_tasks("--duration", "2", "--sleep", "0.1")

    assert recorded_args() == [("half a second ahead",)]
    assert spec_tasks.calls[0].at >= task.run_at
    assert adapter.stored(task) is None


@pytest.mark.rule(12)
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--duration", "abc"),
        ("--duration", "nan"),
        ("--sleep", "-1"),
        ("--sleep", "abc"),
        ("--sleep", "inf"),
        ("--log-level", "LOUD"),
    ],
)
def test_bad_option_rejected(option, value):
    """An option value that is not a finite number, a negative --sleep or an unknown --log-level is rejected with a CommandError naming the option and the value, and no task runs."""
    task = spec_tasks.record("must not run")

    with pytest.raises(CommandError) as raised:
        adapter.process_tasks("--duration", "0.1", option, value)

    assert option in str(raised.value)
    assert value in str(raised.value)
    assert spec_tasks.calls == []
    assert adapter.stored(task) is not None


@pytest.mark.rule(13)
@pytest.mark.parametrize("duration", ["0", "-1"])
def test_zero_duration_runs_until_stopped(duration):
    """A --duration of 0 or less runs the worker until it is stopped, as by SIGTERM.

    The worker is still running to take a task that becomes due half a
    second after it started. That task sends SIGTERM to the worker's
    process, and the worker returns once the task has ended.
    """
    spec_tasks.record("due at once")
    stop_worker(schedule=0.5)

    adapter.process_tasks("--duration", duration, "--sleep", "0.1")

    assert recorded_args() == [("due at once",)]
    assert recorded_args("stop_worker") == [()]
    assert adapter.queued_tasks() == []


@pytest.mark.rule(14)
@pytest.mark.parametrize("kind", sorted(ESCAPES))
def test_base_exception_ends_only_its_run(kind):
    """A task that raises SystemExit, KeyboardInterrupt or another BaseException ends only its own run.

    Under ``process_tasks`` the worker records the run as a failed attempt
    whose last_error names the exception, and goes on with the next due
    task. Stopping the worker is left to signals: a KeyboardInterrupt that
    the task's own code raises is not a Ctrl-C.
    """
    with override_settings(MAX_ATTEMPTS=3):
        task = escape(kind)
        spec_tasks.record("after", schedule=0.2)

        adapter.process_tasks("--duration", "1", "--sleep", "0.1")

    row = adapter.stored(task)
    assert row.attempts == 1
    assert row.failed_at is None
    assert row.locked_by is None
    assert kind in row.last_error
    assert recorded_args() == [("after",)]
