"""Bulk reads for the exporter: every figure per user and model in O(users x models) rows.

A scrape of 10,000 users reads ~30k lifetime rows on every scrape, so these reads keep both sides
cheap: the lifetime rows come by primary key with ids, not names (joining users and models and
sorting 30k rows by name cost PostgreSQL more than sending them), and each row becomes one
named tuple, not an object graph. The caller joins names from `user_snapshots` and `model_names`,
which it reads anyway. Results are fetched whole (`all()`): iterating a result row by row costs
a driver call per row.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from operator import attrgetter
from typing import NamedTuple

from sqlalchemy import Connection, func, or_, select

from ledger.limit_store import load_limit_config
from ledger.limits import (
    EffectiveLimit,
    LimitConfig,
    LimitSource,
    UserOverride,
    resolve_effective_limit,
)
from ledger.periods import period_bounds
from ledger.schema import (
    chats,
    group_limits,
    group_members,
    models,
    period_spend,
    usage_totals,
    user_limits,
    users,
)
from ledger.tokens import TOKEN_KINDS


class LifetimeTotal(NamedTuple):
    """Lifetime figures of one (user, model); the token counts are in `TOKEN_KINDS` order."""

    user_id: int
    model_id: int
    cost_micros: int
    messages: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    web_searches: int


# Where the token counts sit in a LifetimeTotal: `row[LIFETIME_TOKENS]` is one per TOKEN_KINDS.
LIFETIME_TOKENS = slice(4, 4 + len(TOKEN_KINDS))
_TOKEN_FIELDS = LifetimeTotal._fields[LIFETIME_TOKENS]
if tuple(f"{kind.value}_tokens" for kind in TOKEN_KINDS) != _TOKEN_FIELDS:
    raise RuntimeError("LifetimeTotal's token fields must follow ledger.tokens.TOKEN_KINDS")


class UserSnapshot(NamedTuple):
    """A user's effective limit and spend in the current period."""

    user_id: int
    username: str
    name: str
    spent_micros: int
    limit_micros: int | None
    limit_source: LimitSource


def lifetime_totals(conn: Connection) -> list[LifetimeTotal]:
    """Every (user, model) row of the lifetime totals, ordered by user id and model id."""
    stmt = (select(usage_totals.c.user_id, usage_totals.c.model_id, usage_totals.c.cost_micros,
                   usage_totals.c.messages, *(usage_totals.c[name] for name in _TOKEN_FIELDS),
                   usage_totals.c.web_searches)
            .order_by(usage_totals.c.user_id, usage_totals.c.model_id))
    return list(map(LifetimeTotal._make, conn.execute(stmt).all()))


def model_names(conn: Connection) -> dict[int, str]:
    """Name of every model by id, disabled and undeclared ones included (they have totals too)."""
    return dict(conn.execute(select(models.c.id, models.c.name)).all())


def chats_per_user(conn: Connection) -> dict[int, int]:
    """Chats started per user id (users without chats are absent)."""
    stmt = select(chats.c.user_id, func.count()).group_by(chats.c.user_id)
    return dict(conn.execute(stmt).all())


def user_snapshots(conn: Connection, now: datetime, active_since: date,
                   config: LimitConfig | None = None) -> list[UserSnapshot]:
    """Limit status of every user who has a limit or spent since `active_since`.

    Sorted by spend (highest first), so a cap on series keeps the users that matter most.
    Reads one period row per user and the lifetime rows, never the daily rollup.
    """
    config = load_limit_config(conn) if config is None else config
    start, _ = period_bounds(config.period, now)
    # One row per user of the period rollup, and the lifetime rows' last day: O(users x models).
    spend: dict[int, int] = dict(conn.execute(
        select(period_spend.c.user_id, period_spend.c.cost_micros)
        .where(period_spend.c.period == config.period.value,
               period_spend.c.period_start == start.date())).all())
    active = set(conn.execute(
        select(usage_totals.c.user_id).where(usage_totals.c.last_day >= active_since)
        .distinct()).scalars().all())
    overrides = {user_id: UserOverride(limit_micros=limit, unlimited=limit is None)
                 for user_id, limit in conn.execute(
                     select(user_limits.c.user_id, user_limits.c.limit_micros)).all()}
    groups_of: dict[int, list[int | None]] = defaultdict(list)
    for user_id, limit in conn.execute(
            select(group_members.c.user_id, group_limits.c.limit_micros)
            .select_from(group_members.outerjoin(
                group_limits, group_limits.c.group_id == group_members.c.group_id))
    ).all():
        groups_of[user_id].append(limit)

    # Users share a handful of (override, group limits) combinations: resolve each once.
    resolved: dict[tuple[UserOverride | None, tuple[int | None, ...]], EffectiveLimit] = {}
    snapshots: list[UserSnapshot] = []
    append = snapshots.append
    for user_id, username, name in conn.execute(
            select(users.c.id, users.c.username, users.c.name)).all():
        key = (overrides.get(user_id), tuple(groups_of.get(user_id, ())))
        limit = resolved.get(key)
        if limit is None:
            limit = resolved[key] = resolve_effective_limit(config, *key)
        if limit.limit_micros is None and user_id not in active:
            continue
        append(UserSnapshot(user_id, username, name, spend.get(user_id, 0), limit.limit_micros,
                            limit.source))
    # Highest spend first, then by name: two stable sorts with C keys.
    snapshots.sort(key=attrgetter("username"))
    snapshots.sort(key=attrgetter("spent_micros"), reverse=True)
    return snapshots


def models_in_use(conn: Connection) -> list[str]:
    stmt = select(models.c.name).where(or_(models.c.enabled.is_(True),
                                           models.c.seen_in_traffic.is_(True)))
    return [row.name for row in conn.execute(stmt.order_by(models.c.name))]
