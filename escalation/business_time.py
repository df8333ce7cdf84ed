"""Business time: open hours of a clinic calendar, counted across nights, weekends, public
holidays, local closures and daylight-saving changes.

Pure: no Django, no clock. Instants go in aware (any zone) and come out aware in UTC. Open
hours are wall-clock intervals of the calendar's zone, turned into UTC instants one local day
at a time: on a 23- or 25-hour day they keep their wall times and count the real minutes.

Wall times that do not exist or occur twice on a daylight-saving day are resolved so that an
interval covers every instant whose wall time falls inside it:

- a time skipped by spring-forward means the moment the clock jumps past it;
- a repeated time (fall-back) opens at its first occurrence and closes at its second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

MIDNIGHT = time(0, 0)
# How far ahead a search for open time may look before it gives up on the calendar.
SEARCH_LIMIT = timedelta(days=3653)

_ONE_DAY = timedelta(days=1)
_US_PER_MINUTE = 60_000_000

Interval = tuple[datetime, datetime]


def _zone(key: str) -> tzinfo:
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"unknown time zone {key!r}; use an IANA name such as 'America/New_York'"
        ) from error


@dataclass(frozen=True)
class Calendar:
    time_zone: str
    # weekday (0 = Monday) -> open intervals [start, end) in local wall time; an end of
    # time(0, 0) means midnight at the end of the day; a missing weekday is closed.
    hours: Mapping[int, tuple[tuple[time, time], ...]] = field(hash=False)
    closed_dates: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        _zone(self.time_zone)
        for weekday, intervals in self.hours.items():
            if weekday not in range(7):
                raise ValueError(f"weekday {weekday!r} is not 0 (Monday) to 6 (Sunday)")
            for start, end in intervals:
                if start.tzinfo is not None or end.tzinfo is not None:
                    raise ValueError(
                        f"opening hours {start}-{end} carry a time zone; give plain wall "
                        f"times, the calendar's zone is {self.time_zone!r}"
                    )
                if end != MIDNIGHT and end <= start:
                    raise ValueError(
                        f"opening hours {start}-{end} on weekday {weekday} end before they "
                        "start; split an overnight shift at midnight (end time(0, 0))"
                    )


ALWAYS = Calendar(time_zone="UTC", hours={day: ((MIDNIGHT, MIDNIGHT),) for day in range(7)})


def calendar_from(
    *,
    time_zone: str,
    hours: Mapping[int, Sequence[tuple[time, time]]],
    country: str = "",
    subdivision: str = "",
    closures: Iterable[date] = (),
    years: Iterable[int] = (),
) -> Calendar:
    """A calendar whose closed dates are `closures` plus the public holidays of `country`
    (and `subdivision`) in `years`."""
    closed = set(closures)
    years = sorted(set(years))
    if country:
        if not years:
            raise ValueError(
                f"no years given for the public holidays of {country!r}; pass years=[...] "
                "covering the dates the calendar will be used for"
            )
        try:
            public = holidays.country_holidays(country, subdiv=subdivision or None, years=years)
        except NotImplementedError as error:
            raise ValueError(
                f"unknown country or subdivision {country!r}/{subdivision!r} for public "
                f"holidays: {error}"
            ) from error
        closed.update(public.keys())
    elif subdivision:
        raise ValueError(f"subdivision {subdivision!r} given without a country")
    return Calendar(
        time_zone=time_zone,
        hours={day: tuple((start, end) for start, end in spans) for day, spans in hours.items()},
        closed_dates=frozenset(closed),
    )


def is_open(cal: Calendar, moment: datetime) -> bool:
    moment = _utc(moment, "moment")
    for start, end in _open_intervals(cal, moment - _ONE_DAY, moment + _ONE_DAY):
        if start <= moment < end:
            return True
    return False


def next_opening(cal: Calendar, moment: datetime) -> datetime:
    """The first open instant at or after `moment` (`moment` itself when open), in UTC."""
    return _walk(cal, _utc(moment, "moment"), timedelta(), ())


def add_business_minutes(cal: Calendar, start: datetime, minutes: float) -> datetime:
    """The instant when `minutes` of open time have passed after `start`, in UTC. Counting
    starts at the next opening when `start` falls in closed time; 0 minutes is `start`."""
    return deadline(cal, start, minutes)


def deadline(
    cal: Calendar,
    start: datetime,
    minutes: float,
    *,
    paused: Sequence[tuple[datetime, datetime]] = (),
) -> datetime:
    """When `minutes` business minutes have run from `start`, the clock standing still during
    the `paused` intervals (a task waiting in holding)."""
    start = _utc(start, "start")
    remaining = timedelta(microseconds=_microseconds(minutes))
    if not remaining:
        # The earliest instant by which no time at all has passed: now, open or not. This keeps
        # adding in two steps equal to adding once when the first step ends at closing time.
        _require_hours(cal)
        return start
    return _walk(cal, start, remaining, paused)


def business_minutes_between(cal: Calendar, start: datetime, end: datetime) -> float:
    """Open minutes in [start, end); 0 when end <= start."""
    start = _utc(start, "start")
    end = _utc(end, "end")
    if end <= start:
        return 0.0
    total = timedelta()
    for open_at, close_at in _open_intervals(cal, start, end):
        if open_at >= end:
            break
        if close_at > start:
            total += min(close_at, end) - max(open_at, start)
    return (total // timedelta(microseconds=1)) / _US_PER_MINUTE


# Internals


def _require_hours(cal: Calendar) -> None:
    if not any(cal.hours.values()):
        raise ValueError(
            "the calendar has no opening hours, so business time never passes; add open "
            "intervals to its weekly hours (or use ALWAYS for around-the-clock targets)"
        )


def _walk(
    cal: Calendar,
    start: datetime,
    remaining: timedelta,
    paused: Sequence[tuple[datetime, datetime]],
) -> datetime:
    """The instant when `remaining` open, unpaused time has passed since `start`; with nothing
    remaining, the first open, unpaused instant."""
    _require_hours(cal)
    intervals = _open_intervals(cal, start, _add_capped(start, SEARCH_LIMIT))
    if paused:
        intervals = _subtract(intervals, _merge(_utc_spans(paused)))
    for open_at, close_at in intervals:
        open_at = max(open_at, start)
        if open_at >= close_at:
            continue
        if remaining <= close_at - open_at:
            return open_at + remaining
        remaining -= close_at - open_at
    raise ValueError(
        f"the calendar has no open time left within 10 years after {start.isoformat()}; "
        "check its weekly hours and closed dates"
    )


def _open_intervals(cal: Calendar, since: datetime, until: datetime) -> Iterator[Interval]:
    """Disjoint open intervals in UTC, in order, from the local day before `since` to the local
    day after `until` (callers clip). Intervals may touch; they never overlap."""
    zone = _zone(cal.time_zone)
    day = since.astimezone(zone).date() - _ONE_DAY
    last_day = until.astimezone(zone).date() + _ONE_DAY
    last_end: datetime | None = None
    while day <= last_day:
        for start, end in _day_intervals(cal, day, zone):
            # A repeated midnight can make two days overlap; never count an instant twice.
            if last_end is not None and start < last_end:
                start = last_end
            if start < end:
                yield start, end
                last_end = end
        if day == date.max:
            return
        day += _ONE_DAY


def _day_intervals(cal: Calendar, day: date, zone: tzinfo) -> list[Interval]:
    spans = cal.hours.get(day.weekday())
    if not spans or day in cal.closed_dates:
        return []
    wall = sorted(
        (
            datetime.combine(day, start),
            datetime.combine(day + _ONE_DAY if end == MIDNIGHT else day, end),
        )
        for start, end in spans
    )
    merged: list[list[datetime]] = []
    for start, end in wall:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    result = []
    for start, end in merged:
        opens = _instant(start, zone, last=False)
        closes = _instant(end, zone, last=True)
        if opens < closes:
            result.append((opens, closes))
    return result


def _instant(wall: datetime, zone: tzinfo, *, last: bool) -> datetime:
    """The UTC instant of a local wall time: a skipped time is the moment of the jump; a
    repeated time is its first occurrence, or its second when `last`."""
    early = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    late = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if early.astimezone(zone).replace(tzinfo=None) != wall:
        # In a gap fold=0 applies the offset before the jump (the later instant) and fold=1
        # the one after; the jump lies between them. Offsets change on whole seconds.
        after = max(early, late).astimezone(zone).utcoffset()
        lo = math.floor(min(early, late).timestamp())
        hi = math.ceil(max(early, late).timestamp())
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == after:
                hi = mid
            else:
                lo = mid
        return datetime.fromtimestamp(hi, UTC)
    return max(early, late) if last else min(early, late)


def _subtract(intervals: Iterable[Interval], holes: list[Interval]) -> Iterator[Interval]:
    index = 0
    for start, end in intervals:
        while index < len(holes) and holes[index][1] <= start:
            index += 1
        cursor = start
        scan = index
        while scan < len(holes) and holes[scan][0] < end:
            hole_start, hole_end = holes[scan]
            if hole_start > cursor:
                yield cursor, hole_start
            cursor = max(cursor, hole_end)
            if cursor >= end:
                break
            scan += 1
        if cursor < end:
            yield cursor, end


def _merge(spans: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(span for span in spans if span[0] < span[1]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _utc_spans(spans: Iterable[tuple[datetime, datetime]]) -> Iterator[Interval]:
    for start, end in spans:
        yield _utc(start, "paused start"), _utc(end, "paused end")


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} {moment.isoformat()} has no time zone; pass an aware datetime")
    return moment.astimezone(UTC)


def _microseconds(minutes: float) -> int:
    if not math.isfinite(minutes) or minutes < 0:
        raise ValueError(f"business minutes must be a finite number >= 0, not {minutes!r}")
    return round(minutes * _US_PER_MINUTE)


def _add_capped(moment: datetime, delta: timedelta) -> datetime:
    try:
        return moment + delta
    except OverflowError:
        return datetime(9998, 12, 31, tzinfo=UTC)
