"""UTC-aligned, half-open limit periods: day, week (Monday) and month (the 1st)."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def as_utc(moment: datetime) -> datetime:
    """Any aware datetime converted to UTC; naive datetimes are ambiguous and refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime refused (give a timezone): {moment.isoformat()}")
    return moment.astimezone(UTC)


def period_bounds(period: Period | str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the period containing `now`; `end` is when the limit resets."""
    return _bounds_on(Period(period), as_utc(now).date())


@functools.lru_cache(maxsize=64)
def _bounds_on(period: Period, day: date) -> tuple[datetime, datetime]:
    # Cached per day: every limit check asks for the same few bounds all day long.
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    match period:
        case Period.DAY:
            return midnight, midnight + timedelta(days=1)
        case Period.WEEK:
            start = midnight - timedelta(days=midnight.weekday())
            return start, start + timedelta(days=7)
        case Period.MONTH:
            start = midnight.replace(day=1)
            if start.month == 12:
                end = start.replace(year=start.year + 1, month=1)
            else:
                end = start.replace(month=start.month + 1)
            return start, end
    raise AssertionError(period)  # pragma: no cover - exhaustive match


def covering_periods(first: date, last: date) -> list[tuple[Period, date]]:
    """The fewest whole days, weeks and months, as (kind, start), that tile [first, last].

    Months where a whole one fits, weeks (Monday to Sunday) where a whole one fits without
    swallowing the start of a month that fits, days for the rest: a year is about a dozen
    months and a few weeks and days at its two ends, so a sum over `period_spend` reads a
    couple of dozen rows per user whatever the range, where the daily rows number hundreds.
    """
    if last < first:
        raise ValueError("the last day must not be before the first")
    cover: list[tuple[Period, date]] = []
    day = first
    while day <= last:
        month_end = _bounds_on(Period.MONTH, day)[1].date()
        if day.day == 1 and month_end - timedelta(days=1) <= last:
            cover.append((Period.MONTH, day))
            day = month_end
        elif day.weekday() == 0 and day + timedelta(days=6) <= last and not (
                month_end <= day + timedelta(days=6)
                and _bounds_on(Period.MONTH, month_end)[1].date() - timedelta(days=1) <= last):
            cover.append((Period.WEEK, day))
            day += timedelta(days=7)
        else:
            cover.append((Period.DAY, day))
            day += timedelta(days=1)
    return cover
