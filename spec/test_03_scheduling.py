"""Scheduling.

Every task has a ``run_at``, the instant from which a worker may run it.
``run_at`` comes from a schedule, given either to the decorator, as the
default for every call, or to one call as ``schedule=...``. A schedule given
to the call replaces the decorator's, and ``schedule=None`` counts as no
schedule at all. With neither, a task is due at once.

A schedule is one of three kinds. A number is seconds from now and a
``timedelta`` is an offset from now, both counted from the moment of the
call, so ``@background(schedule=60)`` means "a minute after each call". A
``datetime`` is a fixed instant. Zero and negative delays mean now, so a
computed delay that turned out negative still runs, and as soon as possible.
A datetime in the past is kept as it is and is due at once, like any task
whose time has come. Floats may carry fractions of a second, and ``run_at``
keeps them to the microsecond, the precision of Python's datetime and of the
databases.

An aware datetime is exactly the instant it names, whatever its time zone.
A naive datetime has no time zone of its own. With ``USE_TZ = True`` it is
read in Django's current time zone, which ``django.utils.timezone.activate``
and ``override`` set, so 09:00 means nine o'clock on the clocks of that zone.
By default the current time zone is TIME_ZONE, which Django on Unix also
makes the process's local time zone, so a naive ``datetime.now()`` means now.

Around daylight saving changes, a naive time is read as the ``zoneinfo``
module reads it. A time that occurs twice, when clocks go back, is the earlier
of the two instants, unless the datetime has ``fold=1``, which selects the
later one (PEP 495). A time that never occurs, when clocks go forward, is read
with the UTC offset in force before the change. So 02:30 on the day New York
skips from 02:00 to 03:00 becomes 03:30 EDT.

With ``USE_TZ = False`` the database stores naive datetimes. A naive schedule
is stored as given, and an aware one is converted to the current time zone
and stored without its time zone.

Wrong schedules fail at the call, or at decoration time when they are given
to the decorator, and nothing is stored. A value of the wrong type, such as a
string, a ``date``, a list or a ``Decimal``, raises ``TypeError`` naming the
type. So does a bool, because ``True`` is far more likely a mistake than a
request for a one-second delay. A number or timedelta that would put
``run_at`` past the year 9999, where datetimes end, and a NaN or infinite
float, raise ``ValueError`` naming the value.

The queue reads the clock only through ``django.utils.timezone.now()``, so
freezing or moving the clock in tests, for example with freezegun, moves
every schedule with it.
"""

from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from django.test import override_settings
from django.utils import timezone
from freezegun import freeze_time
from hypothesis import event, example, given
from hypothesis import strategies as st

from spec import adapter
from spec import tasks as spec_tasks
from spec.conftest import fresh_queue

CHAPTER = 3

UTC = dt_timezone.utc
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FROZEN = "2026-01-01 12:00:00"

#: Zones with whole-hour, half-hour and 45-minute offsets, with and without daylight saving.
ZONES = [
    "UTC",
    "Europe/London",
    "Europe/Dublin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Chatham",
]

#: Schedules of a type the queue does not accept, with the type name the error shows.
WRONG_TYPES = [
    pytest.param("60", "str", id="str"),
    pytest.param(date(2026, 1, 2), "date", id="date"),
    pytest.param([60], "list", id="list"),
    pytest.param(Decimal("60"), "Decimal", id="Decimal"),
]


@adapter.background(name="spec.scheduling.in_an_hour", schedule=timedelta(hours=1))
def in_an_hour(label: str) -> None:
    """Record the call. The decorator schedules it one hour ahead."""
    spec_tasks.calls.append(spec_tasks.Call("in_an_hour", (label,), {}, timezone.now()))


@adapter.background(name="spec.scheduling.new_year", schedule=datetime(2027, 1, 1, tzinfo=UTC))
def at_new_year(label: str) -> None:
    """Record the call. The decorator schedules it for 2027-01-01 00:00 UTC."""
    spec_tasks.calls.append(spec_tasks.Call("at_new_year", (label,), {}, timezone.now()))


@adapter.background(name="spec.scheduling.no_default", schedule=None)
def no_default(label: str) -> None:
    """Record the call. The decorator's ``schedule=None`` gives no default delay."""
    spec_tasks.calls.append(spec_tasks.Call("no_default", (label,), {}, timezone.now()))


