from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escalation.business_time import (
    ALWAYS,
    Calendar,
    add_business_minutes,
    business_minutes_between,
    calendar_from,
    deadline,
    is_open,
    next_opening,
)

NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS_8_TO_17 = {day: ((time(8), time(17)),) for day in range(5)}
WEEKDAYS_WITH_LUNCH = {day: ((time(8), time(12)), (time(13), time(17))) for day in range(5)}
AROUND_THE_CLOCK = {day: ((time(0), time(0)),) for day in range(7)}

CLINIC = calendar_from(
    time_zone="America/New_York", hours=WEEKDAYS_8_TO_17, country="US", years=[2025, 2026, 2027]
)
LUNCH_CLINIC = calendar_from(time_zone="America/New_York", hours=WEEKDAYS_WITH_LUNCH)
NEW_YORK_24_7 = calendar_from(time_zone="America/New_York", hours=AROUND_THE_CLOCK)
# A night service that opens in the small hours, across both daylight-saving changes.
NIGHT_DESK = calendar_from(
    time_zone="America/New_York",
    hours={day: ((time(0), time(6)), (time(22), time(0))) for day in range(7)},
)


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NEW_YORK)


def two_hours_from(cal: Calendar, start: datetime) -> datetime:
    return add_business_minutes(cal, start, 120).astimezone(NEW_YORK)


# Weekends, nights, holidays, closures


def test_friday_afternoon_request_with_two_hour_target_is_due_monday_morning():
    assert two_hours_from(CLINIC, ny(2026, 11, 20, 16, 30)) == ny(2026, 11, 23, 9, 30)


def test_result_is_utc():
    due = add_business_minutes(CLINIC, ny(2026, 11, 20, 16, 30), 120)
    assert due.tzinfo is UTC
    assert due == datetime(2026, 11, 23, 14, 30, tzinfo=UTC)


def test_spring_forward_weekend_keeps_wall_clock_opening():
    # 2026-03-08 02:00 EST -> 03:00 EDT; Monday opens at 08:00 EDT, an hour earlier in UTC.
    due = add_business_minutes(CLINIC, ny(2026, 3, 6, 16, 30), 120)
    assert due.astimezone(NEW_YORK) == ny(2026, 3, 9, 9, 30)
    assert due == datetime(2026, 3, 9, 13, 30, tzinfo=UTC)


def test_fall_back_weekend_keeps_wall_clock_opening():
    # 2026-11-01 02:00 EDT -> 01:00 EST.
    due = add_business_minutes(CLINIC, ny(2026, 10, 30, 16, 30), 120)
    assert due.astimezone(NEW_YORK) == ny(2026, 11, 2, 9, 30)
    assert due == datetime(2026, 11, 2, 14, 30, tzinfo=UTC)


def test_around_the_clock_local_calendar_counts_23_and_25_hour_days():
    spring = business_minutes_between(NEW_YORK_24_7, ny(2026, 3, 8), ny(2026, 3, 9))
    fall = business_minutes_between(NEW_YORK_24_7, ny(2026, 11, 1), ny(2026, 11, 2))
    assert (spring, fall) == (23 * 60, 25 * 60)


def test_night_shift_counts_real_minutes_across_daylight_saving_nights():
    # Sunday 00:00-06:00 lasts 5 real hours in spring and 7 in autumn.
    assert business_minutes_between(NIGHT_DESK, ny(2026, 3, 8), ny(2026, 3, 8, 12)) == 5 * 60
    assert business_minutes_between(NIGHT_DESK, ny(2026, 11, 1), ny(2026, 11, 1, 12)) == 7 * 60
    # Saturday 22:00 + 5 hours of night desk: 2 hours before midnight, 3 real hours after.
    assert add_business_minutes(NIGHT_DESK, ny(2026, 3, 7, 22), 300) == ny(2026, 3, 8, 4)
    assert add_business_minutes(NIGHT_DESK, ny(2026, 10, 31, 22), 300) == datetime(
        2026, 11, 1, 7, tzinfo=UTC
    )


def test_opening_at_a_skipped_wall_time_opens_when_the_clock_jumps():
    cal = Calendar(time_zone="America/New_York", hours={6: ((time(2, 30), time(6)),)})
    assert next_opening(cal, ny(2026, 3, 7)) == ny(2026, 3, 8, 3)
    assert business_minutes_between(cal, ny(2026, 3, 8), ny(2026, 3, 9)) == 3 * 60


def test_repeated_wall_time_closes_at_its_second_occurrence():
    cal = Calendar(time_zone="America/New_York", hours={6: ((time(0), time(1, 30)),)})
    assert business_minutes_between(cal, ny(2026, 11, 1), ny(2026, 11, 2)) == 150
    assert is_open(cal, datetime(2026, 11, 1, 6, 15, tzinfo=UTC))  # 01:15 EST, second pass


