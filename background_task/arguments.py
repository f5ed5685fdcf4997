"""Storing a task's call arguments as strict JSON.

A task's arguments travel through the database as the JSON text
``[args, kwargs]``, so the task receives what a JSON round trip gives:
tuples arrive as lists and non-string dict keys as strings. NaN and the
infinities are rejected because strict JSON has no spelling for them.
"""

import json
from typing import Any


def dump_arguments(task_name: str, args: tuple, kwargs: dict[str, Any]) -> str:
    """Encode ``args`` and ``kwargs`` as strict JSON.

    Raises TypeError naming the first argument that cannot be encoded and its type.
    """
    try:
        return json.dumps([args, kwargs], allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise _describe_bad_argument(task_name, args, kwargs) from error


def load_arguments(task_params: str) -> tuple[list, dict[str, Any]]:
    """Decode the ``[args, kwargs]`` JSON text stored by :func:`dump_arguments`.

    Raises ValueError naming task_params when the text is not JSON, or not a
    list containing a list and an object, as in a row edited by hand.
    """
    try:
        decoded = json.loads(task_params)
    except ValueError as error:
        raise ValueError(f"task_params is not valid JSON ({error}): {_excerpt(task_params)}") from error

    if not _is_args_and_kwargs(decoded):
        raise ValueError(
            "task_params must be the JSON text [args, kwargs], a list containing a list "
            f"and an object; got {_excerpt(task_params)}"
        )
    args, kwargs = decoded
    return args, kwargs


def _is_args_and_kwargs(decoded: Any) -> bool:
    return (
        isinstance(decoded, list)
        and len(decoded) == 2
        and isinstance(decoded[0], list)
        and isinstance(decoded[1], dict)
    )


def _excerpt(text: str, limit: int = 200) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _describe_bad_argument(task_name: str, args: tuple, kwargs: dict[str, Any]) -> TypeError:
    # Only reached after encoding failed, so encoding each argument again costs
    # nothing on the normal path.
    labelled = [(f"positional argument {index}", value) for index, value in enumerate(args)]
    labelled += [(f"keyword argument {key!r}", value) for key, value in kwargs.items()]

    for label, value in labelled:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            return TypeError(
                f"Task {task_name!r}: {label} of type {type(value).__name__} cannot be "
                f"stored as strict JSON ({error}). Pass JSON values such as ids, "
                "strings, numbers, lists and dicts with string keys."
            )

    return TypeError(f"Task {task_name!r}: the arguments cannot be stored as strict JSON.")
