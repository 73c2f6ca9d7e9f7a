"""Bulk reads for the exporter: every figure per user and model in O(users x models) rows."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Connection, func, or_, select

from ledger.limit_store import load_limit_config
from ledger.limits import LimitConfig, UserOverride, resolve_effective_limit
from ledger.periods import period_bounds
from ledger.schema import (
    TOKEN_COLUMNS,
    UNPRICED_TOKEN_COLUMNS,
    chats,
    group_limits,
    group_members,
    models,
    period_spend,
    usage_totals,
    user_limits,
    users,
)
from ledger.spend import LimitStatus
from ledger.tokens import TokenUsage


@dataclass(frozen=True, slots=True)
class LifetimeTotal:
    username: str
    model: str
    cost_micros: int
    messages: int
    unpriced_messages: int
    tokens: TokenUsage
    unpriced_tokens: TokenUsage


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    username: str
    name: str
    status: LimitStatus


def lifetime_totals(conn: Connection) -> list[LifetimeTotal]:
    # Read by position: 30k rows x 10 token columns per scrape make name lookups the hot spot.
    stmt = (select(users.c.username, models.c.name, usage_totals.c.cost_micros,
                   usage_totals.c.messages, usage_totals.c.unpriced_messages,
                   *(usage_totals.c[name] for name in (*TOKEN_COLUMNS, *UNPRICED_TOKEN_COLUMNS)))
            .join(users, users.c.id == usage_totals.c.user_id)
            .join(models, models.c.id == usage_totals.c.model_id)
            .order_by(users.c.username, models.c.name))
    return [LifetimeTotal(username=r[0], model=r[1], cost_micros=int(r[2]), messages=int(r[3]),
                          unpriced_messages=int(r[4]),
                          tokens=TokenUsage.from_counts(r[5:10]),
                          unpriced_tokens=TokenUsage.from_counts(r[10:15]))
            for r in conn.execute(stmt).all()]


def chats_per_user(conn: Connection) -> dict[str, int]:
    stmt = (select(users.c.username, func.count(chats.c.id).label("chats"))
            .join(chats, chats.c.user_id == users.c.id).group_by(users.c.username))
    return {row.username: int(row.chats) for row in conn.execute(stmt)}


def user_snapshots(conn: Connection, now: datetime, active_since: date,
                   config: LimitConfig | None = None) -> list[UserSnapshot]:
    """Limit status of every user who has a limit or spent since `active_since`.

    Sorted by spend (highest first), so a cap on series keeps the users that matter most.
    Reads one period row per user and the lifetime rows, never the daily rollup.
    """
    config = load_limit_config(conn) if config is None else config
    start, end = period_bounds(config.period, now)
    # One row per user of the period rollup, and the lifetime rows' last day: O(users x models).
    spend = {row.user_id: int(row.cost_micros) for row in conn.execute(
        select(period_spend.c.user_id, period_spend.c.cost_micros)
        .where(period_spend.c.period == config.period.value,
               period_spend.c.period_start == start.date()))}
    active = {row.user_id for row in conn.execute(
        select(usage_totals.c.user_id).where(usage_totals.c.last_day >= active_since).distinct())}
    overrides = {row.user_id: UserOverride(limit_micros=row.limit_micros,
                                           unlimited=row.limit_micros is None)
                 for row in conn.execute(select(user_limits))}
    groups_of: dict[int, list[int | None]] = defaultdict(list)
    for row in conn.execute(select(group_members.c.user_id, group_limits.c.limit_micros)
                            .select_from(group_members.outerjoin(
                                group_limits,
                                group_limits.c.group_id == group_members.c.group_id))):
        groups_of[row.user_id].append(row.limit_micros)

    snapshots = []
    for user in conn.execute(select(users.c.id, users.c.username, users.c.name)):
        limit = resolve_effective_limit(config, overrides.get(user.id), groups_of.get(user.id, []))
        if limit.limit_micros is None and user.id not in active:
            continue
        status = LimitStatus(user_id=user.id, username=user.username, period=config.period,
                             limit_micros=limit.limit_micros, limit_source=limit.source,
                             spent_micros=int(spend.get(user.id, 0)), period_start=start,
                             period_end=end)
        snapshots.append(UserSnapshot(username=user.username, name=user.name, status=status))
    snapshots.sort(key=lambda s: (-s.status.spent_micros, s.username))
    return snapshots


def models_in_use(conn: Connection) -> list[str]:
    stmt = select(models.c.name).where(or_(models.c.enabled.is_(True),
                                           models.c.seen_in_traffic.is_(True)))
    return [row.name for row in conn.execute(stmt.order_by(models.c.name))]
