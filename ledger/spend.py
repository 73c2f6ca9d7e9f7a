"""Spend in the current period and the limit status a check or a status page needs.

Every period starts at 00:00 UTC, so the period's spend is a sum over whole days of the daily
rollup: O(days x models) whatever the number of messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from ledger.limit_store import effective_limit, load_limit_config
from ledger.limits import LimitConfig, LimitSource
from ledger.periods import Period, as_utc, period_bounds
from ledger.schema import daily_usage, reservations, users


@dataclass(frozen=True, slots=True)
class LimitStatus:
    user_id: int
    username: str
    period: Period
    limit_micros: int | None
    limit_source: LimitSource
    spent_micros: int
    period_start: datetime
    period_end: datetime

    @property
    def is_limited(self) -> bool:
        return self.limit_micros is not None

    @property
    def blocked(self) -> bool:
        return self.limit_micros is not None and self.spent_micros >= self.limit_micros

    @property
    def utilization(self) -> float | None:
        if not self.limit_micros:
            return None
        return self.spent_micros / self.limit_micros


def spend_in_period(conn: Connection, user_id: int, start: datetime, end: datetime) -> int:
    """Priced cost of the user's messages with start <= created_at < end (day-aligned bounds)."""
    start, end = as_utc(start), as_utc(end)
    if start.time() != datetime.min.time() or end.time() != datetime.min.time():
        raise ValueError("spend_in_period needs bounds at 00:00 UTC (periods are day-aligned)")
    stmt = select(func.coalesce(func.sum(daily_usage.c.cost_micros), 0)).where(
        daily_usage.c.user_id == user_id,
        daily_usage.c.day >= start.date(),
        daily_usage.c.day < end.date(),
    )
    return int(conn.execute(stmt).scalar_one())


def reserved_micros(conn: Connection, user_id: int, now: datetime) -> int:
    stmt = select(func.coalesce(func.sum(reservations.c.amount_micros), 0)).where(
        reservations.c.user_id == user_id, reservations.c.expires_at > as_utc(now))
    return int(conn.execute(stmt).scalar_one())


def limit_status(conn: Connection, user_id: int, now: datetime,
                 include_reservations: bool = False,
                 config: LimitConfig | None = None) -> LimitStatus:
    config = load_limit_config(conn) if config is None else config
    start, end = period_bounds(config.period, now)
    limit = effective_limit(conn, user_id, config)
    username = conn.execute(select(users.c.username).where(users.c.id == user_id)).scalar_one()
    spent = spend_in_period(conn, user_id, start, end)
    if include_reservations:
        spent += reserved_micros(conn, user_id, now)
    return LimitStatus(user_id=user_id, username=username, period=config.period,
                       limit_micros=limit.limit_micros, limit_source=limit.source,
                       spent_micros=spent, period_start=start, period_end=end)
