"""Users and groups as Coder knows them: matched by Coder's ids, so a rename is the same row.

Used by the Coder token check (a user created on first sight), `agentmeter coder sync` and
`agentmeter coder import`. Nothing here deletes: a user gone from Coder keeps its history.
"""

from __future__ import annotations

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
    # None: not linked, because another ledger user holds the username.
    user_id: int | None
    # What changed, one line each (empty: the ledger already agreed).
    changes: tuple[str, ...]


def _fit(text: str) -> str:
    return text[:USER_TEXT_LENGTH]


def save_coder_user(conn: Connection, user: CoderUser) -> SavedUser:
    """Make the ledger's row of this Coder user equal Coder's: found by Coder's id, else the
    policy-declared user of the same username is adopted, else a new row is made.

    A rename onto a username another ledger user holds keeps the old username (and says so):
    two people must never share one spend.
    """
    wanted = {"username": _fit(user.username), "name": _fit(user.name),
              "email": _fit(user.email), "suspended": user.suspended}
    row = conn.execute(select(users).where(users.c.coder_id == user.coder_id)).first()
    if row is None:
        row = conn.execute(select(users).where(users.c.username == wanted["username"],
                                               users.c.coder_id.is_(None))).first()
    if row is None:
        taken = conn.execute(select(users.c.id).where(
            users.c.username == wanted["username"])).first()
        if taken is not None:
            return SavedUser(None, (f"user {user.username}: the username belongs to another "
                                    "Coder user in the ledger; not linked",))
        user_id = conn.execute(users.insert().values(
            coder_id=user.coder_id, created_at=datetime.now(UTC), **wanted)
        ).inserted_primary_key[0]  # type: ignore[index]
        return SavedUser(int(user_id), (f"user {user.username}: created from Coder",))
    changes: list[str] = []
    values: dict[str, object] = {}
    if row.coder_id != user.coder_id:
        values["coder_id"] = user.coder_id
        changes.append(f"user {row.username}: linked to Coder user {user.coder_id}")
    if row.username != wanted["username"]:
        holder = conn.execute(select(users.c.id).where(
            users.c.username == wanted["username"])).first()
        if holder is None:
            values["username"] = wanted["username"]
            changes.append(f"user {row.username}: renamed to {wanted['username']}")
        else:
            changes.append(f"user {row.username}: not renamed to {wanted['username']} "
                           "(another ledger user has that username)")
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


def find_coder_group(conn: Connection, coder_id: str, name: str) -> tuple[int | None, str | None]:
    """The ledger group of this Coder group (by id, else an unsynced group of the same name
    to adopt), with its current name; (None, None) when there is none."""
    row = conn.execute(select(groups.c.id, groups.c.name)
                       .where(groups.c.coder_id == coder_id)).first()
    if row is None:
        row = conn.execute(select(groups.c.id, groups.c.name)
                           .where(groups.c.name == name, groups.c.coder_id.is_(None))).first()
    return (None, None) if row is None else (int(row.id), str(row.name))
