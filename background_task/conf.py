"""The queue's settings, read from ``django.conf.settings`` each time they are used.

Reading at use time keeps ``override_settings`` effective in tests and lets
the system checks in :mod:`background_task.checks` report bad values before a
worker starts.
"""

import math
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULT_MAX_ATTEMPTS = 25
DEFAULT_MAX_RUN_TIME = 3600

#: The largest MAX_RUN_TIME accepted, 100 years in seconds. Lock expiry
#: subtracts MAX_RUN_TIME from now, which must stay within datetime's range.
MAX_RUN_TIME_LIMIT = 100 * 365 * 24 * 3600

MAX_ATTEMPTS_HINT = "Set MAX_ATTEMPTS to an int such as 25, or remove it to use the default."
MAX_RUN_TIME_HINT = "Set MAX_RUN_TIME to seconds such as 3600, or remove it to use the default."


def max_attempts_problem(value: object) -> str | None:
    """Return why ``value`` is not a valid MAX_ATTEMPTS, or None if it is."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"The MAX_ATTEMPTS setting must be a whole number of at least 1; got {value!r}."
    return None


def max_run_time_problem(value: object) -> str | None:
    """Return why ``value`` is not a valid MAX_RUN_TIME, or None if it is."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value <= 0:
        return f"The MAX_RUN_TIME setting must be a positive number of seconds; got {value!r}."
    if value > MAX_RUN_TIME_LIMIT:
        return (
            f"The MAX_RUN_TIME setting must be at most {MAX_RUN_TIME_LIMIT} seconds "
            f"(100 years); got {value!r}."
        )
    return None


def max_attempts() -> int:
    """Return how many times a task may run before it is marked failed."""
    value = getattr(settings, "MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)
    problem = max_attempts_problem(value)
    if problem:
        raise ImproperlyConfigured(f"{problem} {MAX_ATTEMPTS_HINT}")
    return value


def max_run_time() -> timedelta:
    """Return how long a lock holds, which is also the limit on one run of a task."""
    value = getattr(settings, "MAX_RUN_TIME", DEFAULT_MAX_RUN_TIME)
    problem = max_run_time_problem(value)
    if problem:
        raise ImproperlyConfigured(f"{problem} {MAX_RUN_TIME_HINT}")
    return timedelta(seconds=value)
