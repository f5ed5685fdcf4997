"""Settings.

Two Django settings shape how the queue treats failure. ``MAX_ATTEMPTS``,
25 by default, is how many times a task may run before it is marked failed.
``MAX_RUN_TIME``, 3600 seconds by default, is how long a worker's lock on a
task holds and so also how long a single run may last. Both are optional. A
project that sets neither gets retries spread over about 20 days and an
hour for each run, which suits most work a web application hands off.

The queue reads the settings each time it uses them, not once at import or
at worker start. A change made with ``override_settings`` in a test takes
effect at the next claim or the next failure, with no restart. For the same
reason, a new limit applies to tasks already in the queue. A task that has
already failed more often than a lowered ``MAX_ATTEMPTS`` is not marked
failed on the spot: it runs once more, and its next failure marks it
failed.

Invalid values are reported early by Django's system check framework, each
setting under a stable check id. ``MAX_ATTEMPTS`` must be an ``int`` of at
least 1. ``MAX_RUN_TIME`` must be a finite number of seconds greater than
0, and may be fractional. Booleans, strings and ``None`` are invalid for
both, because each of them more likely comes from a mistake than from
intent. ``None`` in particular does not mean "use the default": a project
that wants the default leaves the setting out. ``process_tasks`` will not
start with an invalid value, so a bad deploy stops before the first task
runs and is not discovered at the first failure.
"""

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from django.core import checks
from django.core.management.base import CommandError, SystemCheckError
from django.test import override_settings
from freezegun import freeze_time

from spec import adapter
from spec import tasks as spec_tasks

CHAPTER = 8

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

#: The id a worker that died mid-run left in a task's lock.
DEAD_WORKER = "dead-host:4242:0123456789ab"

#: The directory that contains the ``spec`` package, for a subprocess's import path.
PROJECT_DIR = Path(__file__).resolve().parent.parent

INVALID_MAX_ATTEMPTS = [0, -1, 1.5, "3", True, None]
VALID_MAX_ATTEMPTS = [1, 25, 1000]
INVALID_MAX_RUN_TIME = [0, -5, "60", float("nan"), float("inf"), True, None]
VALID_MAX_RUN_TIME = [0.5, 1, 3600]


def check_cases(invalid: list, valid: list) -> list:
    """Return (value, valid) parameters with ids such as "invalid-0" and "valid-25"."""
    cases = [pytest.param(value, False, id=f"invalid-{value!r}") for value in invalid]
    cases += [pytest.param(value, True, id=f"valid-{value!r}") for value in valid]
    return cases


@pytest.fixture
def without_queue_settings(settings):
    """Remove MAX_ATTEMPTS and MAX_RUN_TIME from the settings for one test, if present."""
    for name in ("MAX_ATTEMPTS", "MAX_RUN_TIME"):
        if hasattr(settings, name):
            delattr(settings, name)


def set_attempts(task, attempts: int) -> None:
    """Store ``attempts`` failed attempts on ``task``, so its next run is attempt ``attempts + 1``."""
    adapter.Task.objects.filter(pk=task.pk).update(attempts=attempts)


def messages_with_id(check_id: str) -> list[checks.CheckMessage]:
    """Run every system check and return the messages carrying ``check_id``."""
    return [message for message in checks.run_checks() if message.id == check_id]


@pytest.mark.rule(1)
def test_defaults_without_settings(without_queue_settings):
    """Without the settings, MAX_ATTEMPTS is 25 and MAX_RUN_TIME is 3600 seconds.

    So a task is still retried after its 24th failure and marked failed at
    its 25th, and a lock taken at 12:00:00 holds at 13:00:00 and has expired
    at 13:00:00.000001.
    """
    with freeze_time(T0):
        retried = spec_tasks.fail("24th failure")
        set_attempts(retried, 23)
        final = spec_tasks.fail("25th failure")
        set_attempts(final, 24)
        adapter.run_due()

    with freeze_time(T0 - timedelta(days=1)):
        locked = spec_tasks.record("locked")
    adapter.lock_as_dead_worker(locked, DEAD_WORKER, T0)
    with freeze_time(T0 + timedelta(seconds=3600)):
        claims_at_expiry = adapter.run_due()
    with freeze_time(T0 + timedelta(seconds=3600, microseconds=1)):
        claims_after_expiry = adapter.run_due()

    assert adapter.stored(retried).attempts == 24
    assert adapter.stored(retried).failed_at is None
    assert adapter.stored(final).attempts == 25
    assert adapter.stored(final).failed_at == T0
    assert claims_at_expiry == 0
    assert claims_after_expiry == 1
    assert messages_with_id(adapter.MAX_ATTEMPTS_CHECK_ID) == []
    assert messages_with_id(adapter.MAX_RUN_TIME_CHECK_ID) == []


@pytest.mark.rule(2)
def test_settings_read_when_used():
    """Settings are read each time they are used, so override_settings changes behaviour at once, with no restart.

    Below, one task's third failure is retried under MAX_ATTEMPTS = 5 and its
    fourth marks it failed under MAX_ATTEMPTS = 4. A lock 100 seconds old
    holds under MAX_RUN_TIME = 200 and has expired under MAX_RUN_TIME = 50,
    at the same instant.
    """
    with freeze_time(T0) as frozen:
        failing = spec_tasks.fail("boom")
        set_attempts(failing, 2)
        with override_settings(MAX_ATTEMPTS=5):
            adapter.run_due()
        retried = adapter.stored(failing)
        frozen.move_to(retried.run_at)
        with override_settings(MAX_ATTEMPTS=4):
            adapter.run_due()

    with freeze_time(T0 - timedelta(days=1)):
        locked = spec_tasks.record("locked")
    adapter.lock_as_dead_worker(locked, DEAD_WORKER, T0)
    with freeze_time(T0 + timedelta(seconds=100)):
        with override_settings(MAX_RUN_TIME=200):
            claims_long_limit = adapter.run_due()
        with override_settings(MAX_RUN_TIME=50):
            claims_short_limit = adapter.run_due()

    assert retried.failed_at is None
    assert adapter.stored(failing).attempts == 4
    assert adapter.stored(failing).failed_at is not None
    assert claims_long_limit == 0
    assert claims_short_limit == 1


