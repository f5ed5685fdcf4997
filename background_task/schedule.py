"""Turning a ``schedule`` value into the instant a task becomes due.

Every reading of the clock goes through ``django.utils.timezone.now()``, so a
test that freezes time controls every result here.
"""

import math
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.utils import timezone

Schedule = int | float | timedelta | datetime


def check_schedule(schedule: object) -> None:
    """Raise TypeError unless ``schedule`` is seconds, a timedelta or a datetime.

    Raises ValueError for NaN and infinite seconds.
    """
    if isinstance(schedule, bool) or not isinstance(schedule, (int, float, timedelta, datetime)):
        raise TypeError(
            f"schedule must be seconds (int or float), a timedelta or a datetime; "
            f"got {type(schedule).__name__}: {schedule!r}."
        )
    if isinstance(schedule, float) and not math.isfinite(schedule):
        raise ValueError(f"schedule={schedule!r} is not a number of seconds. Pass a finite number.")


def resolve_run_at(schedule: Schedule) -> datetime:
    """Return the instant a task scheduled with ``schedule`` becomes due.

    Seconds and timedeltas count from now, and zero or less means now: at
    12:00:00, ``90`` gives 12:01:30 and ``-5`` gives 12:00:00. A datetime is
    that instant, with naive values read in the current time zone when
    USE_TZ is True.
    """
    check_schedule(schedule)

    if isinstance(schedule, datetime):
        return _instant(schedule)

    now = timezone.now()
    try:
        delay = schedule if isinstance(schedule, timedelta) else _seconds(schedule)
        if delay <= timedelta(0):
            return now
        return now + delay
    except OverflowError:
        raise ValueError(
            f"schedule={schedule!r} lies past the year 9999, the last instant a "
            "datetime can hold. Pass a smaller delay."
        ) from None


def _seconds(seconds: int | float) -> timedelta:
    if seconds <= 0:
        return timedelta(0)
    return timedelta(seconds=seconds)


def _instant(value: datetime) -> datetime:
    try:
        return _in_storage_form(value)
    except OverflowError:
        raise ValueError(
            f"schedule={value!r} lies outside the range a datetime can hold once "
            "converted to the current time zone. Pass an instant between the years 1 and 9999."
        ) from None


def _in_storage_form(value: datetime) -> datetime:
    if settings.USE_TZ:
        if timezone.is_naive(value):
            value = timezone.make_aware(value, timezone.get_current_timezone())
        # The same instant in UTC, as the database stores it; converting here
        # finds an instant outside datetime's range before anything is saved.
        return value.astimezone(dt_timezone.utc)

    if timezone.is_aware(value):
        return timezone.make_naive(value, timezone.get_current_timezone())
    return value
