"""Tasks for the tests that run real worker processes."""

import os
import time

from background_task import background
from background_task.models import Task
from tests.taskapp.marks import append_line

# A worker started with this variable spends that many seconds importing its
# task modules, so a test can signal it while it starts.
time.sleep(float(os.environ.get("TESTS_TASK_IMPORT_DELAY", "0")))


@background(name="tests.mark")
def mark(path: str, token: str) -> None:
    """Append ``<token> <pid> <locked_by>`` to the file at ``path``."""
    locked_by = Task.objects.filter(task_name="tests.mark", task_params__contains=f'"{token}"').values_list(
        "locked_by", flat=True
    ).first()
    append_line(path, f"{token} {os.getpid()} {locked_by}")


@background(name="tests.sleep_then_mark")
def sleep_then_mark(path: str, token: str, seconds: float) -> None:
    """Sleep, then append ``<token> <pid>`` to the file at ``path``."""
    time.sleep(seconds)
    append_line(path, f"{token} {os.getpid()}")


@background(name="tests.print_and_mark")
def print_and_mark(path: str, token: str) -> None:
    """Print ``token`` to stdout and stderr, then mark it like :func:`mark`."""
    import sys

    print(f"out {token}")
    print(f"err {token}", file=sys.stderr)
    append_line(path, token)


@background(name="tests.raise_system_exit")
def raise_system_exit(code: int) -> None:
    """Raise SystemExit(code), as a task calling sys.exit() would."""
    raise SystemExit(code)


# Each reliability test file keeps its tasks in a module of its own; importing
# them here registers them in every worker, which imports this module.
from tests.taskapp import crash_tasks, load_tasks, machine_tasks, restart_tasks, transaction_tasks  # noqa: E402, F401
