"""Strict enforcement: hold an upper bound of a request's cost before it is forwarded.

The check and the hold happen under a per-user lock (the user's row on PostgreSQL, the database
write lock on SQLite), so concurrent requests cannot together take spend past the limit.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Connection, select, text

from ledger.dialect import is_postgresql
from ledger.periods import as_utc
from ledger.schema import reservations, users
from ledger.spend import LimitStatus, limit_status


def _lock_user(conn: Connection, user_id: int) -> None:
    if is_postgresql(conn):
        conn.execute(select(users.c.id).where(users.c.id == user_id).with_for_update())
    else:
        # Take SQLite's write lock now rather than at the first write, so that two checks
        # cannot both read the old spend.
        conn.execute(text("UPDATE users SET id = id WHERE id = :id"), {"id": user_id})


def reserve(conn: Connection, user_id: int, amount_micros: int, now: datetime,
            ttl_seconds: float = 900.0) -> tuple[str | None, LimitStatus]:
    """Hold `amount_micros` if spend + holds + amount stays within the limit.

    Returns (reservation id, status); the id is None when the request must be refused, and
    also when the user has no limit (nothing to hold).
    """
    now = as_utc(now)
    _lock_user(conn, user_id)
    status = limit_status(conn, user_id, now, include_reservations=True)
    if status.limit_micros is None:
        return None, status
    if status.blocked or status.spent_micros + amount_micros > status.limit_micros:
        return None, status
    reservation_id = uuid.uuid4().hex
    conn.execute(reservations.insert().values(
        id=reservation_id, user_id=user_id, amount_micros=amount_micros, created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds)))
    return reservation_id, status


def release(conn: Connection, reservation_id: str) -> None:
    conn.execute(reservations.delete().where(reservations.c.id == reservation_id))


def purge_expired(conn: Connection, now: datetime) -> int:
    return int(conn.execute(reservations.delete()
                            .where(reservations.c.expires_at <= as_utc(now))).rowcount)
