"""Monthly partitions of `messages` on PostgreSQL (SQLite keeps one table).

A partition holds one UTC calendar month of `created_at` and is named `messages_YYYY_MM`.
Partitions are made ahead of time (by `agentmeter db upgrade` and the exporter's maintenance
task) and, for a record whose month has none yet (a clock far off, an import of old usage),
by the writer itself. There is no default partition: pruning detaches whole months
concurrently, which PostgreSQL refuses while a default partition exists.

New partitions are created standalone and then attached, which locks the parent only against
other schema changes (SHARE UPDATE EXCLUSIVE), never against recording.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, text

PARENT = "messages"
# The current month and this many after it always have a partition.
MONTHS_AHEAD = 3
# Serialises writers that create a missing partition at the same moment (a transaction lock).
CREATE_LOCK_KEY = 0x61676D70  # "agmp"
_NAME = re.compile(r"^messages_(\d{4})_(\d{2})$")


def month_of(moment: datetime) -> date:
    """The first day of the UTC month holding `moment`."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment
    return date(moment.year, moment.month, 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def months_between(first: date, last: date) -> list[date]:
    """Every month from `first` to `last`, both included."""
    months, month = [], date(first.year, first.month, 1)
    while month <= last:
        months.append(month)
        month = next_month(month)
    return months


def upcoming_months(now: datetime) -> list[date]:
    """The current month and the MONTHS_AHEAD after it."""
    months = [month_of(now)]
    for _ in range(MONTHS_AHEAD):
        months.append(next_month(months[-1]))
    return months


def partition_name(month: date) -> str:
    return f"{PARENT}_{month:%Y_%m}"


def _include_name(name: str | None, kind: str, _parents: object) -> bool:
    return not (kind == "table" and name is not None and _NAME.match(name) is not None)


def _include_object(obj: Any, _name: str | None, kind: str, _reflected: bool,
                    _compare_to: object) -> bool:
    return not (kind == "foreign_key_constraint" and obj.table.name == PARENT)


def schema_comparison_options(dialect_name: str) -> dict[str, Any]:
    """Alembic options that compare a ledger with ledger/schema.py as migrated: the monthly
    partitions are not in the model, and on PostgreSQL the partitioned `messages` has no
    foreign keys (see migration 0006)."""
    options: dict[str, Any] = {"include_name": _include_name}
    if dialect_name == "postgresql":
        options["include_object"] = _include_object
    return options


def _bound(month: date) -> str:
    return f"'{month:%Y-%m-%d} 00:00:00+00'"


@dataclass(frozen=True)
class Partition:
    name: str
    month: date

    @property
    def end(self) -> datetime:
        after = next_month(self.month)
        return datetime(after.year, after.month, 1, tzinfo=UTC)


def is_partitioned(conn: Connection) -> bool:
    """Whether `messages` is a partitioned table here (PostgreSQL after migration 0006)."""
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.execute(text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:name)"),
                        {"name": PARENT}).scalar()
    return kind == "p"


def _by_month(names: Iterable[str]) -> list[Partition]:
    found = []
    for name in names:
        match = _NAME.match(name)
        if match:
            found.append(Partition(name, date(int(match[1]), int(match[2]), 1)))
    return sorted(found, key=lambda p: p.month)


def attached_partitions(conn: Connection) -> list[Partition]:
    """The monthly partitions of `messages`, oldest first (none on SQLite)."""
    if not is_partitioned(conn):
        return []
    return _by_month(conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(:name)"), {"name": PARENT}).scalars())


def detached_partitions(conn: Connection) -> list[Partition]:
    """Month tables no longer attached: a prune detached them and has not dropped them yet."""
    return _by_month(conn.execute(text(
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
        "AND relkind = 'r' AND NOT relispartition AND relname LIKE :pattern"),
        {"pattern": f"{PARENT}\\_%"}).scalars())


def create_partitions(conn: Connection, months: Iterable[date]) -> list[str]:
    """Create and attach the partitions of `months` that do not exist; returns their names.

    Runs in the caller's transaction; concurrent callers wait for each other on a transaction
    advisory lock instead of failing on the same name.
    """
    wanted = sorted(set(months))
    if not wanted:
        return []
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CREATE_LOCK_KEY})
    created = []
    for month in wanted:
        name = partition_name(month)
        if conn.execute(text("SELECT to_regclass(:name)"), {"name": name}).scalar() is not None:
            continue
        conn.execute(text(f'CREATE TABLE "{name}" (LIKE "{PARENT}" INCLUDING DEFAULTS '
                          'INCLUDING CONSTRAINTS INCLUDING STORAGE)'))
        conn.execute(text(f'ALTER TABLE "{PARENT}" ATTACH PARTITION "{name}" FOR VALUES '
                          f'FROM ({_bound(month)}) TO ({_bound(next_month(month))})'))
        created.append(name)
    return created


def ensure_upcoming_partitions(conn: Connection, now: datetime) -> list[str]:
    """The current month's partition and the next MONTHS_AHEAD (nothing on SQLite)."""
    if not is_partitioned(conn):
        return []
    return create_partitions(conn, upcoming_months(now))
