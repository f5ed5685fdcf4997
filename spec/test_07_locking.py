"""Locking.

Several workers may serve one queue, so a worker first claims a task before
it runs it. The claim writes the worker's id into ``locked_by`` and the time
of the claim into ``locked_at``. Every worker gets an id of its own when it
starts, so two workers, or two runs of ``run_due()`` in one process, never
share a lock. While the lock holds, no other worker claims the task.

A lock does not last forever, because a worker can die mid-run: a killed
process, a lost machine, a deploy that stopped it. A lock taken at T holds
through T + ``MAX_RUN_TIME`` and has expired one microsecond later. A worker
that finds a due task with an expired lock takes it to be the leftover of a
dead worker. It does not run the task on that claim. It records the lost run
as a failed attempt, with a ``last_error`` that names the dead worker, and
reschedules the task with the usual backoff. So a task that kills its worker
every time, for example by running out of memory, still ends failed after
``MAX_ATTEMPTS`` tries and does not take down one worker after another
forever.

``MAX_RUN_TIME`` is also the limit on a single run. A worker interrupts a
task that is still running when its own lock would expire and counts that
run as a failed attempt, so a live worker's lock does not expire under it.
The interruption is not an ordinary ``Exception``: a task that catches every
``Exception`` is stopped all the same. Interrupting needs a timer signal, so
a worker outside its process's main thread, or on a platform without
SIGALRM, cannot stop a task. Such a run keeps going after its lock expires,
the next claim counts it as lost, and its own outcome is then dropped.

A worker writes the outcome of a run only while it still holds the task's
lock. If another worker has claimed the row in the meantime, the first
worker's result is stale: it leaves the row as it is and logs a warning.
When a run fails, the worker clears the lock fields as it records the
failure, so the retry is free for any worker to claim.
"""

import logging
import time
from datetime import datetime, timedelta, timezone

import pytest
from django.test import override_settings
from freezegun import freeze_time
from hypothesis import example, given
from hypothesis import strategies as st

from spec import adapter
from spec import tasks as spec_tasks
from spec.conftest import fresh_queue

CHAPTER = 7

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

#: The id a worker that died mid-run left in a task's lock.
DEAD_WORKER = "dead-host:4242:0123456789ab"

#: The id a second, live worker writes into a task's lock.
OTHER_WORKER = "other-host:5151:ba9876543210"

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)
).map(lambda moment: moment.replace(tzinfo=timezone.utc))

#: MAX_RUN_TIME values whose length is a whole number of microseconds, up to ten days.
run_time_microseconds = st.integers(min_value=1, max_value=10 * 24 * 3600 * 10**6)

#: Offsets from the lock's expiry in microseconds: the boundary itself and around it.
offset_microseconds = st.one_of(
    st.sampled_from([-1, 0, 1]),
    st.integers(min_value=-(10**7), max_value=10**7),
)


def set_attempts(task, attempts: int) -> None:
    """Store ``attempts`` failed attempts on ``task``, so its next run is attempt ``attempts + 1``."""
    adapter.Task.objects.filter(pk=task.pk).update(attempts=attempts)


def as_setting(microseconds: int) -> int | float:
    """Return ``microseconds`` as MAX_RUN_TIME seconds: an int when whole, else a float."""
    if microseconds % 10**6 == 0:
        return microseconds // 10**6
    return microseconds / 10**6


@pytest.mark.rule(1)
def test_running_task_carries_lock():
    """While a task runs, its row carries the worker's id in locked_by and the claim time in locked_at."""
    with freeze_time(T0):
        spec_tasks.record_own_lock()
        adapter.run_due()

    seen = spec_tasks.calls[0].kwargs
    assert isinstance(seen["locked_by"], str)
    assert seen["locked_by"] != ""
    assert seen["locked_at"] == T0


@pytest.mark.rule(2)
def test_each_worker_own_id():
    """Each worker locks with its own id: two consecutive run_due() calls lock with different ids."""
    with freeze_time(T0):
        spec_tasks.record_own_lock()
        adapter.run_due()
        spec_tasks.record_own_lock()
        adapter.run_due()

    first, second = (call.kwargs["locked_by"] for call in spec_tasks.calls)
    assert first != second


@pytest.mark.rule(3)
def test_live_lock_not_claimed():
    """A task locked by another worker whose lock has not expired is not claimed, and other due tasks still run."""
    with freeze_time(T0):
        locked = spec_tasks.record("locked")
        adapter.lock_as_dead_worker(locked, OTHER_WORKER, T0)
        spec_tasks.record("free")
        claimed = adapter.run_due()

    row = adapter.stored(locked)
    assert claimed == 1
    assert [call.args[0] for call in spec_tasks.calls] == ["free"]
    assert row.locked_by == OTHER_WORKER
    assert row.attempts == 0