def test_thanksgiving_is_skipped():
    assert two_hours_from(CLINIC, ny(2026, 11, 25, 16, 30)) == ny(2026, 11, 27, 9, 30)
    assert not is_open(CLINIC, ny(2026, 11, 26, 10))


def test_local_closure_is_skipped():
    cal = calendar_from(
        time_zone="America/New_York", hours=WEEKDAYS_8_TO_17, closures=[date(2026, 11, 23)]
    )
    assert two_hours_from(cal, ny(2026, 11, 20, 16, 30)) == ny(2026, 11, 24, 9, 30)


def test_starting_before_opening_counts_from_opening():
    assert add_business_minutes(LUNCH_CLINIC, ny(2026, 11, 23, 7), 30) == ny(2026, 11, 23, 8, 30)


def test_starting_during_lunch_counts_from_the_afternoon_opening():
    assert add_business_minutes(LUNCH_CLINIC, ny(2026, 11, 23, 12, 30), 90) == ny(
        2026, 11, 23, 14, 30
    )


def test_target_spanning_lunch_skips_it():
    assert add_business_minutes(LUNCH_CLINIC, ny(2026, 11, 23, 11, 30), 60) == ny(
        2026, 11, 23, 13, 30
    )
    assert business_minutes_between(LUNCH_CLINIC, ny(2026, 11, 23, 7), ny(2026, 11, 24, 7)) == 480


def test_target_ending_at_closing_time_is_due_at_closing_time():
    assert add_business_minutes(CLINIC, ny(2026, 11, 20, 16), 60) == ny(2026, 11, 20, 17)


def test_zero_target_is_due_at_once_even_at_closing_time():
    closing = add_business_minutes(CLINIC, ny(2026, 11, 20, 16), 60)
    assert add_business_minutes(CLINIC, closing, 0) == closing
    assert add_business_minutes(CLINIC, closing, 30) == ny(2026, 11, 23, 8, 30)
    assert add_business_minutes(CLINIC, ny(2026, 11, 21, 12), 0) == ny(2026, 11, 21, 12)


def test_calendar_is_hashable_and_compares_by_value():
    again = calendar_from(
        time_zone="America/New_York", hours=WEEKDAYS_8_TO_17, country="US", years=[2025, 2026, 2027]
    )
    assert again == CLINIC
    assert hash(again) == hash(CLINIC)


def test_always_is_wall_clock():
    # Elapsed real time, across the New York spring-forward night too.
    start = ny(2026, 3, 7, 23, 15).astimezone(UTC)
    assert add_business_minutes(ALWAYS, start, 3 * 1440 + 0.5) == start + timedelta(
        days=3, seconds=30
    )
    assert business_minutes_between(ALWAYS, start, start + timedelta(days=2)) == 2 * 1440
    assert is_open(ALWAYS, start)


def test_business_minutes_between_is_zero_over_a_weekend():
    assert business_minutes_between(CLINIC, ny(2026, 11, 20, 17), ny(2026, 11, 23, 8)) == 0


def test_business_minutes_between_is_zero_when_end_is_not_after_start():
    start = ny(2026, 11, 23, 10)
    assert business_minutes_between(CLINIC, start, start) == 0
    assert business_minutes_between(CLINIC, start, start - timedelta(hours=1)) == 0


def test_is_open_and_next_opening():
    assert is_open(CLINIC, ny(2026, 11, 23, 8))
    assert not is_open(CLINIC, ny(2026, 11, 23, 17))
    assert next_opening(CLINIC, ny(2026, 11, 23, 10)) == ny(2026, 11, 23, 10)
    assert next_opening(CLINIC, ny(2026, 11, 21, 10)) == ny(2026, 11, 23, 8)


# Pauses


def test_pause_during_open_time_pushes_the_deadline_back():
    start = ny(2026, 11, 23, 9)
    paused = [(ny(2026, 11, 23, 10), ny(2026, 11, 23, 10, 45))]
    assert deadline(CLINIC, start, 120) == ny(2026, 11, 23, 11)
    assert deadline(CLINIC, start, 120, paused=paused) == ny(2026, 11, 23, 11, 45)


def test_pause_during_closed_time_changes_nothing():
    start = ny(2026, 11, 20, 16, 30)
    paused = [(ny(2026, 11, 21, 9), ny(2026, 11, 22, 9))]
    assert deadline(CLINIC, start, 120, paused=paused) == ny(2026, 11, 23, 9, 30)


