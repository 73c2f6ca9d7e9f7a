"""Recording one answered request: the message and every rollup, in one transaction.

This runs once per request a gateway answers, so its statements are built once per backend
(with bind parameters) and only executed here: building SQLAlchemy constructs per call cost
several times more CPU than the database work itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Executable, bindparam, case, func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ledger.catalog import PRICE_COLUMNS, ensure_traffic_model
from ledger.dialect import upsert_for
from ledger.periods import Period, as_utc, period_bounds
from ledger.pricing import PricedUsage, Pricing, price_usage
from ledger.retention import refused_records
from ledger.schema import (
    chat_daily_usage,
    chats,
    daily_usage,
    messages,
    model_aliases,
    models,
    period_spend,
    reservations,
    usage_totals,
)
from ledger.tokens import TOKEN_KINDS, TokenUsage


@dataclass(frozen=True, slots=True)
class UsageRecord:
    id: str  # idempotency key: the same id recorded twice counts once
    user_id: int
    model: str  # the name the request used (a name or an alias)
    provider: str
    usage: TokenUsage
    created_at: datetime
    chat: str | None = None
    partial: bool = False
    # Strict mode: the reservation this answer settles (released in the same transaction).
    reservation_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordResult:
    inserted: bool
    cost_micros: int | None
    # Older than the oldest message kept (ledger.retention): not written, nothing counted.
    refused: bool = False


TOKENS = tuple(f"{kind.value}_tokens" for kind in TOKEN_KINDS)
UNPRICED = tuple(f"unpriced_{kind.value}_tokens" for kind in TOKEN_KINDS)
MEASURES = ("messages", "unpriced_messages", "cost_micros")


def _bind(*names: str) -> dict[str, Any]:
    return {name: bindparam(name) for name in names}


def _accumulate(dialect: str, table: Any, keys: tuple[str, ...], sums: tuple[str, ...],
                extra: dict[str, Any] | None = None, carried: tuple[str, ...] = ()
                ) -> Executable:
    """INSERT the row, or add its measures to the existing one (atomic on both backends)."""
    insert = upsert_for(dialect, table).values(_bind(*keys, *carried, *sums, *(extra or {})))
    updates = {name: getattr(table.c, name) + getattr(insert.excluded, name) for name in sums}
    updates.update(extra or {})
    stmt: Executable = insert.on_conflict_do_update(index_elements=list(keys), set_=updates)
    return stmt


@dataclass(frozen=True)
class _Statements:
    model: Executable
    chat: Executable
    new_chat: Executable
    message: Executable
    # PostgreSQL: the batch's messages as one array per column (see `_message_rows`).
    message_rows: Executable | None
    daily: Executable
    totals: Executable
    periods: Executable
    chat_daily: Executable
    release: Executable


MESSAGE_COLUMNS = ("id", "user_id", "chat_id", "model_id", "provider", *TOKENS,
                   "unpriced_tokens", "cost_micros", "partial", "created_at")


def _message_rows() -> Executable:
    """INSERT the messages from one array per column (`unnest`), RETURNING the new ids.

    The same statement text for any batch size: psycopg parses and caches it once, where the
    multi-row VALUES form (one placeholder per value) was re-parsed for every batch and was
    most of a large batch's CPU.
    """
    arrays = [bindparam(name, type_=ARRAY(messages.c[name].type)) for name in MESSAGE_COLUMNS]
    rows = func.unnest(*arrays).table_valued(*MESSAGE_COLUMNS).render_derived()
    return (pg_insert(messages)
            .from_select(list(MESSAGE_COLUMNS), select(*(rows.c[name]
                                                        for name in MESSAGE_COLUMNS)))
            .on_conflict_do_nothing().returning(messages.c.id))


@functools.cache
def _statements(dialect: str) -> _Statements:
    alias_of = select(model_aliases.c.model_id).where(model_aliases.c.alias == bindparam("name"))
    model = (select(models.c.id, models.c.name, models.c.has_pricing,
                    *(getattr(models.c, column) for column in PRICE_COLUMNS.values()))
             .where(or_(models.c.name == bindparam("name"), models.c.id.in_(alias_of))))
    chat = (select(chats.c.id, chats.c.user_id, chats.c.external_id)
            .where(tuple_(chats.c.user_id, chats.c.external_id)
                   .in_(bindparam("pairs", expanding=True))))
    new_chat = (upsert_for(dialect, chats)
                .values(_bind("user_id", "external_id", "created_at"))
                .on_conflict_do_nothing(index_elements=["user_id", "external_id"]))
    message = (upsert_for(dialect, messages)
               .values(_bind("id", "user_id", "chat_id", "model_id", "provider", *TOKENS,
                             "unpriced_tokens", "cost_micros", "partial", "created_at"))
               .on_conflict_do_nothing().returning(messages.c.id))
    last_day: Any = bindparam("last_day")
    later = case((usage_totals.c.last_day.is_(None), last_day),
                 (usage_totals.c.last_day < last_day, last_day), else_=usage_totals.c.last_day)
    return _Statements(
        model=model, chat=chat, new_chat=new_chat, message=message,
        message_rows=_message_rows() if dialect == "postgresql" else None,
        daily=_accumulate(dialect, daily_usage, ("user_id", "day", "model_id"),
                          (*MEASURES, *TOKENS, *UNPRICED)),
        totals=_accumulate(dialect, usage_totals, ("user_id", "model_id"),
                           (*MEASURES, *TOKENS, *UNPRICED), {"last_day": later}),
        periods=_accumulate(dialect, period_spend, ("user_id", "period", "period_start"),
                            ("cost_micros", "messages")),
        chat_daily=_accumulate(dialect, chat_daily_usage, ("chat_id", "day"),
                               (*MEASURES, *TOKENS), carried=("user_id",)),
        release=reservations.delete().where(reservations.c.id == bindparam("id")),
    )


def _model(conn: Connection, s: _Statements, record: UsageRecord) -> tuple[int, Pricing | None]:
    rows = conn.execute(s.model, {"name": record.model}).all()
    if not rows:
        return ensure_traffic_model(conn, record.model, record.provider), None
    row = min(rows, key=lambda r: r.name != record.model)  # a name beats an alias
    if not row.has_pricing:
        return row.id, None
    return row.id, Pricing(**{k.value: getattr(row, c) for k, c in PRICE_COLUMNS.items()})


def _chat_ids(conn: Connection, s: _Statements,
              wanted: dict[tuple[int, str], datetime]) -> dict[tuple[int, str], int]:
    """Ids of the batch's chats, creating the new ones: two or three statements per batch."""
    if not wanted:
        return {}

    def lookup(pairs: list[tuple[int, str]]) -> dict[tuple[int, str], int]:
        rows = conn.execute(s.chat, {"pairs": pairs})
        return {(row.user_id, row.external_id): int(row.id) for row in rows}

    found = lookup(list(wanted))
    missing = [pair for pair in wanted if pair not in found]
    if missing:
        conn.execute(s.new_chat, [{"user_id": user, "external_id": chat,
                                   "created_at": wanted[(user, chat)]}
                                  for user, chat in sorted(missing)])
        found.update(lookup(missing))
    return found