@pytest.mark.rule(4)
@given(
    run_time=run_time_microseconds,
    offset=offset_microseconds,
    locked_at=instants,
)
@example(run_time=3600 * 10**6, offset=0, locked_at=T0)
@example(run_time=3600 * 10**6, offset=1, locked_at=T0)
@example(run_time=500_000, offset=0, locked_at=T0)
@example(run_time=500_000, offset=1, locked_at=T0)
def test_lock_expiry_boundary(run_time, offset, locked_at):
    """A lock taken at T holds through T + MAX_RUN_TIME and has expired one microsecond later.

    With MAX_RUN_TIME = 3600, a lock taken at 12:00:00 still holds at
    13:00:00 and has expired at 13:00:00.000001.
    """
    fresh_queue()
    expires_at = locked_at + timedelta(microseconds=run_time)
    now = expires_at + timedelta(microseconds=offset)

    with override_settings(MAX_RUN_TIME=as_setting(run_time)):
        with freeze_time(locked_at - timedelta(days=1)):
            task = spec_tasks.record("locked")
        adapter.lock_as_dead_worker(task, DEAD_WORKER, locked_at)
        with freeze_time(now):
            claimed = adapter.run_due()

    row = adapter.stored(task)
    if offset <= 0:
        assert claimed == 0
        assert row.locked_by == DEAD_WORKER
        assert row.attempts == 0
    else:
        assert claimed == 1
        assert row.locked_by != DEAD_WORKER
        assert row.attempts == 1


@pytest.mark.rule(5)
def test_expired_lock_counts_attempt():
    """A task found with an expired lock counts the lost run as a failed attempt and does not run on that claim.

    attempts goes up by one, last_error states that the run was lost and names the
    dead worker, and the task is due again after the backoff counted from
    the claim: the fourth failure waits 4 ** 4 + 5 = 261 seconds.
    """
    now = T0 + timedelta(hours=2)
    with freeze_time(T0):
        task = spec_tasks.record("orphaned")
    set_attempts(task, 3)
    adapter.lock_as_dead_worker(task, DEAD_WORKER, T0)

    with freeze_time(now):
        claimed = adapter.run_due()

    row = adapter.stored(task)
    assert claimed == 1
    assert row.attempts == 4
    assert "lost" in row.last_error.lower()
    assert DEAD_WORKER in row.last_error
    assert row.run_at == now + timedelta(seconds=261)
    assert row.failed_at is None
    assert spec_tasks.calls == []


@pytest.mark.rule(6)
def test_dead_worker_one_attempt_fails():
    """With MAX_ATTEMPTS = 1, a task whose worker died is marked failed and never runs."""
    now = T0 + timedelta(hours=2)
    with freeze_time(T0):
        task = spec_tasks.record("orphaned")
    adapter.lock_as_dead_worker(task, DEAD_WORKER, T0)

    with override_settings(MAX_ATTEMPTS=1):
        with freeze_time(now):
            adapter.run_due()
        with freeze_time(now + timedelta(days=365)):
            later_claims = adapter.run_due()

    row = adapter.stored(task)
    assert row.failed_at == now
    assert row.attempts == 1
    assert DEAD_WORKER in row.last_error
    assert later_claims == 0
    assert spec_tasks.calls == []


@pytest.mark.rule(7)
@pytest.mark.parametrize(
    "task_function",
    [spec_tasks.sleep_for, spec_tasks.sleep_ignoring_exceptions],
    ids=["plain", "catches-exceptions"],
)
def test_overrun_is_interrupted(task_function):
    """A worker interrupts a task still running at MAX_RUN_TIME and counts it as a failed attempt.

    last_error states that the run exceeded MAX_RUN_TIME. A task that catches every
    Exception is interrupted all the same. This rule runs on the real clock:
    with MAX_RUN_TIME = 0.3 a task that would sleep for 5 seconds is
    stopped well before then.
    """
    with override_settings(MAX_RUN_TIME=0.3):
        task = task_function(5)
        started = time.monotonic()
        adapter.run_due()
        elapsed = time.monotonic() - started

    row = adapter.stored(task)
    assert len(spec_tasks.calls) == 1
    assert row.attempts == 1
    assert "exceeded MAX_RUN_TIME" in row.last_error
    assert row.failed_at is None
    assert elapsed < 4


@pytest.mark.rule(8)
@pytest.mark.parametrize("then_fail", [False, True], ids=["success", "failure"])
def test_outcome_needs_own_lock(caplog, then_fail):
    """A worker records the outcome of a run only while it still holds the task's lock, and logs a WARNING otherwise.

    The task below overwrites its own lock mid-run, as a second worker that
    claimed it would. Whether the run then succeeds or fails, the row stays
    as the second worker left it.
    """
    caplog.set_level(logging.WARNING, logger=adapter.ROOT_LOGGER)
    with freeze_time(T0):
        task = spec_tasks.take_own_lock(OTHER_WORKER, then_fail)
        before = adapter.stored(task)
        adapter.run_due()

    row = adapter.stored(task)
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and record.name.startswith(adapter.ROOT_LOGGER)
    ]
    assert row is not None
    assert row.locked_by == OTHER_WORKER
    assert row.attempts == before.attempts
    assert row.last_error == before.last_error
    assert row.failed_at is None
    assert len(warnings) == 1
    assert spec_tasks.take_own_lock.name in warnings[0]


@pytest.mark.rule(9)
@pytest.mark.parametrize("max_attempts", [25, 1], ids=["retried", "failed"])
def test_failure_clears_lock(max_attempts):
    """When a run fails, the worker clears locked_by and locked_at as it records the failure."""
    with override_settings(MAX_ATTEMPTS=max_attempts), freeze_time(T0):
        task = spec_tasks.fail("boom")
        adapter.run_due()

    row = adapter.stored(task)
    assert row.attempts == 1
    assert row.locked_by is None
    assert row.locked_at is None