def test_pause_spanning_an_opening_delays_counting_until_it_ends():
    start = ny(2026, 11, 23, 7)
    paused = [
        (ny(2026, 11, 23, 6), ny(2026, 11, 23, 9)),
        (ny(2026, 11, 23, 8, 30), ny(2026, 11, 23, 9, 30)),
    ]
    assert deadline(CLINIC, start, 30, paused=paused) == ny(2026, 11, 23, 10)


# Refusals


def test_calendar_with_no_hours_raises_naming_the_fix():
    empty = Calendar(time_zone="America/New_York", hours={})
    with pytest.raises(ValueError, match="add open intervals to its weekly hours"):
        add_business_minutes(empty, ny(2026, 11, 23, 9), 60)
    with pytest.raises(ValueError, match="weekly hours"):
        next_opening(empty, ny(2026, 11, 23, 9))
    assert business_minutes_between(empty, ny(2026, 11, 23), ny(2026, 11, 30)) == 0


def test_calendar_closed_for_ten_years_raises_instead_of_looping():
    cal = Calendar(
        time_zone="UTC",
        hours={0: ((time(8), time(9)),)},
        closed_dates=frozenset(date(2026, 1, 1) + timedelta(days=n) for n in range(4000)),
    )
    with pytest.raises(ValueError, match="within 10 years"):
        add_business_minutes(cal, datetime(2026, 1, 1, tzinfo=UTC), 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hours": {0: ((time(17), time(8)),)}}, "split an overnight shift"),
        ({"hours": {7: ((time(8), time(17)),)}}, "weekday 7"),
        ({"hours": {}, "time_zone": "Mars/Olympus"}, "unknown time zone"),
        ({"hours": {}, "country": "XX", "years": [2026]}, "unknown country"),
    ],
)
def test_bad_calendar_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        calendar_from(**{"time_zone": "UTC", **kwargs})


def test_public_holidays_need_years():
    with pytest.raises(ValueError, match="years"):
        calendar_from(time_zone="UTC", hours=WEEKDAYS_8_TO_17, country="US")


def test_naive_datetime_and_negative_minutes_are_refused():
    with pytest.raises(ValueError, match="aware"):
        add_business_minutes(CLINIC, datetime(2026, 11, 23, 9), 60)
    with pytest.raises(ValueError, match=">= 0"):
        add_business_minutes(CLINIC, ny(2026, 11, 23, 9), -1)


# Properties

calendars = st.sampled_from([CLINIC, LUNCH_CLINIC, NEW_YORK_24_7, NIGHT_DESK, ALWAYS])
instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
minutes = st.floats(min_value=0, max_value=20_000, allow_nan=False, allow_infinity=False)
whole_minutes = st.integers(min_value=0, max_value=10_000)
pauses = st.lists(
    st.tuples(instants, st.integers(min_value=1, max_value=5 * 1440)).map(
        lambda pair: (pair[0], pair[0] + timedelta(minutes=pair[1]))
    ),
    max_size=4,
)
properties = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@properties
@given(cal=calendars, start=instants, amount=minutes)
def test_business_minutes_between_undoes_add_business_minutes(cal, start, amount):
    due = add_business_minutes(cal, start, amount)
    assert business_minutes_between(cal, start, due) == pytest.approx(amount, abs=1e-6)


@properties
@given(cal=calendars, start=instants, amount=minutes)
def test_round_trip_from_an_open_instant(cal, start, amount):
    opening = next_opening(cal, start)
    assert is_open(cal, opening)
    due = add_business_minutes(cal, opening, amount)
    assert business_minutes_between(cal, opening, due) == pytest.approx(amount, abs=1e-6)
    assert business_minutes_between(cal, start, due) >= amount - 1e-6


@properties
@given(cal=calendars, start=instants, first=minutes, second=minutes)
def test_add_business_minutes_is_monotonic(cal, start, first, second):
    low, high = sorted([first, second])
    assert add_business_minutes(cal, start, low) <= add_business_minutes(cal, start, high)


@properties
@given(cal=calendars, start=instants, amount=minutes, paused=pauses)
def test_pausing_never_shortens_a_deadline(cal, start, amount, paused):
    assert deadline(cal, start, amount, paused=paused) >= deadline(cal, start, amount)


@properties
@given(cal=calendars, start=instants, first=whole_minutes, second=whole_minutes)
def test_adding_in_two_steps_equals_adding_once(cal, start, first, second):
    halfway = add_business_minutes(cal, start, first)
    assert add_business_minutes(cal, halfway, second) == add_business_minutes(
        cal, start, first + second
    )


@properties
@given(cal=calendars, moment=instants)
def test_open_exactly_when_next_opening_is_now(cal, moment):
    assert is_open(cal, moment) == (next_opening(cal, moment) == moment)