def _add(sums: dict[tuple[Any, ...], dict[str, Any]], key: tuple[Any, ...],
         base: dict[str, Any], measures: dict[str, int]) -> None:
    row = sums.get(key)
    if row is None:
        sums[key] = {**base, **measures}
        return
    for name, value in measures.items():
        row[name] += value


def record_usage_batch(conn: Connection, records: list[UsageRecord]) -> list[RecordResult]:
    """Record many answered requests in one transaction (the gateway's group commit).

    Messages are inserted idempotently (a known id changes nothing); the rollup increments of
    the new ones are summed per row in Python and applied once per row, in key order so that
    concurrent writers on PostgreSQL take row locks in the same order. A record older than
    the oldest message kept is refused (`RecordResult.refused`, see ledger.retention).
    """
    refused = refused_records(conn, [as_utc(record.created_at) for record in records])
    if not refused:
        return _record_admitted(conn, records)
    admitted = iter(_record_admitted(
        conn, [record for index, record in enumerate(records) if index not in refused]))
    return [RecordResult(inserted=False, cost_micros=None, refused=True) if index in refused
            else next(admitted) for index in range(len(records))]


def _record_admitted(conn: Connection, records: list[UsageRecord]) -> list[RecordResult]:
    if not records:
        return []
    s = _statements(conn.dialect.name)
    models_seen: dict[tuple[str, str], tuple[int, Pricing | None]] = {}
    first_seen: dict[tuple[int, str], datetime] = {}
    for record in records:
        if record.chat:
            first_seen.setdefault((record.user_id, record.chat), as_utc(record.created_at))
    chat_ids = _chat_ids(conn, s, first_seen)
    rows: list[dict[str, Any]] = []
    prepared: list[tuple[UsageRecord, datetime, int, int | None, PricedUsage]] = []
    for record in records:
        created_at = as_utc(record.created_at)
        model_key = (record.model, record.provider)
        if model_key not in models_seen:
            models_seen[model_key] = _model(conn, s, record)
        model_id, pricing = models_seen[model_key]
        chat_id = chat_ids[(record.user_id, record.chat)] if record.chat else None
        priced = price_usage(pricing, record.usage)
        prepared.append((record, created_at, model_id, chat_id, priced))
        rows.append({
            "id": record.id, "user_id": record.user_id, "chat_id": chat_id,
            "model_id": model_id, "provider": record.provider,
            **dict(zip(TOKENS, (count for _, count in record.usage.items()), strict=True)),
            "unpriced_tokens": priced.unpriced.total, "cost_micros": priced.cost_micros,
            "partial": record.partial, "created_at": created_at,
        })
    # RETURNING tells which ids were new (a known id returns nothing) on both backends; for a
    # batch SQLAlchemy sends one multi-row INSERT.
    if s.message_rows is not None:
        returned = conn.execute(s.message_rows, {name: [row[name] for row in rows]
                                                 for name in MESSAGE_COLUMNS})
    else:
        returned = conn.execute(s.message, rows[0] if len(rows) == 1 else rows)
    inserted: set[str] = {row.id for row in returned}

    daily: dict[tuple[Any, ...], dict[str, Any]] = {}
    totals: dict[tuple[Any, ...], dict[str, Any]] = {}
    periods: dict[tuple[Any, ...], dict[str, Any]] = {}
    chat_days: dict[tuple[Any, ...], dict[str, Any]] = {}
    counted: set[int] = set()
    for index, (record, created_at, model_id, chat_id, priced) in enumerate(prepared):
        if record.id not in inserted:
            continue  # already in the ledger, or repeated within this batch
        inserted.discard(record.id)
        counted.add(index)
        cost = priced.cost_micros or 0
        tokens = dict(zip(TOKENS, (count for _, count in record.usage.items()), strict=True))
        measures = {"messages": 1, "unpriced_messages": int(priced.cost_micros is None),
                    "cost_micros": cost, **tokens}
        unpriced = dict(zip(UNPRICED, (count for _, count in priced.unpriced.items()),
                            strict=True))
        day, user = created_at.date(), record.user_id
        _add(daily, (user, day, model_id), {"user_id": user, "day": day, "model_id": model_id},
             {**measures, **unpriced})
        _add(totals, (user, model_id), {"user_id": user, "model_id": model_id},
             {**measures, **unpriced})
        total = totals[(user, model_id)]
        total["last_day"] = max(total.get("last_day", day), day)
        for period in Period:
            start = period_bounds(period, created_at)[0].date()
            _add(periods, (user, period.value, start),
                 {"user_id": user, "period": period.value, "period_start": start},
                 {"cost_micros": cost, "messages": 1})
        if chat_id is not None:
            _add(chat_days, (chat_id, day), {"chat_id": chat_id, "day": day, "user_id": user},
                 measures)
    for stmt, sums in ((s.daily, daily), (s.totals, totals), (s.periods, periods),
                       (s.chat_daily, chat_days)):
        if len(sums) == 1:
            conn.execute(stmt, next(iter(sums.values())))
        elif sums:
            conn.execute(stmt, [sums[key] for key in sorted(sums)])
    releases = [{"id": r.reservation_id} for r in records if r.reservation_id is not None]
    if releases:
        conn.execute(s.release, releases)
    return [RecordResult(inserted=index in counted, cost_micros=priced.cost_micros)
            for index, (_, _, _, _, priced) in enumerate(prepared)]


def record_usage(conn: Connection, record: UsageRecord) -> RecordResult:
    """Insert the message and update the daily, lifetime, period and per-chat rollups.

    Idempotent: a record whose id is already in the ledger changes nothing. Call inside a
    transaction (`engine.begin()`), so a failure leaves no half-written rollup.
    """
    return record_usage_batch(conn, [record])[0]
