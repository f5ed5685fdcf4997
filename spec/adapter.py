"""The specification's only door into the implementation under test.

Every spec module reaches the queue through the names below: the decorator,
the Task model and its documented fields, the run-once function and the
``process_tasks`` command. To check another implementation of this API,
point these names at it and run ``pytest spec``.
"""

from datetime import datetime
from io import StringIO

from django.core.management import call_command

from background_task import __version__ as implementation_version
from background_task import background, run_due_tasks
from background_task.models import Task

IMPLEMENTATION = "background_task"
IMPLEMENTATION_VERSION = implementation_version

#: The ``process_tasks`` command's name, as ``call_command`` takes it.
COMMAND = "process_tasks"

#: The setting names and their defaults.
MAX_ATTEMPTS_DEFAULT = 25
MAX_RUN_TIME_DEFAULT = 3600

#: The id of the system check errors for each setting.
MAX_ATTEMPTS_CHECK_ID = "background_task.E001"
MAX_RUN_TIME_CHECK_ID = "background_task.E002"

#: The logger that every log record of the queue descends from.
ROOT_LOGGER = "background_task"


def run_due() -> int:
    """Run the due tasks once and return how many were claimed."""
    return run_due_tasks()


def process_tasks(*options: str) -> str:
    """Run ``process_tasks`` in this process with command-line ``options``; return its stdout."""
    stdout = StringIO()
    call_command(COMMAND, *options, stdout=stdout)
    return stdout.getvalue()


def lock_as_dead_worker(task: Task, worker_id: str, locked_at: datetime) -> None:
    """Write a lock into ``task``'s row as a worker that then died would have left it."""
    Task.objects.filter(pk=task.pk).update(locked_by=worker_id, locked_at=locked_at)


def stored(task: Task) -> Task | None:
    """Return ``task``'s row as stored now, or None if it was removed."""
    return Task.objects.filter(pk=task.pk).first()


def queued_tasks() -> list[Task]:
    """Return every stored task, in the order a worker would consider them."""
    return list(Task.objects.order_by("run_at", "id"))


def clear_queue() -> None:
    """Delete every stored task."""
    Task.objects.all().delete()


__all__ = [
    "COMMAND",
    "IMPLEMENTATION",
    "IMPLEMENTATION_VERSION",
    "MAX_ATTEMPTS_CHECK_ID",
    "MAX_ATTEMPTS_DEFAULT",
    "MAX_RUN_TIME_CHECK_ID",
    "MAX_RUN_TIME_DEFAULT",
    "ROOT_LOGGER",
    "Task",
    "background",
    "clear_queue",
    "lock_as_dead_worker",
    "process_tasks",
    "queued_tasks",
    "run_due",
    "stored",
]
