"""Whose each stored provider answer is: the `response_owners` table.

All users share the gateway's provider key, so a response id one user got would let any other
retrieve, delete or continue that answer upstream. The gateway records the owner of every id it
relays (with the usage record of the answer, in the same transaction) and lets only the owner
name it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, Executable, bindparam, select

from ledger.dialect import upsert_for
from ledger.schema import response_owners

_OWNER = select(response_owners.c.user_id).where(
    response_owners.c.response_id == bindparam("response_id"))


@functools.cache
def _insert(dialect: str) -> Executable:
    # The first owner stays: a replayed record (or a provider reusing an id) changes nothing.
    return (upsert_for(dialect, response_owners)
            .values(response_id=bindparam("response_id"), user_id=bindparam("user_id"),
                    created_at=bindparam("created_at"))
            .on_conflict_do_nothing(index_elements=["response_id"]))


def record_owners(conn: Connection, owners: Iterable[tuple[str, int, datetime]]) -> None:
    """Record (response id, user id, created at) rows; ids already known keep their owner."""
    rows = [{"response_id": response_id, "user_id": user_id, "created_at": created_at}
            for response_id, user_id, created_at in owners]
    if rows:
        conn.execute(_insert(conn.dialect.name), rows)


def owner_of(conn: Connection, response_id: str) -> int | None:
    """The user id that owns `response_id`, None when the gateway never relayed it."""
    found = conn.execute(_OWNER, {"response_id": response_id}).scalar()
    return None if found is None else int(found)