@pytest.mark.rule(3)
@pytest.mark.parametrize(
    "value, valid", check_cases(INVALID_MAX_ATTEMPTS, VALID_MAX_ATTEMPTS)
)
def test_check_max_attempts(value, valid):
    """A system check reports an invalid MAX_ATTEMPTS as an error with a stable id, and a valid one passes.

    MAX_ATTEMPTS must be an int of at least 1, and True is not one. The
    error names the setting and the value.
    """
    with override_settings(MAX_ATTEMPTS=value):
        found = messages_with_id(adapter.MAX_ATTEMPTS_CHECK_ID)

    if valid:
        assert found == []
    else:
        assert len(found) == 1
        assert found[0].level == checks.ERROR
        assert "MAX_ATTEMPTS" in found[0].msg
        assert repr(value) in found[0].msg


@pytest.mark.rule(4)
@pytest.mark.parametrize(
    "value, valid", check_cases(INVALID_MAX_RUN_TIME, VALID_MAX_RUN_TIME)
)
def test_check_max_run_time(value, valid):
    """A system check reports an invalid MAX_RUN_TIME as an error with a stable id, and a valid one passes.

    MAX_RUN_TIME must be a finite number of seconds greater than 0, whole or
    fractional, and True is not one. The error names the setting and the
    value.
    """
    with override_settings(MAX_RUN_TIME=value):
        found = messages_with_id(adapter.MAX_RUN_TIME_CHECK_ID)

    if valid:
        assert found == []
    else:
        assert len(found) == 1
        assert found[0].level == checks.ERROR
        assert "MAX_RUN_TIME" in found[0].msg
        assert repr(value) in found[0].msg


@pytest.mark.rule(5)
@pytest.mark.parametrize(
    "setting, value, check_id",
    [
        ("MAX_ATTEMPTS", 0, adapter.MAX_ATTEMPTS_CHECK_ID),
        ("MAX_RUN_TIME", 0, adapter.MAX_RUN_TIME_CHECK_ID),
    ],
    ids=["max-attempts", "max-run-time"],
)
def test_command_line_rejects_invalid(tmp_path, setting, value, check_id):
    """process_tasks started from the command line does not start when a setting is invalid: it exits with a system check error that names the check."""
    (tmp_path / "invalid_settings.py").write_text(
        f"from spec.settings import *  # noqa: F403\n{setting} = {value!r}\n"
    )
    environment = dict(os.environ)
    environment["DJANGO_SETTINGS_MODULE"] = "invalid_settings"
    environment["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(PROJECT_DIR)])

    finished = subprocess.run(
        [sys.executable, "-m", "django", adapter.COMMAND, "--duration", "1"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode != 0
    assert "SystemCheckError" in finished.stderr
    assert check_id in finished.stderr


@pytest.mark.rule(6)
@pytest.mark.parametrize(
    "setting, value",
    [("MAX_ATTEMPTS", 0), ("MAX_RUN_TIME", 0)],
    ids=["max-attempts", "max-run-time"],
)
def test_call_command_rejects_invalid(setting, value):
    """process_tasks run with call_command also stops with an error when a setting is invalid, before any task runs.

    call_command skips the system checks, so the command itself has to stop.
    It raises CommandError or SystemCheckError naming the setting, and a due
    task is left untouched: not run and not locked.
    """
    task = spec_tasks.record("due")

    with override_settings(**{setting: value}):
        with pytest.raises((CommandError, SystemCheckError)) as raised:
            adapter.process_tasks("--duration", "0.5", "--sleep", "0.1")

    row = adapter.stored(task)
    assert setting in str(raised.value)
    assert spec_tasks.calls == []
    assert row.locked_by is None
    assert row.attempts == 0


@pytest.mark.rule(7)
def test_lowered_limit_runs_once_more():
    """A task that already failed more often than a lowered MAX_ATTEMPTS runs once more, and that failure marks it failed."""
    with freeze_time(T0):
        task = spec_tasks.fail("still broken")
        set_attempts(task, 10)
        with override_settings(MAX_ATTEMPTS=3):
            adapter.run_due()

    row = adapter.stored(task)
    assert len(spec_tasks.calls) == 1
    assert row.attempts == 11
    assert row.failed_at == T0


@pytest.mark.rule(8)
@pytest.mark.parametrize("value", [100 * 365 * 24 * 3600 + 1, 10**11, 10**15])
def test_max_run_time_upper_limit(value):
    """A MAX_RUN_TIME above 100 years is reported by the system check, because a lock's expiry is computed as now minus MAX_RUN_TIME, which must stay a valid datetime."""
    with override_settings(MAX_RUN_TIME=value):
        errors = [message for message in checks.run_checks() if message.id == adapter.MAX_RUN_TIME_CHECK_ID]

    assert len(errors) == 1
    assert repr(value) in errors[0].msg
