"""Spend in the current period and the limit status that a check or a status page needs.

`period_spend` holds each user's spend per day, week and month as they happen, so the status of
a user is one statement reading one row of spend whatever the configured period; the daily
rollup answers arbitrary ranges (`spend_in_period`) in O(days x models).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Date,
    DateTime,
    Select,
    and_,
    bindparam,
    case,
    func,
    literal,
    select,
)

from ledger.keys import KeyOwner, hash_key
from ledger.limits import GroupPolicy, LimitConfig, LimitSource, UserOverride
from ledger.limits import resolve_effective_limit as _resolve
from ledger.periods import Period, as_utc, period_bounds
from ledger.schema import (
    api_keys,
    daily_usage,
    group_limits,
    group_members,
    limit_config,
    period_spend,
    reservations,
    user_limits,
    users,
)


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


@functools.cache
def _status_statement(by: str, include_reservations: bool) -> Select[Any]:
    """Everything a status needs for one user (`by` "user" or "key"), built once.

    Binds: day_start, week_start, month_start, now, and user_id or key_hash.
    """
    period = func.coalesce(limit_config.c.period, literal(Period.MONTH.value))
    current_start = case((period == Period.DAY.value, bindparam("day_start", type_=Date)),
                         (period == Period.WEEK.value, bindparam("week_start", type_=Date)),
                         else_=bindparam("month_start", type_=Date))
    spent = (select(period_spend.c.cost_micros)
             .where(period_spend.c.user_id == users.c.id, period_spend.c.period == period,
                    period_spend.c.period_start == current_start)
             .scalar_subquery())

    def group_limit(aggregate: Any) -> Any:
        return (select(aggregate(group_limits.c.limit_micros))
                .select_from(group_limits.join(
                    group_members, group_members.c.group_id == group_limits.c.group_id))
                .where(group_members.c.user_id == users.c.id).scalar_subquery())

    columns = [
        users.c.id.label("user_id"), users.c.username,
        limit_config.c.enabled, period.label("period"), limit_config.c.default_limit_micros,
        limit_config.c.group_policy,
        user_limits.c.user_id.label("has_override"), user_limits.c.limit_micros.label("override"),
        group_limit(func.min).label("lowest_group"),
        group_limit(func.max).label("highest_group"),
        func.coalesce(spent, 0).label("spent"),
    ]
    if include_reservations:
        held = (select(func.coalesce(func.sum(reservations.c.amount_micros), 0))
                .where(reservations.c.user_id == users.c.id,
                       reservations.c.expires_at > bindparam("now", type_=DateTime(True)))
                .scalar_subquery())
        columns.append(held.label("reserved"))
    stmt = (select(*columns)
            .select_from(users.outerjoin(limit_config, limit_config.c.id == 1)
                         .outerjoin(user_limits, user_limits.c.user_id == users.c.id)))
    if by == "user":
        return stmt.where(users.c.id == bindparam("user_id"))
    return (stmt.add_columns(api_keys.c.id.label("key_id"), users.c.suspended)
            .join(api_keys, and_(api_keys.c.user_id == users.c.id,
                                 api_keys.c.key_hash == bindparam("key_hash"),
                                 api_keys.c.revoked_at.is_(None))))


def _status_params(now: datetime) -> dict[str, Any]:
    now = as_utc(now)
    return {**_period_starts(now.date()), "now": now}


@functools.lru_cache(maxsize=8)
def _period_starts(day: date) -> dict[str, date]:
    # Shared, never mutated: callers copy it into their own parameter dict.
    return {f"{p.value}_start": period_bounds(p, datetime(day.year, day.month, day.day,
                                                             tzinfo=UTC))[0].date()
            for p in Period}


def _status_from_row(row: Any, now: datetime) -> LimitStatus:
    period = Period(row.period)
    config = LimitConfig(enabled=bool(row.enabled), period=period,
                         default_limit_micros=row.default_limit_micros,
                         group_policy=GroupPolicy(row.group_policy or GroupPolicy.LOWEST.value))
    override = (UserOverride(limit_micros=row.override, unlimited=row.override is None)
                if row.has_override is not None else None)
    limit = _resolve(config, override, [row.lowest_group, row.highest_group])
    start, end = period_bounds(period, now)
    spent = int(row.spent) + int(getattr(row, "reserved", 0) or 0)
    return LimitStatus(user_id=row.user_id, username=row.username, period=period,
                       limit_micros=limit.limit_micros, limit_source=limit.source,
                       spent_micros=spent, period_start=start, period_end=end)


def limit_status(conn: Connection, user_id: int, now: datetime,
                 include_reservations: bool = False) -> LimitStatus:
    """Effective limit and spend in the current period (one statement)."""
    row = conn.execute(_status_statement("user", include_reservations),
                       {**_status_params(now), "user_id": user_id}).one()
    return _status_from_row(row, now)


def check_key_statement(include_reservations: bool = False) -> Select[Any]:
    """The statement behind `check_key`, for callers that run it on a driver connection."""
    return _status_statement("key", include_reservations)


def check_key_params(key_hash: str, now: datetime) -> dict[str, Any]:
    """The statement's binds for the key with this hash (`ledger.keys.hash_key`)."""
    return {**_status_params(now), "key_hash": key_hash}


def check_key_result(row: Any, now: datetime) -> tuple[KeyOwner, LimitStatus] | None:
    """`check_key`'s answer from the statement's row (None: no row, unknown or revoked key)."""
    if row is None:
        return None
    status = _status_from_row(row, now)
    owner = KeyOwner(user_id=row.user_id, username=row.username, key_id=row.key_id,
                     suspended=bool(row.suspended))
    return owner, status


def check_key(conn: Connection, secret: str, now: datetime,
              include_reservations: bool = False) -> tuple[KeyOwner, LimitStatus] | None:
    """The key's owner and their status in one statement; None for an unknown or revoked key.

    This is the limiter's hot path: one round trip to the ledger per request.
    """
    row = conn.execute(check_key_statement(include_reservations),
                       check_key_params(hash_key(secret), now)).first()
    return check_key_result(row, now)
