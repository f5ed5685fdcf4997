"""Task functions that the specification runs.

This module is the ``tasks`` module of the ``spec`` app, so ``process_tasks``
discovers it like any project's. Each task records what it received in
:data:`calls`, which the spec reads back.
"""

import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from spec.adapter import Task, background


@dataclass
class Call:
    name: str
    args: tuple
    kwargs: dict[str, Any]
    at: datetime


#: Every run of a task below, in order, within this process.
calls: list[Call] = []

#: Failures still to raise, per key, for :func:`fail_times`.
failures_left: dict[str, int] = {}


def reset() -> None:
    """Forget recorded calls and pending failures."""
    calls.clear()
    failures_left.clear()


def _record(name: str, args: tuple, kwargs: dict[str, Any]) -> None:
    calls.append(Call(name, args, kwargs, timezone.now()))


@background
def record(*args: Any, **kwargs: Any) -> None:
    """Record the call and succeed."""
    _record("record", args, kwargs)


@background(schedule=60)
def record_later(*args: Any, **kwargs: Any) -> None:
    """Record the call and succeed; scheduled 60 seconds ahead by default."""
    _record("record_later", args, kwargs)


@background
def fail(message: str) -> None:
    """Record the call, then raise ValueError(message)."""
    _record("fail", (message,), {})
    raise ValueError(message)


@background
def fail_times(key: str, times: int) -> None:
    """Raise RuntimeError for the first ``times`` runs with this ``key``, then succeed."""
    _record("fail_times", (key, times), {})
    left = failures_left.setdefault(key, times)
    if left > 0:
        failures_left[key] = left - 1
        raise RuntimeError(f"failure {times - left + 1} of {times} for {key}")


@background
def sleep_for(seconds: float) -> None:
    """Sleep for ``seconds`` of wall time."""
    _record("sleep_for", (seconds,), {})
    time.sleep(seconds)


@background
def sleep_ignoring_exceptions(seconds: float) -> None:
    """Sleep for ``seconds``, swallowing every Exception raised meanwhile."""
    _record("sleep_ignoring_exceptions", (seconds,), {})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except Exception:
            pass


@background
def write_output(stdout: str, stderr: str) -> None:
    """Print ``stdout`` to standard output and ``stderr`` to standard error."""
    _record("write_output", (stdout, stderr), {})
    print(stdout)
    print(stderr, file=sys.stderr)


@background
def take_own_lock(worker_id: str, then_fail: bool) -> None:
    """Overwrite this task's lock with ``worker_id``, as a second worker claiming it would.

    With ``then_fail`` the task raises afterwards instead of returning.
    """
    _record("take_own_lock", (worker_id, then_fail), {})
    Task.objects.filter(task_name=take_own_lock.name).update(
        locked_by=worker_id, locked_at=timezone.now()
    )
    if then_fail:
        raise RuntimeError("failed after losing the lock")


@background
def record_own_lock() -> None:
    """Record the lock fields of this task's own row, read while it runs."""
    row = Task.objects.get(task_name=record_own_lock.name)
    _record("record_own_lock", (), {"locked_by": row.locked_by, "locked_at": row.locked_at})
