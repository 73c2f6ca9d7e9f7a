"""Reading and writing the limit configuration, overrides and group limits."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, delete, select

from ledger.dialect import upsert
from ledger.errors import GroupNotFound, InvalidValue
from ledger.limits import (
    EffectiveLimit,
    GroupPolicy,
    LimitConfig,
    UserOverride,
    resolve_effective_limit,
)
from ledger.periods import Period
from ledger.schema import group_limits, group_members, groups, limit_config, user_limits
from ledger.users import get_user


def load_limit_config(conn: Connection) -> LimitConfig:
    row = conn.execute(select(limit_config).where(limit_config.c.id == 1)).first()
    if row is None:
        return LimitConfig()
    return LimitConfig(enabled=bool(row.enabled), period=Period(row.period),
                       default_limit_micros=row.default_limit_micros,
                       group_policy=GroupPolicy(row.group_policy))


def save_limit_config(conn: Connection, config: LimitConfig) -> None:
    if config.default_limit_micros is not None and config.default_limit_micros <= 0:
        raise InvalidValue("the default limit must be positive")
    values = {"enabled": config.enabled, "period": config.period.value,
              "default_limit_micros": config.default_limit_micros,
              "group_policy": config.group_policy.value, "updated_at": datetime.now(UTC)}
    stmt = upsert(conn, limit_config).values(id=1, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=values))


def load_user_override(conn: Connection, user_id: int) -> UserOverride | None:
    row = conn.execute(select(user_limits.c.limit_micros)
                       .where(user_limits.c.user_id == user_id)).first()
    if row is None:
        return None
    return UserOverride(limit_micros=row.limit_micros, unlimited=row.limit_micros is None)


def load_group_limits(conn: Connection, user_id: int) -> list[int | None]:
    """Limits of the user's groups (None for a group without a limit)."""
    stmt = (select(group_limits.c.limit_micros)
            .select_from(group_members.outerjoin(
                group_limits, group_limits.c.group_id == group_members.c.group_id))
            .where(group_members.c.user_id == user_id))
    return [row.limit_micros for row in conn.execute(stmt)]


def effective_limit(conn: Connection, user_id: int,
                    config: LimitConfig | None = None) -> EffectiveLimit:
    config = load_limit_config(conn) if config is None else config
    if not config.enabled:
        return resolve_effective_limit(config, None, [])
    return resolve_effective_limit(config, load_user_override(conn, user_id),
                                   load_group_limits(conn, user_id))


def set_user_override(conn: Connection, username: str, limit_micros: int | None,
                      unlimited: bool = False) -> None:
    """A positive limit, or `unlimited=True` to exempt the user."""
    if unlimited == (limit_micros is not None):
        raise InvalidValue("give either a positive limit or unlimited, not both or neither")
    if limit_micros is not None and limit_micros <= 0:
        raise InvalidValue("a user limit must be positive (use unlimited to exempt a user)")
    user = get_user(conn, username)
    stmt = upsert(conn, user_limits).values(user_id=user.id, limit_micros=limit_micros)
    conn.execute(stmt.on_conflict_do_update(index_elements=["user_id"],
                                            set_={"limit_micros": limit_micros}))


def clear_user_override(conn: Connection, username: str) -> bool:
    user = get_user(conn, username)
    return conn.execute(delete(user_limits).where(user_limits.c.user_id == user.id)).rowcount > 0


def _group_id(conn: Connection, group: str) -> int:
    row = conn.execute(select(groups.c.id).where(groups.c.name == group)).first()
    if row is None:
        raise GroupNotFound(group)
    return int(row.id)


def set_group_limit(conn: Connection, group: str, limit_micros: int) -> None:
    if limit_micros <= 0:
        raise InvalidValue("a group limit must be positive")
    group_id = _group_id(conn, group)
    stmt = upsert(conn, group_limits).values(group_id=group_id, limit_micros=limit_micros)
    conn.execute(stmt.on_conflict_do_update(index_elements=["group_id"],
                                            set_={"limit_micros": limit_micros}))


def clear_group_limit(conn: Connection, group: str) -> bool:
    group_id = _group_id(conn, group)
    return conn.execute(delete(group_limits)
                        .where(group_limits.c.group_id == group_id)).rowcount > 0
