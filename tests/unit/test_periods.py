from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from ledger.periods import Period, covering_periods, period_bounds


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        (utc(2026, 1, 31, 23, 59, 59), utc(2026, 1, 1), utc(2026, 2, 1)),
        (utc(2026, 12, 15), utc(2026, 12, 1), utc(2027, 1, 1)),
        (utc(2028, 2, 29, 12), utc(2028, 2, 1), utc(2028, 3, 1)),
        (utc(2026, 4, 30, 23, 59, 59, 999999), utc(2026, 4, 1), utc(2026, 5, 1)),
    ],
)
def test_month_bounds(now: datetime, start: datetime, end: datetime) -> None:
    assert period_bounds(Period.MONTH, now) == (start, end)


def test_leap_day_is_its_own_day() -> None:
    assert period_bounds("day", utc(2028, 2, 29, 8)) == (utc(2028, 2, 29), utc(2028, 3, 1))


def test_week_runs_monday_to_monday() -> None:
    sunday_night = utc(2026, 11, 22, 23, 59, 59)  # a Sunday
    assert sunday_night.weekday() == 6
    assert period_bounds(Period.WEEK, sunday_night) == (utc(2026, 11, 16), utc(2026, 11, 23))
    monday = utc(2026, 11, 23)
    assert period_bounds(Period.WEEK, monday) == (utc(2026, 11, 23), utc(2026, 11, 30))


@pytest.mark.parametrize("period", list(Period))
def test_boundary_instant_belongs_to_the_new_period(period: Period) -> None:
    start, end = period_bounds(period, utc(2026, 3, 1))
    assert start == utc(2026, 3, 1) if period is not Period.WEEK else start <= utc(2026, 3, 1)
    # Half-open: the end instant starts the next period.
    next_start, _ = period_bounds(period, end)
    assert next_start == end
    previous_start, previous_end = period_bounds(period, end - timedelta(microseconds=1))
    assert (previous_start, previous_end) == (start, end)


def test_aware_input_is_converted_to_utc() -> None:
    # 01:30 on the 1st in UTC+2 is still the previous month in UTC.
    local = datetime(2026, 6, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert period_bounds(Period.MONTH, local) == (utc(2026, 5, 1), utc(2026, 6, 1))
    assert period_bounds(Period.DAY, local) == (utc(2026, 5, 31), utc(2026, 6, 1))


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        period_bounds(Period.DAY, datetime(2026, 1, 1))


def test_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError):
        period_bounds("year", utc(2026, 1, 1))


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def test_covering_periods_tile_every_range_exactly_once() -> None:
    base = date(2026, 1, 20)
    for offset in range(0, 70, 3):
        first = base + timedelta(days=offset)
        for length in (0, 1, 5, 6, 7, 13, 27, 31, 45, 64, 100, 400):
            last = first + timedelta(days=length)
            covered = []
            for period, start in covering_periods(first, last):
                begin, end = period_bounds(period, datetime(start.year, start.month, start.day,
                                                            tzinfo=UTC))
                assert begin.date() == start  # a whole period, from its start
                covered += _days(start, end.date() - timedelta(days=1))
            assert covered == _days(first, last)


def test_covering_periods_take_months_then_weeks_then_days() -> None:
    # 400 days back from Sunday 6 December 2026: 13 whole months and six days.
    year = covering_periods(date(2025, 11, 1), date(2026, 12, 6))
    assert [p for p, _ in year] == [Period.MONTH] * 13 + [Period.DAY] * 6
    # 30 days: Friday to Sunday, then four Monday-to-Sunday weeks (December does not fit).
    assert covering_periods(date(2026, 11, 6), date(2026, 12, 6)) == [
        (Period.DAY, date(2026, 11, 6)), (Period.DAY, date(2026, 11, 7)),
        (Period.DAY, date(2026, 11, 8)), (Period.WEEK, date(2026, 11, 9)),
        (Period.WEEK, date(2026, 11, 16)), (Period.WEEK, date(2026, 11, 23)),
        (Period.WEEK, date(2026, 11, 30))]
    # A week that would swallow the start of a month that fits gives way to days.
    assert covering_periods(date(2026, 10, 26), date(2026, 11, 30)) == [
        *((Period.DAY, date(2026, 10, d)) for d in range(26, 32)),
        (Period.MONTH, date(2026, 11, 1))]


def test_covering_periods_refuse_a_reversed_range() -> None:
    with pytest.raises(ValueError):
        covering_periods(date(2026, 2, 2), date(2026, 2, 1))
