"""Errors raised by background_task, each also a built-in or Django error."""

from django.core.exceptions import ImproperlyConfigured


class TaskNameConflict(ImproperlyConfigured):
    """Two different functions were registered under one task name."""


class TaskTimeout(BaseException):
    """The running task reached MAX_RUN_TIME and was interrupted.

    It derives from BaseException so that a task's own ``except Exception``
    block cannot swallow the interruption.
    """
