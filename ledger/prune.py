"""Removing raw messages older than the retention, without ever blocking recording.

On PostgreSQL whole months go: a partition whose month ended before the retention edge is
detached concurrently (recording goes on; PostgreSQL waits for the transactions using it) and
dropped. Messages of the month the edge falls in stay until that month has aged out whole, so
up to a month more than the retention is kept. On SQLite the messages before the edge are
deleted in small batches, one short transaction each. Either way `kept_since` is moved first,
so a record of the span being removed is refused from then on (ledger.retention).

`maintain` is what the exporter's background task and `agentmeter db prune` run: partitions
for the coming months, the prune, and the state `/metrics` reports. On PostgreSQL it holds a
session advisory lock, so with several exporter replicas one does the work. It reads no month
whole: a month's messages are counted from the rollups, and the first and last of a day are
found through the (user_id, created_at) index.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    column,
    delete,
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.sql.expression import TableClause

from ledger.engine import from_db
from ledger.partitions import (
    PARENT,
    Partition,
    attached_partitions,
    detached_partitions,
    ensure_upcoming_partitions,
    is_partitioned,
    partition_name,
)
from ledger.periods import Period
from ledger.retention import retention_edge, retention_state, save_retention_state
from ledger.schema import messages, period_spend
from ledger.settings import LedgerSettings

# The session advisory lock held by the one process doing maintenance.
MAINTENANCE_LOCK_KEY = 0x61676D72  # "agmr"


@dataclass(frozen=True)
class PrunePlan:
    """What a prune removes (or removed): how many messages, and the span they came from."""

    messages: int
    first: datetime | None  # created_at of the oldest message that goes
    last: datetime | None  # and of the newest
    kept_since: datetime | None  # messages from here on stay (None: nothing goes)


def _month_table(name: str) -> TableClause:
    """`messages` or one of its partitions, with the columns maintenance reads, typed like the
    schema's."""
    if name == PARENT:
        return messages
    return table(name, column("created_at", messages.c.created_at.type),
                 column("user_id", messages.c.user_id.type))


def _span(conn: Connection, before: datetime) -> PrunePlan:
    """The messages before `before`, read from `messages` itself (SQLite)."""
    created_at = messages.c.created_at
    count, first, last = conn.execute(
        select(func.count(), func.min(created_at), func.max(created_at))
        .where(created_at < before)).one()
    if not count:
        return PrunePlan(0, None, None, None)
    return PrunePlan(int(count), from_db(first), from_db(last), before)


def _expired(conn: Connection, edge: datetime) -> list[Partition]:
    return [p for p in attached_partitions(conn) if p.end <= edge]


def _month_counts(conn: Connection, months: list[Partition]) -> dict[str, int]:
    """Messages per month, from the monthly `period_spend` rows: every message written adds
    one to its user's row for its UTC month, in the same transaction (ledger.usage)."""
    c = period_spend.c
    counts = dict(conn.execute(
        select(c.period_start, func.sum(c.messages))
        .where(c.period == Period.MONTH.value, c.period_start.in_([p.month for p in months]))
        .group_by(c.period_start)).all())
    return {p.name: int(counts.get(p.month, 0)) for p in months}


def _day_with_messages(conn: Connection, since: date | None, before: date | None = None,
                       *, last: bool = False) -> date | None:
    """The first (or last) UTC day in [since, before) that has messages, from the daily
    `period_spend` rows."""
    c = period_spend.c
    query = select((func.max if last else func.min)(c.period_start)).where(
        c.period == Period.DAY.value)
    if since is not None:
        query = query.where(c.period_start >= since)
    if before is not None:
        query = query.where(c.period_start < before)
    return conn.execute(query).scalar()


def _message_at(conn: Connection, name: str, day: date, *, last: bool = False
                ) -> datetime | None:
    """created_at of the first (or last) message of UTC `day` in `messages` or partition
    `name`: one probe of the (user_id, created_at) index for each user with usage that day.
    (There is no index on created_at alone; a scan would read the whole month.)"""
    month, c = _month_table(name), period_spend.c
    start = datetime.combine(day, datetime.min.time(), UTC)
    at = month.c.created_at
    probe = (select(at).where(month.c.user_id == c.user_id, at >= start,
                              at < start + timedelta(days=1))
             .order_by(at.desc() if last else at).limit(1).scalar_subquery())
    moment = conn.execute(select((func.max if last else func.min)(probe))
                          .where(c.period == Period.DAY.value, c.period_start == day)).scalar()
    return None if moment is None else from_db(moment)


def _months_span(conn: Connection, months: list[Partition], counts: dict[str, int]
                 ) -> tuple[datetime | None, datetime | None]:
    """created_at of the first and the last message of `months` (oldest first)."""
    full = [p for p in months if counts[p.name]]
    if not full:
        return None, None
    first_day = _day_with_messages(conn, full[0].month, full[0].end.date())
    last_day = _day_with_messages(conn, full[-1].month, full[-1].end.date(), last=True)
    if first_day is None or last_day is None:
        return None, None
    return (_message_at(conn, full[0].name, first_day),
            _message_at(conn, full[-1].name, last_day, last=True))


