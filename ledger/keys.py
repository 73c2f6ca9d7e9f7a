"""Virtual API keys: shown once at creation, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, select, update

from ledger.engine import from_db
from ledger.schema import api_keys, users
from ledger.users import get_user

KEY_PREFIX = "am-"


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key_id: str
    username: str
    secret: str  # the only time the key exists outside the caller's hands


@dataclass(frozen=True, slots=True)
class KeyOwner:
    user_id: int
    username: str
    key_id: str
    # Marked by `coder sync`: the key is valid but its owner may not spend.
    suspended: bool = False


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    username: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(secret: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_key(conn: Connection, username: str) -> CreatedKey:
    user = get_user(conn, username)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(6)
    conn.execute(api_keys.insert().values(id=key_id, user_id=user.id, key_hash=hash_key(secret),
                                          prefix=secret[:8], created_at=datetime.now(UTC)))
    return CreatedKey(key_id=key_id, username=user.username, secret=secret)


def authenticate_key(conn: Connection, secret: str) -> KeyOwner | None:
    """The key's owner, or None for an unknown or revoked key."""
    stmt = (select(api_keys.c.id, api_keys.c.user_id, users.c.username, users.c.suspended)
            .join(users, users.c.id == api_keys.c.user_id)
            .where(api_keys.c.key_hash == hash_key(secret), api_keys.c.revoked_at.is_(None)))
    row = conn.execute(stmt).first()
    if row is None:
        return None
    return KeyOwner(user_id=row.user_id, username=row.username, key_id=row.id,
                    suspended=bool(row.suspended))


def list_keys(conn: Connection, username: str | None = None) -> list[KeyInfo]:
    stmt = (select(api_keys, users.c.username).join(users, users.c.id == api_keys.c.user_id)
            .order_by(users.c.username, api_keys.c.created_at))
    if username is not None:
        stmt = stmt.where(users.c.id == get_user(conn, username).id)
    return [KeyInfo(key_id=row.id, username=row.username, prefix=row.prefix,
                    created_at=from_db(row.created_at),
                    revoked_at=None if row.revoked_at is None else from_db(row.revoked_at))
            for row in conn.execute(stmt)]


def revoke_keys(conn: Connection, username: str, key_id: str | None = None) -> int:
    """Revoke all of the user's active keys, or the one with `key_id`; returns how many."""
    user = get_user(conn, username)
    stmt = (update(api_keys).where(api_keys.c.user_id == user.id,
                                   api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC)))
    if key_id is not None:
        stmt = stmt.where(api_keys.c.id == key_id)
    return int(conn.execute(stmt).rowcount)
