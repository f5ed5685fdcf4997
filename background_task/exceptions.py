"""Errors raised by background_task, each also a built-in or Django error."""

from django.core.exceptions import ImproperlyConfigured


class TaskNameConflict(ImproperlyConfigured):
    """Two different functions were registered under one task name."""


class WorkerInterrupted(BaseException):
    """A second SIGTERM or SIGINT asked the worker to stop at once.

    Like TaskTimeout it derives from BaseException, so a task's own
    ``except Exception`` block cannot swallow it.
    """


class TaskTimeout(BaseException):
    """The running task reached MAX_RUN_TIME and was interrupted.

    It derives from BaseException so that a task's own ``except Exception``
    block cannot swallow the interruption.
    """
