"""Retries.

A run that ends in an exception is not the end of a task. The worker counts
it as one used attempt, stores the traceback in ``last_error`` and puts the
task back in the queue for later. Many failures in a background queue are
transient: a mail server that is down for a minute, a row locked by a
long transaction, an API that rate-limits. Trying again later fixes them
without anyone looking.

The wait before the next try grows with the number of failures: after the
n-th failed attempt the task is due again ``n ** 4 + 5`` seconds after the
moment that run failed. The first retry comes 6 seconds later, the fourth
about 4 minutes later and the 24th almost four days later. A fault that goes
away quickly costs little delay, while a task that fails from a coding error
soon backs off far enough that it no longer crowds out the rest of the
queue.

Retrying has a limit. A task runs at most ``MAX_ATTEMPTS`` times (25 by
default), after which it is marked failed; the next chapter describes that
state. A task that succeeds on any attempt is removed like any other
successful task, and its earlier failures leave no trace.

A row whose task name the worker cannot find in its registry is treated as
a failed attempt, not as a reason to stop. During a rolling deploy an old
worker may meet a task that only new code defines, so the row waits with
the usual backoff and a ``last_error`` that names the missing task. The
worker goes on with the other due tasks.

A retried task has no priority of its own. Its new ``run_at`` places it
among the other tasks, which run in order of ``run_at``.
"""

import logging
from datetime import datetime, timedelta, timezone

import pytest
from django.test import override_settings
from freezegun import freeze_time
from hypothesis import given
from hypothesis import strategies as st

from spec import adapter
from spec import tasks as spec_tasks
from spec.conftest import fresh_queue
from spec.steps import run_until_settled, set_attempts

CHAPTER = 5

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

#: A task name that no module registers.
UNREGISTERED = "spec.retries.never_registered"

#: The frozen clock of the running test, which :func:`slow_failure` moves forward.
frozen_clocks: list = []


@adapter.background(name="spec.retries.slow_failure")
def slow_failure(seconds: int) -> None:
    """Move the frozen clock ``seconds`` forward, as a long run would, then raise."""
    frozen_clocks[-1].tick(timedelta(seconds=seconds))
    raise RuntimeError(f"failed after {seconds} seconds")


@st.composite
def limit_and_attempt(draw):
    """Draw a MAX_ATTEMPTS and an attempt number below it."""
    max_attempts = draw(st.integers(min_value=2, max_value=200))
    attempt = draw(st.integers(min_value=1, max_value=max_attempts - 1))
    return max_attempts, attempt


instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)
).map(lambda moment: moment.replace(tzinfo=timezone.utc))


@pytest.mark.rule(1)
def test_failure_uses_one_attempt():
    """A task that raises an exception uses one attempt: attempts goes up by one and last_error contains the traceback.

    The traceback is the one Python prints, so it ends with the exception's
    type and message.
    """
    with freeze_time(T0):
        task = spec_tasks.fail("mail server unreachable")
        adapter.run_due()

    row = adapter.stored(task)
    assert row.attempts == 1
    assert "Traceback" in row.last_error
    assert "ValueError: mail server unreachable" in row.last_error


@pytest.mark.rule(2)
@given(case=limit_and_attempt(), failed_at=instants)
def test_retry_delay_formula(case, failed_at):
    """While attempts < MAX_ATTEMPTS, a task that fails is due again attempts ** 4 + 5 seconds after the failure.

    Here attempts is the count after the failure, so the n-th failure waits
    n ** 4 + 5 seconds.
    """
    max_attempts, attempt = case
    fresh_queue()

    with override_settings(MAX_ATTEMPTS=max_attempts), freeze_time(failed_at):
        task = spec_tasks.fail("boom")
        set_attempts(task, attempt - 1)
        adapter.run_due()

    row = adapter.stored(task)
    assert row.attempts == attempt
    assert row.failed_at is None
    assert row.run_at == failed_at + timedelta(seconds=attempt**4 + 5)


@pytest.mark.rule(3)
@pytest.mark.parametrize(
    "attempt, delay_seconds",
    [(1, 6), (4, 261), (24, 331_781)],
    ids=["first", "fourth", "24th"],
)
def test_retry_delay_examples(attempt, delay_seconds):
    """The first failure waits 6 seconds, the fourth 261 seconds and the 24th 331,781 seconds.

    331,781 seconds is about 3.84 days.
    """
    with freeze_time(T0):
        task = spec_tasks.fail("boom")
        set_attempts(task, attempt - 1)
        adapter.run_due()

    row = adapter.stored(task)
    assert row.run_at - T0 == timedelta(seconds=delay_seconds)


