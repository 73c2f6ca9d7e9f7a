"""Users and groups as Coder knows them: matched by Coder's ids, so a rename is the same row.

Used by the Coder token check (a user created on first sight), `agentmeter coder sync` and
`agentmeter coder import`. Nothing here deletes: a user gone from Coder keeps its history.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, select, update

from ledger.schema import USER_TEXT_LENGTH, groups, users


@dataclass(frozen=True, slots=True)
class CoderUser:
    coder_id: str
    username: str
    name: str
    email: str
    suspended: bool


@dataclass(frozen=True, slots=True)
class SavedUser:
    user_id: int
    # What changed, one line each (empty: the ledger already agreed).
    changes: tuple[str, ...]


def _fit(text: str) -> str:
    return text[:USER_TEXT_LENGTH]


def _free_username(conn: Connection, username: str, coder_id: str) -> list[str]:
    """Coder gives a username to one user at a time: a ledger row of another Coder user that
    still holds it (that user was renamed or deleted in Coder since) is moved aside to
    `USERNAME~ID` with its history, until Coder's answer about that user renames it."""
    holder = conn.execute(select(users.c.id, users.c.coder_id).where(
        users.c.username == username)).first()
    if holder is None or holder.coder_id in (None, coder_id):
        return []
    aside = _fit(f"{username}~{holder.coder_id[:8]}")
    conn.execute(update(users).where(users.c.id == holder.id).values(username=aside))
    return [f"user {username}: the earlier Coder user of that name is now {aside}"]


def save_coder_user(conn: Connection, user: CoderUser) -> SavedUser:
    """Make the ledger's row of this Coder user equal Coder's: found by Coder's id, else the
    policy-declared (unlinked) user of the same username is adopted, else a new row is made."""
    wanted = {"username": _fit(user.username), "name": _fit(user.name),
              "email": _fit(user.email), "suspended": user.suspended}
    row = conn.execute(select(users).where(users.c.coder_id == user.coder_id)).first()
    if row is None:
        row = conn.execute(select(users).where(users.c.username == wanted["username"],
                                               users.c.coder_id.is_(None))).first()
    changes = _free_username(conn, _fit(user.username), user.coder_id)
    if row is None:
        user_id = conn.execute(users.insert().values(
            coder_id=user.coder_id, created_at=datetime.now(UTC), **wanted)
        ).inserted_primary_key[0]  # type: ignore[index]
        return SavedUser(int(user_id), (*changes, f"user {user.username}: created from Coder"))
    values: dict[str, object] = {}
    if row.coder_id != user.coder_id:
        values["coder_id"] = user.coder_id
        changes.append(f"user {row.username}: linked to Coder user {user.coder_id}")
    if row.username != wanted["username"]:
        if conn.execute(select(users.c.id).where(
                users.c.username == wanted["username"])).first() is None:
            values["username"] = wanted["username"]
            changes.append(f"user {row.username}: renamed to {wanted['username']}")
        else:  # a user only the policy file declares has the name: an operator must choose
            changes.append(f"user {row.username}: not renamed to {wanted['username']} "
                           "(a user of the policy file has that username)")
    if (row.name, row.email) != (wanted["name"], wanted["email"]):
        values.update(name=wanted["name"], email=wanted["email"])
        changes.append(f"user {wanted['username']}: name/email {row.name!r} <{row.email}> -> "
                       f"{wanted['name']!r} <{wanted['email']}>")
    if bool(row.suspended) != user.suspended:
        values["suspended"] = user.suspended
        changes.append(f"user {wanted['username']}: "
                       + ("suspended" if user.suspended else "no longer suspended"))
    if values:
        conn.execute(update(users).where(users.c.id == row.id).values(**values))
    return SavedUser(int(row.id), tuple(changes))


def find_coder_group(conn: Connection, coder_id: str, name: str,
                     live_ids: Collection[str]) -> tuple[int | None, str | None]:
    """The ledger group of this Coder group, with its current name: found by Coder's id, else
    the group of the same name that is unlinked or linked to a Coder group that no longer
    exists (deleted and made again under the same name: it keeps its limit and history).
    (None, None) when there is none."""
    row = conn.execute(select(groups.c.id, groups.c.name, groups.c.coder_id)
                       .where(groups.c.coder_id == coder_id)).first()
    if row is None:
        row = conn.execute(select(groups.c.id, groups.c.name, groups.c.coder_id)
                           .where(groups.c.name == name)).first()
        if row is not None and row.coder_id is not None and row.coder_id in live_ids:
            row = None
    return (None, None) if row is None else (int(row.id), str(row.name))
