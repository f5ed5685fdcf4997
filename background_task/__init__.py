"""A database-backed work queue for Django.

Decorate a function with :func:`background` to make it a task, call it to
store a :class:`~background_task.models.Task` row, and run due tasks with
``python manage.py process_tasks`` or :func:`run_due_tasks`.
"""

from background_task.decorators import TaskFunction, background

__all__ = ["TaskFunction", "background", "run_due_tasks"]
__version__ = "0.1.0"


def run_due_tasks() -> int:
    """Run due tasks one at a time until none is due, and return how many were claimed.

    This is the worker loop without the waiting, for cron jobs, tests and
    scripts. Like ``process_tasks`` it first imports every installed app's
    ``tasks`` module. A failed task is rescheduled at least 6 seconds ahead,
    so it runs again within the same call only if the call is still busy
    with other tasks by then.
    """
    # Imported here because the worker imports the models, which need the app
    # registry, and this package is imported while Django loads its apps.
    from background_task.worker import run_due_tasks as run

    return run()
