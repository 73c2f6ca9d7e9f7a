"""Users of the ledger (created by `apply`, or on first sight in trusted-header mode)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, select

from ledger.dialect import upsert
from ledger.errors import UserNotFound
from ledger.schema import users


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    name: str
    email: str


def _user(row: object) -> User:
    return User(id=row.id, username=row.username, name=row.name, email=row.email)  # type: ignore[attr-defined]


def find_user(conn: Connection, username: str) -> User | None:
    row = conn.execute(select(users).where(users.c.username == username)).first()
    return None if row is None else _user(row)


def get_user(conn: Connection, username: str) -> User:
    user = find_user(conn, username)
    if user is None:
        raise UserNotFound(username)
    return user


def ensure_user(conn: Connection, username: str) -> User:
    """The user, created with no display name when the ledger has never seen it."""
    if not username:
        raise ValueError("username must not be empty")
    stmt = upsert(conn, users).values(username=username, name="", email="",
                                      created_at=datetime.now(UTC))
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["username"]))
    return get_user(conn, username)
