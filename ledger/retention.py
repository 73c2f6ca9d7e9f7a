"""How far raw messages go back: the retention edge, and the records it refuses.

Raw messages may age out (`ledger.message_retention_days`); the rollups, totals, chats and
prices never do, so every report and limit answers the same after a prune. Once messages before
an instant are gone, a record from before it can no longer be checked against the ledger by
its id (a late spool replay, a re-import): it is refused, because the rollups already counted it
when it was first written. That instant, `kept_since`, is written before any message goes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, select, text, update

from ledger.dialect import upsert
from ledger.engine import from_db
from ledger.partitions import create_partitions, month_of, partition_name
from ledger.schema import message_retention

log = logging.getLogger("agentmeter.ledger")

_ROW = {"id": 1}


def retention_edge(now: datetime, days: int) -> datetime:
    """Midnight UTC `days` days before today: messages before it may be pruned."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


@dataclass(frozen=True)
class RetentionState:
    kept_since: datetime | None = None  # None: nothing was ever pruned
    pruned_at: datetime | None = None
    pruned_messages: int = 0
    oldest_message_at: datetime | None = None


def _aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else from_db(moment)


def retention_state(conn: Connection) -> RetentionState:
    row = conn.execute(select(message_retention)).first()
    if row is None:
        return RetentionState()
    return RetentionState(_aware(row.kept_since), _aware(row.pruned_at), row.pruned_messages,
                          _aware(row.oldest_message_at))


def save_retention_state(conn: Connection, **values: object) -> None:
    """Set some of the row's columns, creating the row when it is missing."""
    stmt = upsert(conn, message_retention).values(**_ROW, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=values))


# PostgreSQL: `kept_since` and which of the batch's months have no partition, in one statement.
_PG_ADMISSION = text(
    "SELECT (SELECT kept_since FROM message_retention), "
    "ARRAY(SELECT n FROM unnest(CAST(:names AS text[])) AS n WHERE to_regclass(n) IS NULL)")
# SQLite: `kept_since` read by a write, which takes the database's write lock first: no prune can
# delete a message between this read and the batch's insert, which checks ids against them.
_SQLITE_ADMISSION = (update(message_retention).values(id=message_retention.c.id)
                     .returning(message_retention.c.kept_since))


def refused_records(conn: Connection, created: Sequence[datetime]) -> set[int]:
    """Indexes of the records (by their UTC `created_at`) the ledger must not take: those
    before `kept_since`. On PostgreSQL the months of the others get their partition if they
    have none yet (an import of old usage, a clock far ahead).

    One statement per batch. On PostgreSQL a prune moving `kept_since` while the batch runs is
    harmless: the months it removes are detached concurrently, so the insert either still finds
    a record's first copy there or finds no partition for it and fails (to be spooled and
    refused on replay).
    """
    missing: list[date] = []
    if conn.dialect.name == "postgresql":
        by_name = {partition_name(month_of(moment)): month_of(moment) for moment in created}
        kept_since, names = conn.execute(_PG_ADMISSION, {"names": sorted(by_name)}).one()
        missing = [by_name[name] for name in names]
    else:
        kept_since = conn.execute(_SQLITE_ADMISSION).scalar()
    refused: set[int] = set()
    if kept_since is not None:
        edge = from_db(kept_since)
        refused = {index for index, moment in enumerate(created) if moment < edge}
        if refused:
            log.warning("refused %d usage records older than %s, the oldest message kept: the "
                        "rollups already hold them", len(refused), edge.isoformat())
        admitted = {month_of(moment) for index, moment in enumerate(created)
                    if index not in refused}
        missing = [month for month in missing if month in admitted]
    if missing:
        create_partitions(conn, missing)
    return refused
