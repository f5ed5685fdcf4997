"""The ``@background`` decorator, which turns a function into a task."""

import functools
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from background_task.arguments import dump_arguments
from background_task.registry import TASK_NAME_MAX_LENGTH, qualified_name, tasks
from background_task.schedule import Schedule, check_schedule, resolve_run_at

if TYPE_CHECKING:
    from background_task.models import Task

logger = logging.getLogger(__name__)


class TaskFunction:
    """A function registered as a task: calling it stores a Task row instead of running it.

    The plain function stays reachable as ``__wrapped__``, and :meth:`now`
    runs it at once in the calling process.
    """

    def __init__(self, func: Callable, name: str, schedule: Schedule) -> None:
        self.__wrapped__ = func
        self.name = name
        self.schedule = schedule
        self._signature = inspect.signature(func)
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, schedule: Schedule | None = None, **kwargs: Any) -> "Task":
        """Store a task that runs this function with ``args`` and ``kwargs``.

        ``schedule`` overrides the decorator's schedule for this call only.
        """
        from background_task.models import Task

        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"Task {self.name!r} cannot be called with these arguments: {error}.") from None

        task_params = dump_arguments(self.name, args, kwargs)
        run_at = resolve_run_at(self.schedule if schedule is None else schedule)
        task = Task.objects.create(task_name=self.name, task_params=task_params, run_at=run_at)

        logger.debug("Task id=%s name=%s queued, run_at=%s", task.pk, task.task_name, run_at.isoformat())
        return task

    def now(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function at once, in this process, and return its result."""
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<TaskFunction {self.name}>"


@overload
def background(func: Callable, /) -> TaskFunction: ...


@overload
def background(
    *, schedule: Schedule = 0, name: str | None = None
) -> Callable[[Callable], TaskFunction]: ...


def background(func=None, /, *, schedule=0, name=None):
    """Turn a module-level function into a task.

    Works bare (``@background``) and with arguments
    (``@background(schedule=60, name="mail.notify")``). ``schedule`` is the
    default delay for each call, and ``name`` defaults to
    ``<module>.<function name>``.
    """
    if schedule is None:
        schedule = 0
    check_schedule(schedule)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise TypeError(f"name must be a non-empty string; got {name!r}.")

    def decorate(func: Callable) -> TaskFunction:
        _check_task_function(func)
        task_name = name or qualified_name(func)
        _check_name_length(task_name)
        task = TaskFunction(func, task_name, schedule)
        tasks.register(task.name, func)
        return task

    if func is not None:
        return decorate(func)
    return decorate


def _check_task_function(func: object) -> None:
    if not inspect.isfunction(func):
        raise TypeError(
            f"@background decorates plain functions; got {type(func).__name__}: {func!r}."
        )

    if func.__name__ == "<lambda>":
        raise TypeError(
            f"A task must be a module-level function defined with def, so a worker can "
            f"find it by name; got the lambda {func.__module__}.{func.__qualname__}. Define it at the top "
            "level of a module such as tasks.py."
        )

    if func.__qualname__ != func.__name__:
        raise TypeError(
            f"A task must be a module-level function so a worker can find it by name; "
            f"{func.__module__}.{func.__qualname__} is nested in a class or function. "
            "Move it to the top level of a module such as tasks.py."
        )

    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        raise TypeError(
            f"{qualified_name(func)} is an async or generator function, whose body would "
            "not run when the worker calls it. Make the task a plain function."
        )

    if "schedule" in inspect.signature(func).parameters:
        raise TypeError(
            f"{qualified_name(func)} has a parameter named 'schedule', which calls to "
            "a task reserve for the run time. Rename the parameter."
        )


def _check_name_length(task_name: str) -> None:
    if len(task_name) > TASK_NAME_MAX_LENGTH:
        raise TypeError(
            f"Task name {task_name[:40]!r}... is {len(task_name)} characters long; the "
            f"task_name column holds at most {TASK_NAME_MAX_LENGTH}. Pass a shorter name=... to @background."
        )