@pytest.mark.rule(4)
@pytest.mark.parametrize("max_attempts", [1, 4, None], ids=["one", "four", "default"])
def test_runs_at_most_max_attempts(max_attempts):
    """A task that always fails runs exactly MAX_ATTEMPTS times, even when the clock passes every retry.

    Without the setting that is 25 runs.
    """
    expected_runs = 25 if max_attempts is None else max_attempts
    overrides = {} if max_attempts is None else {"MAX_ATTEMPTS": max_attempts}

    with override_settings(**overrides), freeze_time(T0) as frozen:
        task = spec_tasks.fail("always")
        run_until_settled(frozen, task)
        frozen.move_to(T0 + timedelta(days=3650))
        adapter.run_due()

    assert len(spec_tasks.calls) == expected_runs


@pytest.mark.rule(5)
def test_success_after_failures_removes():
    """A task that fails and later succeeds is removed from the queue."""
    with freeze_time(T0) as frozen:
        task = spec_tasks.fail_times("flaky", 2)
        run_until_settled(frozen, task)

    assert adapter.stored(task) is None
    assert len(spec_tasks.calls) == 3


@pytest.mark.rule(6)
def test_unregistered_name_is_failed_attempt():
    """A row whose task name is not registered counts as a failed attempt, and the worker goes on with the next due task.

    last_error names the task and states that it is not registered, and the row is
    due again after the usual backoff, 6 seconds after a first failure.
    """
    with freeze_time(T0):
        orphan = spec_tasks.record("orphan")
        adapter.Task.objects.filter(pk=orphan.pk).update(task_name=UNREGISTERED)
        follower = spec_tasks.record("follower")
        claimed = adapter.run_due()

    row = adapter.stored(orphan)
    assert claimed == 2
    assert row.attempts == 1
    assert UNREGISTERED in row.last_error
    assert "not registered" in row.last_error
    assert row.run_at == T0 + timedelta(seconds=6)
    assert adapter.stored(follower) is None
    assert [call.args for call in spec_tasks.calls] == [("follower",)]


@pytest.mark.rule(7)
def test_retry_keeps_run_at_order():
    """A retried task runs when its new run_at comes, in run_at order among the other tasks.

    A task that fails at 12:00:00 is due at 12:00:06, so it runs after a
    task due at 12:00:03 and before one due at 12:00:10.
    """
    with freeze_time(T0) as frozen:
        spec_tasks.fail("retried")
        adapter.run_due()
        spec_tasks.record("due at 12:00:03", schedule=3)
        spec_tasks.record("due at 12:00:10", schedule=10)
        frozen.move_to(T0 + timedelta(seconds=20))
        spec_tasks.reset()
        adapter.run_due()

    assert [call.args[0] for call in spec_tasks.calls] == [
        "due at 12:00:03",
        "retried",
        "due at 12:00:10",
    ]


@pytest.mark.rule(8)
def test_last_error_from_latest_failure():
    """last_error contains only the latest failure, because each failed attempt replaces the one before."""
    with freeze_time(T0) as frozen:
        task = spec_tasks.fail_times("twice", 2)
        adapter.run_due()
        frozen.move_to(adapter.stored(task).run_at)
        adapter.run_due()

    row = adapter.stored(task)
    assert "failure 2 of 2 for twice" in row.last_error
    assert "failure 1 of 2" not in row.last_error


@pytest.mark.rule(9)
def test_delay_counts_from_failure():
    """The retry delay counts from the moment the run failed, not from when it started.

    A first run that starts at 12:00:00 and fails at 12:01:30 is due again at
    12:01:36.
    """
    with freeze_time(T0) as frozen:
        frozen_clocks.append(frozen)
        try:
            task = slow_failure(90)
            adapter.run_due()
        finally:
            frozen_clocks.pop()

    row = adapter.stored(task)
    assert row.run_at == T0 + timedelta(seconds=90 + 6)


@pytest.mark.rule(10)
def test_retry_logs_warning(caplog):
    """Each failed attempt that will be retried is logged as a WARNING that names the task and the error."""
    caplog.set_level(logging.WARNING, logger=adapter.ROOT_LOGGER)

    with freeze_time(T0):
        spec_tasks.fail("disk full")
        adapter.run_due()

    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and record.name.startswith(adapter.ROOT_LOGGER)
    ]
    assert len(warnings) == 1
    assert spec_tasks.fail.name in warnings[0]
    assert "disk full" in warnings[0]


@pytest.mark.rule(11)
def test_retry_stops_at_year_9999():
    """A retry that would fall after the year 9999 is scheduled at 9999-12-31 00:00 UTC instead, so the task stays queued and the worker goes on.

    With MAX_ATTEMPTS = 1000, the 900th failure would wait 900 ** 4 + 5
    seconds, about 20,800 years, which no datetime can hold.
    """
    with override_settings(MAX_ATTEMPTS=1000), freeze_time(T0):
        task = spec_tasks.fail("far future")
        adapter.Task.objects.filter(pk=task.pk).update(attempts=899)
        follower = spec_tasks.record("after")

        adapter.run_due()

    row = adapter.stored(task)
    assert row.attempts == 900
    assert row.failed_at is None
    assert row.run_at == datetime(9999, 12, 31, tzinfo=timezone.utc)
    assert adapter.stored(follower) is None
