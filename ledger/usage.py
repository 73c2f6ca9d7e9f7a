"""Recording one answered request: the message and every rollup, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, select

from ledger.catalog import ensure_traffic_model, pricing_from_row
from ledger.dialect import upsert
from ledger.periods import Period, as_utc, period_bounds
from ledger.pricing import PricedUsage, price_usage
from ledger.schema import (
    chat_daily_usage,
    chats,
    daily_usage,
    messages,
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


def _token_values(usage: TokenUsage, prefix: str = "") -> dict[str, int]:
    return {f"{prefix}{kind.value}_tokens": count for kind, count in usage.items()}


def _increment(table: Any, values: dict[str, int]) -> dict[str, Any]:
    return {name: getattr(table.c, name) + value for name, value in values.items()}


def _chat_id(conn: Connection, user_id: int, external_id: str, created_at: datetime) -> int:
    stmt = upsert(conn, chats).values(user_id=user_id, external_id=external_id,
                                      created_at=created_at)
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["user_id", "external_id"]))
    return int(conn.execute(select(chats.c.id).where(chats.c.user_id == user_id,
                                                     chats.c.external_id == external_id))
               .scalar_one())


def _price(conn: Connection, model_id: int, usage: TokenUsage) -> PricedUsage:
    row = conn.execute(select(models).where(models.c.id == model_id)).one()
    return price_usage(pricing_from_row(row), usage)


def record_usage(conn: Connection, record: UsageRecord) -> RecordResult:
    """Insert the message and update the daily, lifetime and per-chat rollups.

    Idempotent: a record whose id is already in the ledger changes nothing. Call inside a
    transaction (`engine.begin()`), so a failure leaves no half-written rollup.
    """
    created_at = as_utc(record.created_at)
    model_id = ensure_traffic_model(conn, record.model, record.provider)
    priced = _price(conn, model_id, record.usage)
    chat_id = (_chat_id(conn, record.user_id, record.chat, created_at)
               if record.chat else None)
    insert = upsert(conn, messages).values(
        id=record.id, user_id=record.user_id, chat_id=chat_id, model_id=model_id,
        provider=record.provider, **_token_values(record.usage),
        unpriced_tokens=priced.unpriced.total, cost_micros=priced.cost_micros,
        partial=record.partial, created_at=created_at,
    ).on_conflict_do_nothing(index_elements=["id"]).returning(messages.c.id)
    if conn.execute(insert).first() is None:
        _release(conn, record.reservation_id)
        return RecordResult(inserted=False, cost_micros=priced.cost_micros)

    measures = {
        "messages": 1,
        "unpriced_messages": 1 if priced.cost_micros is None else 0,
        "cost_micros": priced.cost_micros or 0,
        **_token_values(record.usage),
    }
    with_unpriced = {**measures, **_token_values(priced.unpriced, "unpriced_")}
    day = created_at.date()
    stmt = upsert(conn, daily_usage).values(user_id=record.user_id, day=day, model_id=model_id,
                                            **with_unpriced)
    conn.execute(stmt.on_conflict_do_update(index_elements=["user_id", "day", "model_id"],
                                            set_=_increment(daily_usage, with_unpriced)))
    stmt = upsert(conn, usage_totals).values(user_id=record.user_id, model_id=model_id,
                                             last_day=day, **with_unpriced)
    later = case((usage_totals.c.last_day < day, day), else_=usage_totals.c.last_day)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=["user_id", "model_id"],
        set_={**_increment(usage_totals, with_unpriced),
              "last_day": case((usage_totals.c.last_day.is_(None), day), else_=later)}))
    spend = {"cost_micros": priced.cost_micros or 0, "messages": 1}
    for period in Period:
        start = period_bounds(period, created_at)[0].date()
        stmt = upsert(conn, period_spend).values(user_id=record.user_id, period=period.value,
                                                 period_start=start, **spend)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["user_id", "period", "period_start"],
            set_=_increment(period_spend, spend)))
    if chat_id is not None:
        stmt = upsert(conn, chat_daily_usage).values(chat_id=chat_id, day=day,
                                                     user_id=record.user_id, **measures)
        conn.execute(stmt.on_conflict_do_update(index_elements=["chat_id", "day"],
                                                set_=_increment(chat_daily_usage, measures)))
    _release(conn, record.reservation_id)
    return RecordResult(inserted=True, cost_micros=priced.cost_micros)


def _release(conn: Connection, reservation_id: str | None) -> None:
    if reservation_id is not None:
        conn.execute(reservations.delete().where(reservations.c.id == reservation_id))


__all__ = ["TOKEN_KINDS", "RecordResult", "UsageRecord", "record_usage"]