def _plan(conn: Connection, edge: datetime) -> tuple[PrunePlan, dict[str, int]]:
    """What goes before `edge`, and (on PostgreSQL) the messages of each month that goes.

    On PostgreSQL the months are counted from the rollups and their first and last messages
    found through the index, so planning reads no month whole."""
    if not is_partitioned(conn):
        return _span(conn, edge), {}
    expired = _expired(conn, edge)
    if not expired:
        return PrunePlan(0, None, None, None), {}
    counts = _month_counts(conn, expired)
    first, last = _months_span(conn, expired, counts)
    return PrunePlan(sum(counts.values()), first, last, expired[-1].end), counts


def plan_prune(conn: Connection, days: int, now: datetime) -> PrunePlan:
    """What pruning to `days` of retention would remove now (reads only)."""
    return _plan(conn, retention_edge(now, days))[0]


def _detach(conn: Connection, expired: list[Partition]) -> None:
    """Detach concurrently: recording goes on, PostgreSQL waits for the transactions that
    use the partition (outside a transaction block, as it requires)."""
    for partition in expired:
        pending = conn.execute(text(
            "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass(:name)"),
            {"name": partition.name}).scalar()
        # A detach that was interrupted is finished instead of started again.
        how = "FINALIZE" if pending else "CONCURRENTLY"
        conn.execute(text(f'ALTER TABLE "{PARENT}" DETACH PARTITION "{partition.name}" {how}'))


def _drop_detached(conn: Connection, counted: dict[str, int]) -> int:
    """Drop the detached months of `counted` (name -> messages); returns the messages they
    held. The partitions have no foreign keys, so this locks nothing recording uses."""
    removed = 0
    for partition in detached_partitions(conn):
        if partition.name in counted:
            removed += counted[partition.name]
            conn.execute(text(f'DROP TABLE "{partition.name}"'))
    return removed


def _delete_in_batches(engine: Engine, edge: datetime, batch_rows: int) -> int:
    removed = 0
    while True:
        with engine.begin() as conn:
            rowid: ColumnElement[int] = literal_column("rowid")
            doomed = (select(rowid).select_from(messages)
                      .where(messages.c.created_at < edge).limit(batch_rows).scalar_subquery())
            count = conn.execute(delete(messages).where(rowid.in_(doomed))).rowcount
        removed += count
        if count < batch_rows:
            return removed


def prune(engine: Engine, days: int, now: datetime, batch_rows: int) -> PrunePlan:
    """Remove the messages older than `days` of retention; returns what went."""
    with engine.begin() as conn:
        partitioned = is_partitioned(conn)
        plan, counted = _plan(conn, retention_edge(now, days))
        kept_since = retention_state(conn).kept_since
        if plan.kept_since is not None and (kept_since is None or kept_since < plan.kept_since):
            save_retention_state(conn, kept_since=plan.kept_since)
            kept_since = plan.kept_since
        if partitioned and kept_since is not None:
            # Also months an interrupted prune detached and did not drop.
            counted |= _month_counts(conn, [p for p in detached_partitions(conn)
                                            if p.end <= kept_since and p.name not in counted])
    removed = 0
    if partitioned:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if plan.kept_since is not None:
                _detach(conn, [p for p in _expired(conn, plan.kept_since) if p.name in counted])
            removed = _drop_detached(conn, counted)
    elif plan.kept_since is not None:
        removed = _delete_in_batches(engine, plan.kept_since, batch_rows)
    return PrunePlan(removed, plan.first, plan.last, plan.kept_since)


def oldest_message_at(conn: Connection) -> datetime | None:
    """created_at of the oldest message: the first day with usage since the oldest message
    kept (from the rollups), then that day's first message through the index."""
    kept_since = retention_state(conn).kept_since
    day = _day_with_messages(conn, None if kept_since is None else kept_since.date())
    if day is None:
        return None
    name = partition_name(day.replace(day=1)) if is_partitioned(conn) else PARENT
    return _message_at(conn, name, day)


@contextmanager
def maintenance_lock(engine: Engine) -> Iterator[bool]:
    """True when this process may do the maintenance (always on SQLite)."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                 {"key": MAINTENANCE_LOCK_KEY}).scalar())
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"),
                             {"key": MAINTENANCE_LOCK_KEY})


def maintain(engine: Engine, settings: LedgerSettings, now: datetime) -> PrunePlan | None:
    """Partitions for the coming months, then (with a retention set) the prune, then the state
    `/metrics` reports. None when another process holds the maintenance lock."""
    with maintenance_lock(engine) as held:
        if not held:
            return None
        with engine.begin() as conn:
            ensure_upcoming_partitions(conn, now)
        result = None
        if settings.message_retention_days > 0:
            result = prune(engine, settings.message_retention_days, now,
                           settings.prune_batch_rows)
        with engine.begin() as conn:
            oldest = oldest_message_at(conn)
            if result is None:
                save_retention_state(conn, oldest_message_at=oldest)
            else:
                save_retention_state(conn, oldest_message_at=oldest, pruned_at=now,
                                     pruned_messages=result.messages)
        return result or PrunePlan(0, None, None, None)