def stored_run_at(task: adapter.Task) -> datetime:
    """Return ``task``'s run_at as read back from the database."""
    return adapter.stored(task).run_at


def enqueue_at_now(schedule: object) -> adapter.Task:
    """Call ``spec.tasks.record`` with ``schedule`` at the frozen instant NOW."""
    with freeze_time(FROZEN):
        return spec_tasks.record(schedule=schedule)


@pytest.mark.rule(1)
@given(clock=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
@example(clock=datetime(2026, 1, 1, 12, 0, 0, 1))
def test_no_schedule_is_now(clock):
    """With no schedule in the decorator or the call, a task is due at once: run_at is the current time, to the microsecond.

    The time is read from ``django.utils.timezone.now()``, so with the clock
    frozen at 12:00:00.000001 run_at is exactly 12:00:00.000001.
    """
    fresh_queue()

    with freeze_time(clock):
        task = spec_tasks.record()

    assert stored_run_at(task) == clock.replace(tzinfo=UTC)


@pytest.mark.rule(2)
def test_decorator_schedule_applies():
    """The decorator's schedule applies when the call gives none, counted from each call, and ``schedule=None``, at the call or in the decorator, counts as no schedule.

    ``record_later`` is decorated with ``schedule=60``: called at 12:00 it is
    due at 12:01, and called at 13:00 it is due at 13:01.
    """
    with freeze_time(FROZEN) as clock:
        noon = spec_tasks.record_later("noon")
        hour = in_an_hour("noon")
        new_year = at_new_year("noon")
        none_at_call = spec_tasks.record_later("none", schedule=None)
        none_in_decorator = no_default("noon")
        clock.move_to("2026-01-01 13:00:00")
        one_pm = spec_tasks.record_later("one pm")

    assert stored_run_at(noon) == datetime(2026, 1, 1, 12, 1, tzinfo=UTC)
    assert stored_run_at(hour) == datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    assert stored_run_at(new_year) == datetime(2027, 1, 1, tzinfo=UTC)
    assert stored_run_at(none_at_call) == datetime(2026, 1, 1, 12, 1, tzinfo=UTC)
    assert stored_run_at(none_in_decorator) == NOW
    assert stored_run_at(one_pm) == datetime(2026, 1, 1, 13, 1, tzinfo=UTC)


@pytest.mark.rule(3)
def test_call_schedule_overrides_decorator():
    """A schedule given to the call replaces the decorator's, so ``schedule=0`` at the call means now even when the decorator gives 60."""
    with freeze_time(FROZEN):
        now = spec_tasks.record_later("now", schedule=0)
        later = spec_tasks.record_later("later", schedule=timedelta(minutes=5))
        fixed = in_an_hour("fixed", schedule=datetime(2026, 1, 2, tzinfo=UTC))

    assert stored_run_at(now) == NOW
    assert stored_run_at(later) == datetime(2026, 1, 1, 12, 5, tzinfo=UTC)
    assert stored_run_at(fixed) == datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.rule(4)
@given(
    seconds=st.integers(min_value=1, max_value=10**9)
    | st.floats(min_value=0, max_value=10**9, exclude_min=True)
    | st.floats(min_value=0, max_value=10, exclude_min=True)
)
@example(seconds=90)
@example(seconds=0.25)
@example(seconds=1e-7)
@example(seconds=0.0000015)
@example(seconds=10**9)
def test_positive_seconds_from_now(seconds):
    """A positive int or float schedule is that many seconds from now, rounded to the nearest microsecond.

    At 12:00:00, ``90`` gives 12:01:30, ``0.25`` gives 12:00:00.250000, and
    ``1e-7`` rounds to 12:00:00 itself. ``10**9`` seconds, about 31.7 years,
    still fits.
    """
    fresh_queue()
    expected = NOW + timedelta(microseconds=round(Fraction(seconds) * 1_000_000))

    task = enqueue_at_now(seconds)

    assert stored_run_at(task) == expected


@pytest.mark.rule(5)
@given(
    seconds=st.integers(max_value=0)
    | st.floats(max_value=0, allow_nan=False, allow_infinity=False)
)
@example(seconds=0)
@example(seconds=-0.0)
@example(seconds=-5)
@example(seconds=-(10**30))
@example(seconds=-1.7976931348623157e308)
def test_zero_or_negative_is_now(seconds):
    """A zero or negative number schedule means now, however large the number.

    A delay computed as "deadline minus now" that has already passed runs at
    once instead of raising.
    """
    fresh_queue()

    task = enqueue_at_now(seconds)

    assert stored_run_at(task) == NOW


@pytest.mark.rule(6)
@pytest.mark.parametrize("flag", [True, False])
def test_bool_schedule_rejected(flag):
    """A bool schedule raises TypeError, at the call and at decoration time, and nothing is stored.

    ``True`` is a number in Python, but ``schedule=True`` is far more likely a
    mistake than a request for a delay of one second.
    """
    with pytest.raises(TypeError) as at_call:
        spec_tasks.record(schedule=flag)
    with pytest.raises(TypeError) as at_decoration:
        adapter.background(schedule=flag)

    assert "got bool" in str(at_call.value)
    assert "got bool" in str(at_decoration.value)
    assert adapter.queued_tasks() == []


@pytest.mark.rule(7)
@given(delay=st.timedeltas(min_value=timedelta(days=-(10**6)), max_value=timedelta(days=10**6)))
@example(delay=timedelta(0))
@example(delay=timedelta(microseconds=1))
@example(delay=timedelta(microseconds=-1))
@example(delay=timedelta.min)
@example(delay=timedelta(days=365, hours=6))
def test_timedelta_offset_from_now(delay):
    """A timedelta schedule is that offset from now, and a zero or negative timedelta means now.

    At 12:00:00, ``timedelta(minutes=5)`` gives 12:05:00 and
    ``timedelta(minutes=-5)`` gives 12:00:00.
    """
    fresh_queue()
    expected = NOW + delay if delay > timedelta(0) else NOW

    task = enqueue_at_now(delay)

    assert stored_run_at(task) == expected


@pytest.mark.rule(8)
@given(
    when=st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.timezones() | st.sampled_from([UTC, dt_timezone(timedelta(hours=-3, minutes=-30))]),
    )
)
@example(when=datetime(2026, 10, 25, 1, 30, tzinfo=ZoneInfo("Europe/London")))
@example(when=datetime(2026, 10, 25, 1, 30, fold=1, tzinfo=ZoneInfo("Europe/London")))
@example(when=datetime(2026, 4, 5, 1, 45, tzinfo=ZoneInfo("Australia/Lord_Howe")))
def test_aware_datetime_is_instant(when):
    """An aware datetime schedule is the instant it names, whatever its time zone.

    09:00 in Kathmandu (UTC+05:45) and 03:15 UTC are one instant, and give
    the same run_at.
    """
    fresh_queue()

    task = enqueue_at_now(when)
    run_at = stored_run_at(task)

    # Compared in UTC: Python's == between zones is always False for a time
    # that falls in a daylight saving change (PEP 495).
    assert run_at.astimezone(UTC) == when.astimezone(UTC)


