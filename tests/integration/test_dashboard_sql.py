"""The dashboards' SQL panels against a real PostgreSQL ledger, as Grafana would send them.

The SQL is taken from the generated JSON, Grafana's macros and variables are expanded, and the
answer must equal the admin API's own reports for the same range and search.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine

from ledger.engine import create_sync_engine
from ledger.policy_apply import apply_policy
from ledger.policy_file import parse_policy
from ledger.reports import CostRow, cost_table, user_detail
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord, record_usage
from ledger.users import get_user
from tests.support.dashboard_queries import expand_sql, load_dashboards, panel_queries

pytestmark = pytest.mark.postgres

POLICY = """
limits: {enabled: true, period: month, default_limit_usd: 50}
users:
  - {username: alice, name: Alice Liddell}
  - {username: bob, name: "Bob O'Brien"}
  - {username: carol_x, name: "Carol 100%"}
  - {username: dave, name: Dave Idle}
models:
  - name: claude-sonnet-4-5
    provider: anthropic
    pricing: {input: 3, output: 15, cache_read: 0.3, cache_write: 3.75, cache_write_1h: 6}
"""
DAY = datetime(2026, 3, 10, tzinfo=UTC)
# The dashboard range as Grafana sends it: 10 March 06:00 to 11 March 18:00 UTC.
RANGE = (DAY + timedelta(hours=6), DAY + timedelta(days=1, hours=18))


def _sql(title: str) -> str:
    for dashboard in load_dashboards().values():
        for query in panel_queries(dashboard):
            if query.panel_title == title:
                return query.text
    raise AssertionError(f"no panel {title!r}")


# (user, chat, day offset, hour, usage)
MESSAGES = [
    ("alice", "chat-a1", 0, 9, TokenUsage(input=1000, output=500, cache_read=2000)),
    ("alice", "chat-a1", 1, 10, TokenUsage(input=10, output=5, cache_write=300,
                                          cache_write_1h=100)),
    ("alice", "chat-a2", 0, 12, TokenUsage(input=200_000, output=1000)),
    ("alice", None, 0, 13, TokenUsage(input=5, output=5)),
    ("bob", "chat-b1", 1, 8, TokenUsage(input=300, output=50)),
    ("carol_x", "chat-c1", 0, 7, TokenUsage(input=1, output=1)),
    ("alice", "chat-old", -5, 12, TokenUsage(input=999, output=999)),  # before the range
    ("bob", "chat-late", 3, 12, TokenUsage(input=999, output=999)),  # after the range
]


@pytest.fixture
def ledger(pg_url: str) -> Iterator[Engine]:
    engine = create_sync_engine(DatabaseSettings(url=pg_url))
    with engine.begin() as conn:
        apply_policy(conn, parse_policy(POLICY))
        for i, (username, chat, day, hour, usage) in enumerate(MESSAGES):
            record_usage(conn, UsageRecord(
                id=f"msg-{i}", user_id=get_user(conn, username).id, model="claude-sonnet-4-5",
                provider="anthropic", usage=usage, chat=chat,
                created_at=DAY + timedelta(days=day, hours=hour)))
    yield engine
    engine.dispose()


def _run(pg_url: str, sql: str) -> list[dict[str, Any]]:
    with psycopg.connect(pg_url) as conn, conn.cursor() as cursor:
        cursor.execute(sql)  # no parameters: psycopg sends the text as it is
        names = [d.name for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _usd(micros: int) -> Decimal:
    return Decimal(micros) / Decimal(1_000_000)


def _expected_cost_row(row: CostRow) -> dict[str, Any]:
    t = row.totals
    return {"username": row.username, "name": row.name, "cost_usd": _usd(t.cost_micros),
            "messages": t.messages, "chats": t.chats, "input_tokens": t.input_tokens,
            "output_tokens": t.output_tokens, "cache_read_tokens": t.cache_read_tokens,
            "cache_write_tokens": t.cache_write_tokens}


@pytest.mark.parametrize(("search", "usernames"), [
    ("", ["alice", "bob", "carol_x"]),
    ("ALICE", ["alice"]),
    ("liddell", ["alice"]),
    ("o'brien", ["bob"]),  # a quote stays inside the literal
    ("100%", ["carol_x"]),  # % is a character, not a wildcard
    ("_", ["carol_x"]),  # so is _
    ("x' OR '1'='1", []),
    ("dave", []),  # no usage in the range: not listed, as in the admin API
])
def test_per_user_table_equals_the_admin_cost_table(
        ledger: Engine, pg_url: str, search: str, usernames: list[str]) -> None:
    sql = expand_sql(_sql("Cost per user"), *RANGE, {"search": search})
    rows = _run(pg_url, sql)
    with ledger.connect() as conn:
        expected = cost_table(conn, *RANGE, search=search or None, per_page=500).rows
    assert [r["username"] for r in rows] == usernames
    assert rows == [_expected_cost_row(r) for r in expected]


def test_per_user_table_sums_the_seeded_usage(ledger: Engine, pg_url: str) -> None:
    rows = {r["username"]: r for r in
            _run(pg_url, expand_sql(_sql("Cost per user"), *RANGE, {"search": ""}))}
    alice = rows["alice"]
    assert (alice["messages"], alice["chats"]) == (4, 2)
    assert alice["input_tokens"] == 1000 + 10 + 200_000 + 5
    assert alice["cache_write_tokens"] == 400
    # 1000*3 + 500*15 + 2000*0.3 = 11,100 micros; then 10*3+5*15+300*3.75+100*6 = 1,830
    # (ceilings per message); 200000*3 + 1000*15 = 615,000; 5*3+5*15 = 90.
    assert alice["cost_usd"] == _usd(11_100 + 1_830 + 615_000 + 90)


def test_per_chat_breakdown_returns_the_seeded_chats(ledger: Engine, pg_url: str) -> None:
    sql = expand_sql(_sql("Per chat"), *RANGE, {"user": "alice"})
    rows = _run(pg_url, sql)
    assert [r["chat"] for r in rows] == ["chat-a2", "chat-a1"]
    a1 = rows[1]
    assert (a1["first_day"], a1["last_day"]) == (DAY.date(), (DAY + timedelta(days=1)).date())
    assert a1["messages"] == 2
    with ledger.connect() as conn:
        detail = user_detail(conn, "alice", *RANGE, now=RANGE[1])
    assert [(r["chat"], r["first_day"], r["last_day"], r["messages"], r["cost_usd"],
             r["input_tokens"], r["output_tokens"], r["cache_read_tokens"],
             r["cache_write_tokens"]) for r in rows] == [
        (c.chat, c.first_seen, c.last_seen, c.totals.messages, _usd(c.totals.cost_micros),
         c.totals.input_tokens, c.totals.output_tokens, c.totals.cache_read_tokens,
         c.totals.cache_write_tokens) for c in detail.chats]


def test_per_chat_breakdown_of_a_user_without_chats_is_empty(ledger: Engine,
                                                              pg_url: str) -> None:
    assert _run(pg_url, expand_sql(_sql("Per chat"), *RANGE, {"user": "dave"})) == []
    assert _run(pg_url, expand_sql(_sql("Per chat"), *RANGE, {"user": "nobody'"})) == []
