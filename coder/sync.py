"""`agentmeter coder sync`: make the ledger's users, names, emails, groups and memberships equal
Coder's.

Users and groups are matched by Coder's ids (a rename in Coder renames the ledger's row); a
policy-declared user or group of the same name, not yet linked, is adopted. A group of a
non-default organisation is named `ORG/GROUP`; each organisation's built-in "Everyone" group is
not copied (a default limit covers everyone). Nothing with history is deleted: a user gone from
Coder keeps its messages and loses its memberships; a group gone from Coder is emptied. Limits
stay with the policy file (`apply` sets them on synced groups and leaves their members alone).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, delete, select, text, update

from coder.client import CoderClient, Group, Organization, User
from coder.settings import CoderSettings
from ledger.coder_identity import CoderUser, find_coder_group, save_coder_user
from ledger.schema import NAME_LENGTH, group_members, groups, users


@dataclass(frozen=True)
class Directory:
    """What Coder says: every user, and every organisation's groups with their members."""

    users: tuple[User, ...]
    organizations: tuple[Organization, ...]
    groups: tuple[Group, ...]


async def read_directory(client: CoderClient, token: str) -> Directory:
    """Read Coder's users (every page), organisations and their groups."""
    everyone = await client.users(token)
    organizations = await client.organizations(token)
    found: list[Group] = []
    for organization in organizations:
        found.extend(await client.groups(token, organization.id))
    return Directory(tuple(everyone), tuple(organizations), tuple(found))


def ledger_group_name(group: Group, organizations: dict[str, Organization]) -> str:
    organization = organizations.get(group.organization_id)
    if organization is None or organization.is_default:
        return group.name
    return f"{organization.name}/{group.name}"[:NAME_LENGTH]


def _group_row(conn: Connection, group: Group, name: str, live_ids: set[str],
               changes: list[str]) -> int | None:
    """The ledger group of this Coder group, created, linked or renamed as needed."""
    group_id, current = find_coder_group(conn, group.id, name, live_ids)
    if group_id is None:
        if conn.execute(select(groups.c.id).where(groups.c.name == name)).first() is not None:
            changes.append(f"group {name}: the name belongs to another Coder group in the "
                           "ledger; not synced")
            return None
        group_id = int(conn.execute(groups.insert().values(
            name=name, coder_id=group.id, created_at=datetime.now(UTC))
        ).inserted_primary_key[0])  # type: ignore[index]
        changes.append(f"group {name}: created from Coder")
        return group_id
    values: dict[str, str] = {}
    linked = conn.execute(select(groups.c.coder_id).where(groups.c.id == group_id)).scalar()
    if linked != group.id:
        values["coder_id"] = group.id
        changes.append(f"group {current}: linked to Coder group {group.id}")
    if current != name:
        if conn.execute(select(groups.c.id).where(groups.c.name == name)).first() is None:
            values["name"] = name
            changes.append(f"group {current}: renamed to {name}")
        else:
            changes.append(f"group {current}: not renamed to {name} (another group has "
                           "that name)")
    if values:
        conn.execute(update(groups).where(groups.c.id == group_id).values(**values))
    return group_id


def _set_members(conn: Connection, group_id: int, wanted: set[int], changes: list[str]) -> None:
    name = conn.execute(select(groups.c.name).where(groups.c.id == group_id)).scalar_one()
    current = {row.user_id: row.username for row in conn.execute(
        select(group_members.c.user_id, users.c.username)
        .join(users, users.c.id == group_members.c.user_id)
        .where(group_members.c.group_id == group_id))}
    for user_id in sorted(set(current) - wanted, key=current.__getitem__):
        conn.execute(delete(group_members).where(group_members.c.group_id == group_id,
                                                 group_members.c.user_id == user_id))
        changes.append(f"group {name}: member {current[user_id]} removed")
    added = wanted - set(current)
    if added:
        names = dict(conn.execute(select(users.c.id, users.c.username)
                                  .where(users.c.id.in_(added))).tuples().all())
        for user_id in sorted(added, key=names.__getitem__):
            conn.execute(group_members.insert().values(group_id=group_id, user_id=user_id))
            changes.append(f"group {name}: member {names[user_id]} added")


def apply_directory(conn: Connection, directory: Directory) -> list[str]:
    """Make the ledger equal Coder's directory; one line per change (empty: nothing changed).

    Run it in a transaction: a dry run rolls it back after reading the changes.
    """
    changes: list[str] = []
    ledger_ids: dict[str, int] = {}
    for user in sorted(directory.users, key=lambda u: u.username):
        saved = save_coder_user(conn, CoderUser(coder_id=user.id, username=user.username,
                                                name=user.name, email=user.email,
                                                suspended=user.suspended))
        changes.extend(saved.changes)
        ledger_ids[user.id] = saved.user_id

    organizations = {o.id: o for o in directory.organizations}
    live_ids = {g.id for g in directory.groups}
    synced: set[int] = set()
    for group in sorted(directory.groups, key=lambda g: ledger_group_name(g, organizations)):
        if group.is_everyone:
            continue
        group_id = _group_row(conn, group, ledger_group_name(group, organizations), live_ids,
                              changes)
        if group_id is None:
            continue
        synced.add(group_id)
        _set_members(conn, group_id, {ledger_ids[m] for m in group.member_ids
                                      if m in ledger_ids}, changes)

    gone = conn.execute(select(groups.c.id).where(groups.c.coder_id.is_not(None),
                                                  groups.c.id.not_in(synced))).scalars().all()
    for group_id in gone:  # deleted in Coder: emptied, kept for its history and limit
        _set_members(conn, int(group_id), set(), changes)
    return changes


# One sync at a time across replicas and CLI runs (a PostgreSQL transaction-level advisory lock).
SYNC_LOCK_KEY = 0x616D_636F_6465_72  # "amcoder"


def _take_lock(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return True  # SQLite serialises writers itself
    return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"),
                             {"key": SYNC_LOCK_KEY}).scalar())


def write_directory(engine: Engine, directory: Directory, dry_run: bool) -> list[str] | None:
    """Apply the directory in one transaction; None when another sync holds the lock."""
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            if not _take_lock(conn):
                return None
            changes = apply_directory(conn, directory)
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
        else:
            transaction.commit()
        return changes


async def sync_once(settings: CoderSettings, engine: Engine,
                    dry_run: bool = False) -> list[str] | None:
    """Read Coder and make the ledger equal it; the changes, or None when another sync was
    running. Raises `CoderError` when Coder cannot be read (nothing is written then)."""
    if not settings.url or not settings.token:
        raise ValueError("coder sync needs coder.url and coder.token "
                         "(AGENTMETER_CODER_URL, AGENTMETER_CODER_TOKEN)")
    client = CoderClient(settings)
    try:
        directory = await read_directory(client, settings.token)
    finally:
        await client.close()
    return await asyncio.to_thread(write_directory, engine, directory, dry_run)
