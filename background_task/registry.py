"""The registry that maps task names to the functions a worker runs."""

from collections.abc import Callable

from background_task.exceptions import TaskNameConflict

#: The maximum length of a task name, the task_name column's size in django-background-tasks 1.2.8.
TASK_NAME_MAX_LENGTH = 190


def qualified_name(func: Callable) -> str:
    """Return ``<module>.<function name>``, the default task name."""
    return f"{func.__module__}.{func.__qualname__}"


class TaskRegistry:
    """Task names and their functions, filled as modules with tasks are imported."""

    def __init__(self) -> None:
        self._functions: dict[str, Callable] = {}

    def register(self, name: str, func: Callable) -> None:
        """Register ``func`` under ``name``.

        Registering the same function again, as happens when its module is
        imported a second time, replaces the old entry. A different function
        under a taken name raises TaskNameConflict.
        """
        existing = self._functions.get(name)
        if existing is not None and qualified_name(existing) != qualified_name(func):
            raise TaskNameConflict(
                f"Task name {name!r} is already registered for {qualified_name(existing)}; "
                f"cannot register {qualified_name(func)} under it too. Pass a distinct "
                "name=... to @background."
            )
        self._functions[name] = func

    def get(self, name: str) -> Callable | None:
        """Return the function registered under ``name``, or None."""
        return self._functions.get(name)

    def names(self) -> list[str]:
        """Return the registered task names, sorted."""
        return sorted(self._functions)


tasks = TaskRegistry()
