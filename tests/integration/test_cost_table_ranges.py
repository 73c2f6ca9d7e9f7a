"""The cost table over ranges that straddle week and month edges equals a direct sum over the
daily rollups: its ranking reads `period_spend` over whole months, weeks and days, its figures
the daily rows of the page's users, and both must agree with summing every day of the range."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, func, select

from ledger.engine import create_sync_engine
from ledger.reports import CostRow, UsageTotals, cost_table, day_range
from ledger.schema import chat_daily_usage, daily_usage, users
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from tests.support.ledger_seed import record, seed_policy

SONNET, GPT = "claude-sonnet-4-5", "gpt-5"
# (user, model, day, hour, chat, usage): around the edges of October, November and December
# 2026 (Mondays: 26 October, 2 and 30 November), chats active on both sides of an edge.
TRAFFIC = [
    ("alice", SONNET, date(2026, 10, 25), 9, "a1", TokenUsage(input=1000, output=100)),
    ("alice", SONNET, date(2026, 10, 31), 23, "a1", TokenUsage(input=500, cache_read=40)),
    ("alice", GPT, date(2026, 11, 1), 0, "a2", TokenUsage(input=100, output=7)),
    ("alice", SONNET, date(2026, 11, 30), 12, "a2", TokenUsage(output=2000, cache_write=50)),
    ("alice", SONNET, date(2026, 12, 1), 1, "a1", TokenUsage(input=30, cache_write_1h=9)),
    ("bob", SONNET, date(2026, 10, 30), 12, None, TokenUsage(output=100_000)),
    ("bob", GPT, date(2026, 11, 2), 12, "b1", TokenUsage(input=4000)),
    ("bob", SONNET, date(2026, 11, 15), 12, "b1", TokenUsage(output=1)),
    ("bob", SONNET, date(2026, 12, 7), 12, "b2", TokenUsage(output=9000)),
    ("carol", "mystery-model", date(2026, 11, 8), 6, "c1", TokenUsage(input=70)),
    ("carol", SONNET, date(2026, 11, 29), 6, "c1", TokenUsage(input=900, output=900)),
    ("dave", GPT, date(2026, 12, 2), 12, None, TokenUsage(output=50_000)),
    ("erin", SONNET, date(2026, 10, 1), 12, "e1", TokenUsage(input=1)),
    ("erin", SONNET, date(2026, 12, 31), 12, "e1", TokenUsage(input=2)),
]
IDS = [f"rec-{n}" for n in range(len(TRAFFIC))]
STARTS = [date(2026, 10, 1), date(2026, 10, 26), date(2026, 10, 31), date(2026, 11, 1),
          date(2026, 11, 2), date(2026, 11, 9), date(2026, 11, 30)]
ENDS = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 30), date(2026, 12, 1),
        date(2026, 12, 2), date(2026, 12, 8), date(2027, 1, 1)]


def _record_all(engine: Engine) -> None:
    for record_id, (user, model, day, hour, chat, usage) in zip(IDS, TRAFFIC, strict=True):
        record(engine, user, model, usage, datetime(day.year, day.month, day.day, hour,
                                                    tzinfo=UTC),
               chat=chat, record_id=record_id, provider="openai" if model != SONNET else
               "anthropic")


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    seed_policy(engine)
    _record_all(engine)
    yield engine
    engine.dispose()


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _summed_day_by_day(conn: Connection, start: datetime, end: datetime) -> list[CostRow]:
    """Every user with usage in the range from its daily rows, most expensive first."""
    first, last = day_range(start, end)
    d = daily_usage.c
    chats: dict[int, int] = dict(conn.execute(
        select(chat_daily_usage.c.user_id, func.count(func.distinct(chat_daily_usage.c.chat_id)))
        .where(chat_daily_usage.c.day >= first, chat_daily_usage.c.day <= last)
        .group_by(chat_daily_usage.c.user_id)).all())
    rows = conn.execute(
        select(users.c.id, users.c.username, users.c.name, func.sum(d.cost_micros),
               func.sum(d.messages), func.sum(d.input_tokens), func.sum(d.output_tokens),
               func.sum(d.cache_read_tokens),
               func.sum(d.cache_write_tokens + d.cache_write_1h_tokens))
        .join(users, users.c.id == d.user_id).where(d.day >= first, d.day <= last)
        .group_by(users.c.id, users.c.username, users.c.name)).all()
    found = [CostRow(username=r.username, name=r.name, totals=UsageTotals(
        cost_micros=int(r[3]), messages=int(r[4]), chats=int(chats.get(r.id, 0)),
        input_tokens=int(r[5]), output_tokens=int(r[6]), cache_read_tokens=int(r[7]),
        cache_write_tokens=int(r[8]))) for r in rows]
    return sorted(found, key=lambda row: (-row.totals.cost_micros, row.username))


def _every_page(conn: Connection, start: datetime, end: datetime,
                per_page: int) -> tuple[list[CostRow], set[int]]:
    rows: list[CostRow] = []
    totals: set[int] = set()
    for page in range(1, 8):
        table = cost_table(conn, start, end, page=page, per_page=per_page)
        rows += table.rows
        totals.add(table.total)
    return rows, totals


@pytest.mark.parametrize("first", STARTS, ids=str)
def test_cost_table_equals_the_daily_sum_over_ranges_across_month_edges(
        engine: Engine, first: date) -> None:
    with engine.connect() as conn:
        for end_day in (e for e in ENDS if e > first):
            start, end = _midnight(first), _midnight(end_day)
            expected = _summed_day_by_day(conn, start, end)
            assert cost_table(conn, start, end, per_page=50).rows == expected
            # Page by page (two rows each), the last pages past the end: the same rows, and
            # every page tells the same total.
            rows, totals = _every_page(conn, start, end, per_page=2)
            assert rows == expected and totals == {len(expected)}
            # A range not on midnight covers the whole days it touches.
            assert cost_table(conn, start + timedelta(hours=5), end - timedelta(hours=1),
                              per_page=50).rows == expected


def test_a_search_pages_over_the_matching_users_only(engine: Engine) -> None:
    start, end = _midnight(date(2026, 10, 26)), _midnight(date(2026, 12, 8))
    with engine.connect() as conn:
        # "li" is in alice (and Alice Liddell) and in Dave Lister, in no one else's names.
        expected = [row for row in _summed_day_by_day(conn, start, end)
                    if row.username in ("alice", "dave")]
        pages = [cost_table(conn, start, end, search="LI", page=page, per_page=1)
                 for page in (1, 2, 3)]
    assert len(expected) == 2
    assert [page.rows for page in pages] == [expected[:1], expected[1:], []]
    assert [page.total for page in pages] == [2, 2, 2]


def test_a_replayed_record_leaves_the_cost_table_as_it_was(engine: Engine) -> None:
    start, end = _midnight(date(2026, 10, 1)), _midnight(date(2027, 1, 1))
    with engine.connect() as conn:
        before = cost_table(conn, start, end)
    _record_all(engine)  # the same ids again, as a spool replay would send them
    with engine.connect() as conn:
        after = cost_table(conn, start, end)
        assert after.rows == before.rows == _summed_day_by_day(conn, start, end)
    assert sum(row.totals.messages for row in after.rows) == len(TRAFFIC)
