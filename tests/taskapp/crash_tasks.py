"""Tasks for tests/test_reliability_crash*.py.

Each task appends lines to a run log, a plain file outside the database, so a
test can count runs even when a worker dies or a signal cuts a run short::

    start <token> <pid> <unix time>
    end <token> <pid> <unix time>

``start`` is the task's first action and ``end`` its last, so a run with a
start line and no end line was cut short inside the task.
"""

import os
import sys
import time
from pathlib import Path

from django.db import connection

from background_task import background
from tests.taskapp.marks import append_line


class CrashAbort(BaseException):
    """A BaseException subclass that is neither SystemExit nor KeyboardInterrupt."""


def _log_start(path: str, token: str) -> None:
    append_line(path, f"start {token} {os.getpid()} {time.time():.6f}")


def _log_end(path: str, token: str) -> None:
    append_line(path, f"end {token} {os.getpid()} {time.time():.6f}")


def _has_started_before(path: str, token: str) -> bool:
    """Return whether the run log at ``path`` already contains a start line for ``token``."""
    log = Path(path)
    if not log.exists():
        return False
    return any(line.split()[:2] == ["start", token] for line in log.read_text().splitlines())


@background(name="tests.crash.run")
def run(path: str, token: str, seconds: float) -> None:
    """Log the start, sleep ``seconds``, log the end."""
    _log_start(path, token)
    if seconds > 0:
        time.sleep(seconds)
    _log_end(path, token)


@background(name="tests.crash.stall_first_run")
def stall_first_run(path: str, token: str, seconds: float) -> None:
    """Sleep ``seconds`` on the first run of ``token`` only, so its retry ends at once."""
    first_run = not _has_started_before(path, token)
    _log_start(path, token)
    if first_run:
        time.sleep(seconds)
    _log_end(path, token)


@background(name="tests.crash.exit_first_run")
def exit_first_run(path: str, token: str, code: int) -> None:
    """End the worker's process with ``os._exit(code)`` on the first run of ``token``, and return on later runs.

    ``os._exit`` skips every ``finally`` block and exception handler, as a
    crash in native code or the out-of-memory killer would.
    """
    first_run = not _has_started_before(path, token)
    _log_start(path, token)
    if first_run:
        os._exit(code)
    _log_end(path, token)


@background(name="tests.crash.raise_keyboard_interrupt")
def raise_keyboard_interrupt(path: str, token: str) -> None:
    """Raise KeyboardInterrupt from the task's own code."""
    _log_start(path, token)
    raise KeyboardInterrupt("raised by the task")


@background(name="tests.crash.raise_base_exception")
def raise_base_exception(path: str, token: str) -> None:
    """Raise :class:`CrashAbort`, which an ``except Exception`` block does not catch."""
    _log_start(path, token)
    raise CrashAbort("raised by the task")


@background(name="tests.crash.exit_zero")
def exit_zero(path: str, token: str) -> None:
    """Call ``sys.exit(0)``, which raises SystemExit(0)."""
    _log_start(path, token)
    sys.exit(0)


@background(name="tests.crash.close_connection")
def close_connection(path: str, token: str) -> None:
    """Close the worker's database connection and return normally."""
    _log_start(path, token)
    connection.close()
    _log_end(path, token)


@background(name="tests.crash.close_connection_then_raise")
def close_connection_then_raise(path: str, token: str) -> None:
    """Close the worker's database connection, then raise RuntimeError."""
    _log_start(path, token)
    connection.close()
    raise RuntimeError("raised after closing the database connection")
