"""The per-user cost table and the per-user detail, over a date range, from the rollups."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, String, Subquery, cast, func, or_, select, union_all

from ledger.engine import from_db
from ledger.periods import Period, as_utc, covering_periods
from ledger.schema import (
    chat_daily_usage,
    chats,
    daily_price_usage,
    daily_usage,
    model_prices,
    models,
    period_spend,
    users,
)
from ledger.spend import LimitStatus, limit_status
from ledger.users import get_user

MAX_PER_PAGE = 500
DEFAULT_PER_PAGE = 50
DEFAULT_RANGE = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class UsageTotals:
    cost_micros: int = 0
    messages: int = 0
    chats: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    # Both cache-write lengths (5 minutes and 1 hour).
    cache_write_tokens: int = 0


@dataclass(frozen=True, slots=True)
class CostRow:
    username: str
    name: str
    totals: UsageTotals


@dataclass(frozen=True, slots=True)
class CostTablePage:
    rows: list[CostRow]
    total: int  # users matching the search, across all pages
    page: int
    per_page: int
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class PriceSpend:
    """What one price version of a model priced in the range."""

    price_id: int
    effective_from: datetime
    source: str  # catalog | policy
    source_detail: str
    messages: int
    cost_micros: int


@dataclass(frozen=True, slots=True)
class ModelRow:
    model: str
    totals: UsageTotals
    # Fees beside tokens: web searches the answers reported (priced or not).
    web_searches: int = 0
    prices: tuple[PriceSpend, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatRow:
    chat: str
    first_seen: date
    last_seen: date
    totals: UsageTotals


@dataclass(frozen=True, slots=True)
class UserDetail:
    username: str
    name: str
    email: str
    start: datetime
    end: datetime
    summary: UsageTotals
    limit: LimitStatus
    models: list[ModelRow] = field(default_factory=list)
    chats: list[ChatRow] = field(default_factory=list)


def day_range(start: datetime, end: datetime) -> tuple[date, date]:
    """Whole UTC days touched by [start, end): the rollups have day granularity."""
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        raise ValueError("the range end must be after its start")
    last = end - timedelta(microseconds=1)
    return start.date(), last.date()


def _sums(table: Any) -> list[Any]:
    c = table.c
    return [
        func.coalesce(func.sum(c.cost_micros), 0).label("cost_micros"),
        func.coalesce(func.sum(c.messages), 0).label("messages"),
        func.coalesce(func.sum(c.input_tokens), 0).label("input_tokens"),
        func.coalesce(func.sum(c.output_tokens), 0).label("output_tokens"),
        func.coalesce(func.sum(c.cache_read_tokens), 0).label("cache_read_tokens"),
        func.coalesce(func.sum(c.cache_write_tokens + c.cache_write_1h_tokens), 0)
        .label("cache_write_tokens"),
    ]


def _totals(row: Any, chats_count: int = 0) -> UsageTotals:
    return UsageTotals(cost_micros=int(row.cost_micros), messages=int(row.messages),
                       chats=chats_count, input_tokens=int(row.input_tokens),
                       output_tokens=int(row.output_tokens),
                       cache_read_tokens=int(row.cache_read_tokens),
                       cache_write_tokens=int(row.cache_write_tokens))


def _search(stmt: Select[Any], search: str | None) -> Select[Any]:
    if not search:
        return stmt
    escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    return stmt.where(or_(func.lower(users.c.username).like(pattern, escape="\\"),
                          func.lower(cast(users.c.name, String)).like(pattern, escape="\\")))


def cost_table(conn: Connection, start: datetime, end: datetime, search: str | None = None,
               page: int = 1, per_page: int = DEFAULT_PER_PAGE) -> CostTablePage:
    """Users with usage in the range, most expensive first, `per_page` at a time.

    The ranking needs every user's spend over the range: it is summed from `period_spend`
    over the range's whole months, weeks and days (`covering_periods`), a couple of dozen rows
    per user for any range. Only the page's users then have their messages, tokens and chats
    summed from the daily rollups. Both rollups are written in the same transaction as each
    message, so the spend the ranking sorts by is the one the daily rows sum to (a message
    committed between the two reads shows in the page's figures, not yet in its order).
    """
    if page < 1:
        raise ValueError("page starts at 1")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}")
    first, last = day_range(start, end)
    spend = _spend_by_user(first, last, search)
    ranked = (select(spend.c.id, spend.c.username, spend.c.name,
                     func.count().over().label("total"))
              .order_by(spend.c.cost_micros.desc(), spend.c.username)
              .limit(per_page).offset((page - 1) * per_page))
    on_page = conn.execute(ranked).all()
    if on_page:
        total = int(on_page[0].total)
    elif page == 1:
        total = 0
    else:  # past the last page: the window had no row to count on
        total = int(conn.execute(select(func.count()).select_from(spend)).scalar_one())
    ids = [row.id for row in on_page]
    sums = {row.user_id: row for row in conn.execute(
        select(daily_usage.c.user_id, *_sums(daily_usage))
        .where(daily_usage.c.user_id.in_(ids), daily_usage.c.day >= first,
               daily_usage.c.day <= last)
        .group_by(daily_usage.c.user_id))}
    chat_counts: dict[int, int] = dict(conn.execute(
        select(chat_daily_usage.c.user_id, func.count(func.distinct(chat_daily_usage.c.chat_id)))
        .where(chat_daily_usage.c.user_id.in_(ids), chat_daily_usage.c.day >= first,
               chat_daily_usage.c.day <= last)
        .group_by(chat_daily_usage.c.user_id)).all())
    rows = [CostRow(username=row.username, name=row.name,
                    totals=_totals(sums[row.id], int(chat_counts.get(row.id, 0))))
            for row in on_page]
    return CostTablePage(rows=rows, total=total, page=page, per_page=per_page,
                         start=as_utc(start), end=as_utc(end))


def _spend_by_user(first: date, last: date, search: str | None) -> Subquery:
    """(id, username, name, cost_micros) of every user matching `search` with usage in
    [first, last], summed from `period_spend`."""
    starts: dict[Period, list[date]] = {}
    for period, period_start in covering_periods(first, last):
        starts.setdefault(period, []).append(period_start)
    c = period_spend.c
    # Per kind: one index-only range (an OR of the three would read the table's pages),
    # summed per user, then joined to the matching users. Joining after a UNION instead, the
    # planner guesses the union yields 200 users and a search 6, and loops over the product.
    arms = []
    for period, days in starts.items():
        summed = (select(c.user_id, func.sum(c.cost_micros).label("cost_micros"))
                  .where(c.period == period.value, c.period_start.in_(days))
                  .group_by(c.user_id).subquery())
        arms.append(_search(select(users.c.id, users.c.username, users.c.name,
                                   summed.c.cost_micros)
                            .join(summed, summed.c.user_id == users.c.id), search))
    rows = union_all(*arms).subquery()
    return (select(rows.c.id, rows.c.username, rows.c.name,
                   func.sum(rows.c.cost_micros).label("cost_micros"))
            .group_by(rows.c.id, rows.c.username, rows.c.name).subquery())


def user_detail(conn: Connection, username: str, start: datetime, end: datetime,
                now: datetime, max_chats: int = 500) -> UserDetail:
    user = get_user(conn, username)
    first, last = day_range(start, end)
    in_range = (daily_usage.c.user_id == user.id, daily_usage.c.day >= first,
                daily_usage.c.day <= last)
    summary_row = conn.execute(select(*_sums(daily_usage)).where(*in_range)).one()
    chat_filter = (chat_daily_usage.c.user_id == user.id, chat_daily_usage.c.day >= first,
                   chat_daily_usage.c.day <= last)
    chat_count = conn.execute(select(func.count(func.distinct(chat_daily_usage.c.chat_id)))
                              .where(*chat_filter)).scalar_one()
    per_model = conn.execute(
        select(models.c.name, *_sums(daily_usage),
               func.coalesce(func.sum(daily_usage.c.web_searches), 0).label("web_searches"))
        .join(models, models.c.id == daily_usage.c.model_id).where(*in_range)
        .group_by(models.c.name).order_by(func.sum(daily_usage.c.cost_micros).desc(),
                                          models.c.name))
    by_price = spend_by_price(conn, user.id, first, last)
    per_chat = conn.execute(
        select(chats.c.external_id, func.min(chat_daily_usage.c.day).label("first_seen"),
               func.max(chat_daily_usage.c.day).label("last_seen"), *_sums(chat_daily_usage))
        .join(chats, chats.c.id == chat_daily_usage.c.chat_id).where(*chat_filter)
        .group_by(chats.c.external_id)
        .order_by(func.sum(chat_daily_usage.c.cost_micros).desc(), chats.c.external_id)
        .limit(max_chats))
    return UserDetail(
        username=user.username, name=user.name, email=user.email,
        start=as_utc(start), end=as_utc(end),
        summary=_totals(summary_row, int(chat_count)),
        limit=limit_status(conn, user.id, now),
        models=[ModelRow(model=row.name, totals=_totals(row),
                         web_searches=int(row.web_searches),
                         prices=tuple(by_price.get(row.name, ())))
                for row in per_model],
        chats=[ChatRow(chat=row.external_id, first_seen=_as_date(row.first_seen),
                       last_seen=_as_date(row.last_seen), totals=_totals(row, 1))
               for row in per_chat],
    )


def spend_by_price(conn: Connection, user_id: int, first: date, last: date
                   ) -> dict[str, list[PriceSpend]]:
    """Per model, what each price version priced for the user over whole UTC days."""
    c = daily_price_usage.c
    stmt = (select(models.c.name, model_prices.c.id, model_prices.c.effective_from,
                   model_prices.c.source, model_prices.c.source_detail,
                   func.sum(c.messages).label("messages"),
                   func.sum(c.cost_micros).label("cost_micros"))
            .join(models, models.c.id == c.model_id)
            .join(model_prices, model_prices.c.id == c.price_id)
            .where(c.user_id == user_id, c.day >= first, c.day <= last)
            .group_by(models.c.name, model_prices.c.id, model_prices.c.effective_from,
                      model_prices.c.source, model_prices.c.source_detail)
            .order_by(models.c.name, model_prices.c.effective_from, model_prices.c.id))
    found: dict[str, list[PriceSpend]] = {}
    for row in conn.execute(stmt):
        found.setdefault(row.name, []).append(PriceSpend(
            price_id=row.id, effective_from=from_db(row.effective_from), source=row.source,
            source_detail=row.source_detail, messages=int(row.messages),
            cost_micros=int(row.cost_micros)))
    return found


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