@pytest.mark.rule(9)
def test_past_datetime_due_at_once():
    """A datetime in the past is stored as that instant, not moved to now, and the task is due at once.

    Unlike a negative number, which becomes now, a past datetime keeps its
    value, so the row still shows when the task was meant to run.
    """
    yesterday = NOW - timedelta(days=1)

    with freeze_time(FROZEN):
        task = spec_tasks.record("late", schedule=yesterday)
        run_at = stored_run_at(task)
        claimed = adapter.run_due()

    assert run_at == yesterday
    assert claimed == 1
    assert [call.args for call in spec_tasks.calls] == [("late",)]


def offset_changes(zone: ZoneInfo, year: int) -> list[datetime]:
    """Return the UTC instants in ``year`` at which ``zone`` changes its UTC offset."""
    def offset(instant: datetime) -> timedelta:
        return instant.astimezone(zone).utcoffset()

    changes = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    while day.year == year:
        next_day = day + timedelta(days=1)
        if offset(day) != offset(next_day):
            before, after = day, next_day
            while after - before > timedelta(microseconds=1):
                middle = before + (after - before) // 2
                if offset(middle) == offset(before):
                    before = middle
                else:
                    after = middle
            changes.append(after)
        day = next_day
    return changes


def wall_times_near_changes(zone_name: str) -> st.SearchStrategy[datetime]:
    """Draw naive wall-clock times within 90 minutes of ``zone_name``'s offset changes in 2026."""
    zone = ZoneInfo(zone_name)
    walls = []
    for change in offset_changes(zone, 2026):
        offset_before = (change - timedelta(microseconds=1)).astimezone(zone).utcoffset()
        walls.append((change + offset_before).replace(tzinfo=None))
    if not walls:
        return st.nothing()

    return st.builds(
        lambda wall, seconds, micros: wall + timedelta(seconds=seconds, microseconds=micros),
        st.sampled_from(walls),
        st.integers(-5400, 5400),
        st.sampled_from([0, 1, 500_000, 999_999]),
    )


