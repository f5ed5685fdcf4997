"""Tasks for the tests that run real worker processes."""

import os
import time

from background_task import background
from background_task.models import Task


def _append(path: str, line: str) -> None:
    # One os.write of a short line on an O_APPEND file is atomic, so lines
    # from several processes never interleave.
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (line + "\n").encode())
    finally:
        os.close(descriptor)


@background(name="tests.mark")
def mark(path: str, token: str) -> None:
    """Append ``<token> <pid> <locked_by>`` to the file at ``path``."""
    locked_by = Task.objects.filter(task_name="tests.mark", task_params__contains=f'"{token}"').values_list(
        "locked_by", flat=True
    ).first()
    _append(path, f"{token} {os.getpid()} {locked_by}")


@background(name="tests.sleep_then_mark")
def sleep_then_mark(path: str, token: str, seconds: float) -> None:
    """Sleep, then append ``<token> <pid>`` to the file at ``path``."""
    time.sleep(seconds)
    _append(path, f"{token} {os.getpid()}")


@background(name="tests.print_and_mark")
def print_and_mark(path: str, token: str) -> None:
    """Print ``token`` to stdout and stderr, then mark it like :func:`mark`."""
    import sys

    print(f"out {token}")
    print(f"err {token}", file=sys.stderr)
    _append(path, token)


@background(name="tests.raise_system_exit")
def raise_system_exit(code: int) -> None:
    """Raise SystemExit(code), as a task calling sys.exit() would."""
    raise SystemExit(code)


# Each reliability test file keeps its tasks in a module of its own; importing
# them here registers them in every worker, which imports this module.
from tests.taskapp import crash_tasks, load_tasks, machine_tasks, restart_tasks, transaction_tasks  # noqa: E402, F401
