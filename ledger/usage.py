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

from ledger.catalog import ensure_traffic_model, prefer_name
from ledger.dialect import upsert_for
from ledger.periods import Period, as_utc, period_bounds
from ledger.price_versions import PriceVersion, version_at, version_from_row
from ledger.pricing import GAPS, Billing, PricedUsage, price_message
from ledger.response_owners import record_owners
from ledger.retention import refused_records
from ledger.schema import (
    FEE_COLUMNS,
    GAP_COLUMNS,
    chat_daily_usage,
    chats,
    daily_price_usage,
    daily_usage,
    messages,
    model_aliases,
    model_prices,
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
    # What the answer reported it was served at (an estimated record: what the request asked
    # for), and its per-request fees; see ledger.pricing.
    service_tier: str | None = None
    batch: bool = False
    speed: str | None = None
    web_searches: int = 0
    # Usage already billed elsewhere (`agentmeter coder import`): recorded with the cost it
    # was billed at instead of being priced again, so the spend carried over is what the
    # user was charged.
    billed: BilledCost | None = None
    # The id the provider gave the answer, recorded as this user's (ledger.response_owners).
    response_id: str | None = None

    @property
    def billing(self) -> Billing:
        return Billing(service_tier=self.service_tier, batch=self.batch, speed=self.speed,
                       web_searches=self.web_searches)


@dataclass(frozen=True, slots=True)
class BilledCost:
    # None: billed as unpriced (all of the message's tokens count as unpriced).
    cost_micros: int | None


@dataclass(frozen=True, slots=True)
class RecordResult:
    inserted: bool
    cost_micros: int | None
    # Older than the oldest message kept (ledger.retention): not written, nothing counted.
    refused: bool = False


TOKENS = tuple(f"{kind.value}_tokens" for kind in TOKEN_KINDS)
UNPRICED = tuple(f"unpriced_{kind.value}_tokens" for kind in TOKEN_KINDS)
MEASURES = ("messages", "unpriced_messages", "cost_micros")
PRICE_MEASURES = ("messages", "cost_micros", "web_searches")


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
    prices: Executable
    daily: Executable
    daily_prices: Executable
    totals: Executable
    periods: Executable
    chat_daily: Executable
    release: Executable


MESSAGE_COLUMNS = ("id", "user_id", "chat_id", "model_id", "provider", *TOKENS,
                   "unpriced_tokens", "cost_micros", "partial", "created_at", "price_id",
                   "service_tier", "batch", "speed", "tier_start", "web_searches",
                   "pricing_gaps")


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
    model = (select(models.c.id, models.c.name)
             .where(or_(models.c.name == bindparam("name"), models.c.id.in_(alias_of))))
    prices = (select(model_prices)
              .where(model_prices.c.model_id.in_(bindparam("ids", expanding=True)))
              .order_by(model_prices.c.effective_from, model_prices.c.id))
    chat = (select(chats.c.id, chats.c.user_id, chats.c.external_id)
            .where(tuple_(chats.c.user_id, chats.c.external_id)
                   .in_(bindparam("pairs", expanding=True))))
    new_chat = (upsert_for(dialect, chats)
                .values(_bind("user_id", "external_id", "created_at"))
                .on_conflict_do_nothing(index_elements=["user_id", "external_id"]))
    message = (upsert_for(dialect, messages)
               .values(_bind(*MESSAGE_COLUMNS))
               .on_conflict_do_nothing().returning(messages.c.id))
    last_day: Any = bindparam("last_day")
    later = case((usage_totals.c.last_day.is_(None), last_day),
                 (usage_totals.c.last_day < last_day, last_day), else_=usage_totals.c.last_day)
    return _Statements(
        model=model, chat=chat, new_chat=new_chat, message=message, prices=prices,
        message_rows=_message_rows() if dialect == "postgresql" else None,
        daily=_accumulate(dialect, daily_usage, ("user_id", "day", "model_id"),
                          (*MEASURES, *TOKENS, *UNPRICED, *FEE_COLUMNS, *GAP_COLUMNS)),
        daily_prices=_accumulate(dialect, daily_price_usage,
                                 ("user_id", "day", "model_id", "price_id"), PRICE_MEASURES),
        totals=_accumulate(dialect, usage_totals, ("user_id", "model_id"),
                           (*MEASURES, *TOKENS, *UNPRICED, *FEE_COLUMNS, *GAP_COLUMNS),
                           {"last_day": later}),
        periods=_accumulate(dialect, period_spend, ("user_id", "period", "period_start"),
                            ("cost_micros", "messages")),
        chat_daily=_accumulate(dialect, chat_daily_usage, ("chat_id", "day"),
                               (*MEASURES, *TOKENS), carried=("user_id",)),
        release=reservations.delete().where(reservations.c.id == bindparam("id")),
    )


def _model_id(conn: Connection, s: _Statements, record: UsageRecord) -> int:
    row = prefer_name(conn.execute(s.model, {"name": record.model}), record.model)
    if row is None:
        return ensure_traffic_model(conn, record.model, record.provider)
    return int(row.id)


def _versions(conn: Connection, s: _Statements,
              model_ids: set[int]) -> dict[int, list[PriceVersion]]:
    """The batch's models' price versions, in the order they take effect (one statement)."""
    found: dict[int, list[PriceVersion]] = {model_id: [] for model_id in model_ids}
    for row in conn.execute(s.prices, {"ids": sorted(model_ids)}):
        found[row.model_id].append(version_from_row(row))
    return found


def _price(versions: list[PriceVersion], record: UsageRecord, created_at: datetime
           ) -> tuple[int | None, PricedUsage]:
    """The version in effect when the request was made, and what it makes the message cost
    (a record billed elsewhere keeps the cost it was billed at, priced by no version here)."""
    if record.billed is not None:
        cost = record.billed.cost_micros
        return None, PricedUsage(cost, record.usage if cost is None else TokenUsage())
    version = version_at(versions, created_at)
    sheet = None if version is None else version.sheet
    priced = price_message(sheet, record.usage, record.billing)
    return (None if version is None or priced.cost_micros is None else version.id), priced


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
    models_seen: dict[tuple[str, str], int] = {}
    first_seen: dict[tuple[int, str], datetime] = {}
    for record in records:
        if record.chat:
            first_seen.setdefault((record.user_id, record.chat), as_utc(record.created_at))
    chat_ids = _chat_ids(conn, s, first_seen)
    for record in records:
        model_key = (record.model, record.provider)
        if model_key not in models_seen:
            models_seen[model_key] = _model_id(conn, s, record)
    versions = _versions(conn, s, set(models_seen.values()))
    rows: list[dict[str, Any]] = []
    prepared: list[tuple[UsageRecord, datetime, int, int | None, int | None, PricedUsage]] = []
    for record in records:
        created_at = as_utc(record.created_at)
        model_id = models_seen[(record.model, record.provider)]
        chat_id = chat_ids[(record.user_id, record.chat)] if record.chat else None
        price_id, priced = _price(versions[model_id], record, created_at)
        prepared.append((record, created_at, model_id, chat_id, price_id, priced))
        rows.append({
            "id": record.id, "user_id": record.user_id, "chat_id": chat_id,
            "model_id": model_id, "provider": record.provider,
            **dict(zip(TOKENS, (count for _, count in record.usage.items()), strict=True)),
            "unpriced_tokens": priced.unpriced.total, "cost_micros": priced.cost_micros,
            "partial": record.partial, "created_at": created_at, "price_id": price_id,
            "service_tier": record.service_tier, "batch": record.batch, "speed": record.speed,
            "tier_start": priced.tier_start, "web_searches": record.web_searches,
            "pricing_gaps": ",".join(sorted(priced.gaps)) or None,
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
    daily_prices: dict[tuple[Any, ...], dict[str, Any]] = {}
    totals: dict[tuple[Any, ...], dict[str, Any]] = {}
    periods: dict[tuple[Any, ...], dict[str, Any]] = {}
    chat_days: dict[tuple[Any, ...], dict[str, Any]] = {}
    counted: set[int] = set()
    for index, (record, created_at, model_id, chat_id, price_id, priced) in enumerate(prepared):
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
        unpriced.update({"web_searches": record.web_searches,
                         "unpriced_web_searches": priced.unpriced_web_searches})
        unpriced.update({f"{gap.value}_gap_messages": int(gap in priced.gaps) for gap in GAPS})
        day, user = created_at.date(), record.user_id
        _add(daily, (user, day, model_id), {"user_id": user, "day": day, "model_id": model_id},
             {**measures, **unpriced})
        _add(totals, (user, model_id), {"user_id": user, "model_id": model_id},
             {**measures, **unpriced})
        if price_id is not None:
            _add(daily_prices, (user, day, model_id, price_id),
                 {"user_id": user, "day": day, "model_id": model_id, "price_id": price_id},
                 {"messages": 1, "cost_micros": cost, "web_searches": record.web_searches})
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
    for stmt, sums in ((s.daily, daily), (s.daily_prices, daily_prices), (s.totals, totals),
                       (s.periods, periods), (s.chat_daily, chat_days)):
        if len(sums) == 1:
            conn.execute(stmt, next(iter(sums.values())))
        elif sums:
            conn.execute(stmt, [sums[key] for key in sorted(sums)])
    record_owners(conn, ((r.response_id, r.user_id, as_utc(r.created_at))
                         for r in records if r.response_id is not None))
    releases = [{"id": r.reservation_id} for r in records if r.reservation_id is not None]
    if releases:
        conn.execute(s.release, releases)
    return [RecordResult(inserted=index in counted, cost_micros=priced.cost_micros)
            for index, (_, _, _, _, _, priced) in enumerate(prepared)]


def refused_count(results: list[RecordResult]) -> int:
    """How many records of a batch were refused (older than the oldest message kept)."""
    return sum(1 for result in results if result.refused)


def record_usage(conn: Connection, record: UsageRecord) -> RecordResult:
    """Insert the message and update the daily, lifetime, period and per-chat rollups.

    Idempotent: a record whose id is already in the ledger changes nothing. Call inside a
    transaction (`engine.begin()`), so a failure leaves no half-written rollup.
    """
    return record_usage_batch(conn, [record])[0]