def zone_and_wall_time(zone_name: str) -> st.SearchStrategy[tuple[str, datetime]]:
    anywhere = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1))
    near_changes = wall_times_near_changes(zone_name)
    # Weighted towards the changes, where random times rarely fall.
    walls = st.one_of(near_changes, near_changes, near_changes, anywhere)
    folds = st.sampled_from([0, 1])
    return st.tuples(st.just(zone_name), st.builds(lambda wall, fold: wall.replace(fold=fold), walls, folds))


@pytest.mark.rule(10)
@given(zone_and_naive=st.sampled_from(ZONES).flatmap(zone_and_wall_time))
@example(zone_and_naive=("America/New_York", datetime(2026, 3, 8, 2, 30)))
@example(zone_and_naive=("America/New_York", datetime(2026, 11, 1, 1, 30)))
@example(zone_and_naive=("America/New_York", datetime(2026, 11, 1, 1, 30, fold=1)))
@example(zone_and_naive=("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 15)))
def test_naive_read_in_current_zone(zone_and_naive):
    """With USE_TZ = True, a naive datetime is read in Django's current time zone, as zoneinfo reads it: it shows the same wall-clock time there, a time that occurs twice is the earlier instant (the later with fold=1), and a time that never occurs is read with the offset before the change.

    In New York, 01:30 on 1 November 2026 occurs first in EDT and again in
    EST, so it is 05:30 UTC, or 06:30 UTC with fold=1. 02:30 on 8 March 2026
    does not exist, because clocks jump from 02:00 to 03:00, so it is read
    with the EST offset as 07:30 UTC, which New York clocks show as 03:30.
    With fold=1 it would be read with the EDT offset, as 01:30 EST.
    """
    zone_name, naive = zone_and_naive
    zone = ZoneInfo(zone_name)
    offset_first = naive.replace(tzinfo=zone, fold=0).utcoffset()
    offset_second = naive.replace(tzinfo=zone, fold=1).utcoffset()
    fresh_queue()

    with timezone.override(zone):
        task = spec_tasks.record(schedule=naive)
    run_at = stored_run_at(task)
    wall = run_at.astimezone(zone).replace(tzinfo=None)

    if offset_first == offset_second:
        event("wall time occurs once")
        assert wall == naive
    elif offset_first > offset_second:
        # Clocks went back: the wall time occurs twice, once with each offset.
        event("wall time occurs twice")
        instants = sorted([naive - offset_first, naive - offset_second])
        assert wall == naive
        assert run_at.astimezone(UTC).replace(tzinfo=None) == instants[naive.fold]
    else:
        # Clocks went forward by the difference: the wall time never occurs.
        event("wall time never occurs")
        gap = offset_second - offset_first
        if naive.fold == 0:
            assert wall == naive + gap
        else:
            assert wall == naive - gap


@pytest.mark.rule(11)
@pytest.mark.parametrize("zone_name", ["UTC", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"])
def test_naive_now_means_now(zone_name):
    """With USE_TZ = True, a naive ``datetime.now()`` as schedule means now, whatever TIME_ZONE the project sets.

    On Unix, Django sets the process's local time zone to TIME_ZONE, which is
    also the default current time zone, so the local wall clock and the reading of
    naive schedules agree.
    """
    with override_settings(TIME_ZONE=zone_name):
        before = timezone.now()
        task = spec_tasks.record(schedule=datetime.now())
        after = timezone.now()

    assert before <= stored_run_at(task) <= after


@pytest.mark.rule(12)
@given(
    zone_name=st.sampled_from(ZONES),
    when=st.datetimes(
        min_value=datetime(1970, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.none() | st.timezones(),
    ),
)
@example(zone_name="Asia/Kathmandu", when=datetime(2026, 1, 1, 9, 0))
@example(zone_name="Asia/Kathmandu", when=datetime(2026, 1, 1, 9, 0, tzinfo=UTC))
def test_naive_storage_without_use_tz(zone_name, when):
    """With USE_TZ = False, a naive datetime is stored as given, and an aware one is converted to the current time zone and stored naive.

    With Asia/Kathmandu current, 09:00 UTC is stored as 14:45.
    """
    zone = ZoneInfo(zone_name)
    expected = when if when.tzinfo is None else when.astimezone(zone).replace(tzinfo=None)
    fresh_queue()

    with override_settings(USE_TZ=False), timezone.override(zone):
        task = spec_tasks.record(schedule=when)
        run_at = stored_run_at(task)

    assert run_at.tzinfo is None
    assert run_at == expected


@pytest.mark.rule(13)
@pytest.mark.parametrize("schedule, type_name", WRONG_TYPES)
def test_wrong_type_rejected_at_call(schedule, type_name):
    """A schedule at the call that is not a number, timedelta or datetime raises TypeError naming its type, and nothing is stored.

    A date is rejected too: it names a day, not an instant.
    """
    with pytest.raises(TypeError) as raised:
        spec_tasks.record("x", schedule=schedule)

    assert f"got {type_name}" in str(raised.value)
    assert adapter.queued_tasks() == []


@pytest.mark.rule(14)
@pytest.mark.parametrize("schedule, type_name", WRONG_TYPES)
def test_wrong_type_rejected_at_decoration(schedule, type_name):
    """A schedule in the decorator that is not a number, timedelta or datetime raises TypeError naming its type, at decoration time."""
    with pytest.raises(TypeError) as raised:
        adapter.background(schedule=schedule, name="spec.scheduling.wrong_type")

    assert f"got {type_name}" in str(raised.value)


@pytest.mark.rule(15)
@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param(10**12, id="10**12 seconds"),
        pytest.param(10**15, id="10**15 seconds"),
        pytest.param(1e300, id="1e300 seconds"),
        pytest.param(timedelta(days=3_000_000), id="3 million days"),
        pytest.param(timedelta.max, id="timedelta.max"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(float("-inf"), id="-inf"),
    ],
)
def test_unrepresentable_schedule_rejected(schedule):
    """A number or timedelta that puts run_at past the year 9999, or a NaN or infinite float, raises ValueError at the call naming the value, and nothing is stored.

    From 2026, 10**12 seconds (about 31,700 years) is past the year 9999.
    """
    with pytest.raises(ValueError) as raised:
        enqueue_at_now(schedule)

    assert f"schedule={schedule!r}" in str(raised.value)
    assert adapter.queued_tasks() == []


@pytest.mark.rule(16)
@pytest.mark.parametrize("schedule", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_nan_rejected_at_decoration(schedule):
    """A NaN or infinite float schedule in the decorator raises ValueError naming the value at decoration time.

    Such a schedule could never give a run_at, so accepting it would only make
    every later call of the task fail.
    """
    with pytest.raises(ValueError) as raised:
        adapter.background(schedule=schedule, name="spec.scheduling.not_a_number")

    assert f"schedule={schedule!r}" in str(raised.value)


@pytest.mark.rule(17)
@pytest.mark.parametrize(
    "instant",
    [
        datetime.max.replace(tzinfo=dt_timezone(timedelta(hours=-5))),
        datetime.min.replace(tzinfo=dt_timezone(timedelta(hours=5))),
    ],
    ids=["after year 9999 in UTC", "before year 1 in UTC"],
)
def test_datetime_out_of_range(instant):
    """An aware datetime whose instant falls outside the years 1 to 9999 in UTC raises ValueError naming the value, and nothing is stored."""
    with pytest.raises(ValueError) as raised:
        spec_tasks.record(schedule=instant)

    assert f"schedule={instant!r}" in str(raised.value)
    assert adapter.queued_tasks() == []
