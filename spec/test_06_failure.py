"""Failure.

When a task has used its last attempt, that is when ``attempts`` reaches
``MAX_ATTEMPTS``, the worker stops retrying and marks it failed: it sets
``failed_at`` to the time of the last failure. The row is not deleted. It
keeps the ``last_error`` of that last attempt and its ``attempts`` count, so
someone can read what went wrong, fix the cause and queue the work again.
Deleting failed rows would hide errors, and retrying them forever would
hide them too, in a queue that never empties.

A failed task is out of the queue for good. No worker claims it again,
however far the clock moves, and raising ``MAX_ATTEMPTS`` later does not
bring it back: ``failed_at`` is the one field that decides. A failed row
also blocks nothing. Workers pass over it, so the due tasks queued after
it run as usual.

Every kind of failed attempt counts toward the limit in the same way. The
kinds are an exception raised by the task, a task name the worker does not
know, a run that went past ``MAX_RUN_TIME``, and a run lost with a dead
worker. With
``MAX_ATTEMPTS = 1`` there are no retries at all, and the first failure
marks the task failed.

The last failure is logged at ERROR level with its traceback, because it
is the point where a person has to act.
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

CHAPTER = 6

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

#: A task name that no module registers.
UNREGISTERED = "spec.failure.never_registered"

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)
).map(lambda moment: moment.replace(tzinfo=timezone.utc))


@pytest.mark.rule(1)
@given(max_attempts=st.integers(min_value=1, max_value=100), failed_at=instants)
def test_last_attempt_marks_failed(max_attempts, failed_at):
    """When attempts reaches MAX_ATTEMPTS, failed_at is set to the failure time and the row is kept.

    The row keeps the last error and attempts == MAX_ATTEMPTS.
    """
    fresh_queue()

    with override_settings(MAX_ATTEMPTS=max_attempts), freeze_time(failed_at):
        task = spec_tasks.fail("last straw")
        set_attempts(task, max_attempts - 1)
        adapter.run_due()

    row = adapter.stored(task)
    assert row is not None
    assert row.failed_at == failed_at
    assert row.attempts == max_attempts
    assert "ValueError: last straw" in row.last_error


@pytest.mark.rule(2)
@given(later=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=365 * 7000)))
def test_failed_task_never_runs_again(later):
    """A failed task never runs again, however far the clock moves."""
    fresh_queue()

    with override_settings(MAX_ATTEMPTS=1), freeze_time(T0) as frozen:
        task = spec_tasks.fail("once")
        adapter.run_due()
        frozen.move_to(T0 + later)
        claimed = adapter.run_due()

    assert claimed == 0
    assert len(spec_tasks.calls) == 1
    assert adapter.stored(task).failed_at == T0


@pytest.mark.rule(3)
def test_one_attempt_fails_at_once():
    """With MAX_ATTEMPTS = 1 the first failure marks the task failed."""
    with override_settings(MAX_ATTEMPTS=1), freeze_time(T0):
        task = spec_tasks.fail("no second chance")
        adapter.run_due()

    row = adapter.stored(task)
    assert row.attempts == 1
    assert row.failed_at == T0


@pytest.mark.rule(4)
def test_unregistered_name_ends_failed():
    """A task whose name stays unregistered ends failed after MAX_ATTEMPTS attempts, like any failing task.

    With MAX_ATTEMPTS = 3 and a first try at 12:00:00, the tries come at
    12:00:00, 12:00:06 and 12:00:27, and the last one marks the task failed.
    """
    with override_settings(MAX_ATTEMPTS=3), freeze_time(T0) as frozen:
        task = spec_tasks.record("orphan")
        adapter.Task.objects.filter(pk=task.pk).update(task_name=UNREGISTERED)
        run_until_settled(frozen, task)

    row = adapter.stored(task)
    assert row.attempts == 3
    assert row.failed_at == T0 + timedelta(seconds=27)
    assert UNREGISTERED in row.last_error
    assert spec_tasks.calls == []


@pytest.mark.rule(5)
def test_failed_task_blocks_nothing():
    """A failed task does not hold up the others: due tasks behind it still run."""
    with override_settings(MAX_ATTEMPTS=1), freeze_time(T0) as frozen:
        failed = spec_tasks.fail("first in line")
        adapter.run_due()
        frozen.move_to(T0 + timedelta(minutes=1))
        spec_tasks.record("second")
        spec_tasks.record("third")
        spec_tasks.reset()
        claimed = adapter.run_due()

    assert claimed == 2
    assert [call.args[0] for call in spec_tasks.calls] == ["second", "third"]
    assert adapter.stored(failed).failed_at == T0


@pytest.mark.rule(6)
def test_raised_limit_keeps_failed():
    """Raising MAX_ATTEMPTS later does not bring a failed task back: it stays failed and does not run."""
    with override_settings(MAX_ATTEMPTS=2), freeze_time(T0) as frozen:
        task = spec_tasks.fail("given up")
        run_until_settled(frozen, task)

    with override_settings(MAX_ATTEMPTS=10), freeze_time(T0 + timedelta(days=1)):
        spec_tasks.reset()
        claimed = adapter.run_due()

    row = adapter.stored(task)
    assert claimed == 0
    assert spec_tasks.calls == []
    assert row.attempts == 2
    assert row.failed_at is not None


@pytest.mark.rule(7)
def test_final_failure_logs_error(caplog):
    """The failure that marks a task failed is logged as an ERROR that names the task and carries the traceback."""
    caplog.set_level(logging.WARNING, logger=adapter.ROOT_LOGGER)

    with override_settings(MAX_ATTEMPTS=1), freeze_time(T0):
        spec_tasks.fail("out of retries")
        adapter.run_due()

    errors = [
        record
        for record in caplog.records
        if record.levelno == logging.ERROR and record.name.startswith(adapter.ROOT_LOGGER)
    ]
    assert len(errors) == 1
    assert spec_tasks.fail.name in errors[0].getMessage()
    assert "out of retries" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert str(errors[0].exc_info[1]) == "out of retries"
