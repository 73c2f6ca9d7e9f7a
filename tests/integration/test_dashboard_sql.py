"""The dashboards' SQL panels against a real PostgreSQL ledger, as Grafana would send them.

The SQL is taken from the generated JSON, Grafana's macros and variables are expanded, and the
answer must equal the admin API's own reports for the same range and search.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine

from ledger.engine import create_sync_engine
from ledger.policy_apply import apply_policy
from ledger.policy_file import parse_policy
from ledger.reports import MAX_PER_PAGE, CostRow, cost_table, user_detail
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord, record_usage, record_usage_batch
from ledger.users import ensure_user, get_user
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


def _panel_rows(pg_url: str, start: datetime, end: datetime, search: str
                ) -> list[dict[str, Any]]:
    return _run(pg_url, expand_sql(_sql("Cost per user"), start, end, {"search": search}))


def _cost_table_rows(engine: Engine, start: datetime, end: datetime, search: str
                     ) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        page = cost_table(conn, start, end, search=search or None, per_page=MAX_PER_PAGE)
    return [_expected_cost_row(r) for r in page.rows]


def _at(day: date, hour: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


UNPRICED_MODEL = "mystery-model"  # not in the policy: its usage is recorded at zero cost
SEASON = (date(2025, 12, 20), date(2026, 5, 10))


@pytest.fixture
def seasonal_ledger(pg_url: str) -> Iterator[Engine]:
    """Four users with usage every day from 20 December to 10 May, whose spend rises and falls
    at different times (so the order changes with the range); erin uses an unpriced model only.
    Edge-a and edge-b spend the same every day: tied, edge-a is listed first. And one user per
    day, `on-YYYY-MM-DD`, with usage on that day only and a little more each day: a day the
    ranking missed would drop its user, a day it counted twice would move its user to the top.
    """
    engine = create_sync_engine(DatabaseSettings(url=pg_url))
    with engine.begin() as conn:
        apply_policy(conn, parse_policy(POLICY))
        ids = {name: ensure_user(conn, name).id
               for name in ("alice", "bob", "carol_x", "erin", "edge-a", "edge-b")}
        records = []
        day, n = SEASON[0], 0
        while day <= SEASON[1]:
            season = (day - SEASON[0]).days
            for username, tokens in [("alice", 50_000 - 350 * season),
                                     ("bob", 3_000 + 350 * season),
                                     ("carol_x", 20_000 + (day.day % 7) * 1000),
                                     ("erin", 7_777),
                                     ("edge-a", 12_000), ("edge-b", 12_000)]:
                n += 1
                records.append(UsageRecord(
                    id=f"msg-{n}", user_id=ids[username],
                    model=UNPRICED_MODEL if username == "erin" else "claude-sonnet-4-5",
                    provider="anthropic", usage=TokenUsage(input=tokens, output=day.day),
                    chat=f"{username}-{day.isocalendar().week % 4}",
                    created_at=_at(day, 7 + season % 13)))
            records.append(UsageRecord(
                id=f"once-{day}", user_id=ensure_user(conn, f"on-{day}").id,
                model="claude-sonnet-4-5", provider="anthropic",
                usage=TokenUsage(input=1000 + 10 * season, output=0), created_at=_at(day, 12)))
            day += timedelta(days=1)
        record_usage_batch(conn, records)
    yield engine
    engine.dispose()


@pytest.mark.parametrize(("start", "end"), [
    # Whole February and March, the second half of January (a whole week and loose days) and
    # three days of April; the range's edges fall inside their days.
    (_at(date(2026, 1, 15), 10), _at(date(2026, 4, 3), 12)),
    (_at(date(2026, 2, 1)), _at(date(2026, 3, 1))),  # exactly February
    (_at(date(2026, 1, 1)), _at(date(2026, 5, 1))),  # whole months only
    (_at(date(2026, 1, 29)), _at(date(2026, 2, 3), 6)),  # across a month edge, no whole month
    (_at(date(2025, 12, 28), 23), _at(date(2026, 1, 10), 12)),  # across a year edge
    (_at(date(2026, 2, 20)), _at(date(2026, 4, 20))),  # whole March between loose weeks
    (_at(date(2026, 1, 2)), _at(date(2026, 3, 31))),  # January and March one day short
    (_at(date(2026, 4, 20), 23), _at(date(2026, 4, 21), 1)),  # two days
])
def test_per_user_table_equals_the_cost_table_across_month_edges(
        seasonal_ledger: Engine, pg_url: str, start: datetime, end: datetime) -> None:
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    # Spend on the days just outside the range would put edge-b before edge-a.
    with seasonal_ledger.begin() as conn:
        edge_b = get_user(conn, "edge-b").id
        record_usage_batch(conn, [UsageRecord(
            id=f"outside-{day}", user_id=edge_b, model="claude-sonnet-4-5",
            provider="anthropic", usage=TokenUsage(input=1_000_000, output=0),
            created_at=_at(day, 12)) for day in (first - timedelta(days=1),
                                                  last + timedelta(days=1))])
    rows = _panel_rows(pg_url, start, end, "")
    assert rows == _cost_table_rows(seasonal_ledger, start, end, "")
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    usernames = [r["username"] for r in rows]
    assert set(usernames) == {"alice", "bob", "carol_x", "erin", "edge-a", "edge-b"} | {
        f"on-{day}" for day in days}
    assert usernames.index("edge-b") == usernames.index("edge-a") + 1
    # Usage without a priced cost is listed, last, with its figures.
    assert rows[-1]["username"] == "erin" and rows[-1]["cost_usd"] == 0
    assert rows[-1]["messages"] > 0 and rows[-1]["input_tokens"] > 0


def test_the_order_follows_the_range(seasonal_ledger: Engine, pg_url: str) -> None:
    """Alice spends most in December, Bob in May: the ranking is over the range asked for."""
    december = _panel_rows(pg_url, _at(date(2025, 12, 20)), _at(date(2026, 1, 1)), "")
    may = _panel_rows(pg_url, _at(date(2026, 5, 1)), _at(date(2026, 5, 10)), "")
    assert december[0]["username"] == "alice"
    assert may[0]["username"] == "bob"


CROWD = MAX_PER_PAGE + 40
CROWD_RANGE = (_at(date(2026, 1, 1), 6), _at(date(2026, 2, 2), 18))  # January and two days


@pytest.fixture
def crowded_ledger(pg_url: str) -> Iterator[Engine]:
    """More users with usage than the panel lists, many of them tied on spend."""
    engine = create_sync_engine(DatabaseSettings(url=pg_url))
    with engine.begin() as conn:
        apply_policy(conn, parse_policy(POLICY))
        records = []
        for i in range(CROWD):
            user_id = ensure_user(conn, f"user_{i:04d}").id
            # Spends repeat every 30 users: ties, also at the cut-off, go by username.
            usage = TokenUsage(input=1000 * (i % 30 + 1), output=100)
            days = [date(2026, 1, 31), date(2026, 2, 1)] if i % 3 else [date(2026, 1, 10)]
            for day in days:
                records.append(UsageRecord(
                    id=f"msg-{i}-{day}", user_id=user_id, model="claude-sonnet-4-5",
                    provider="anthropic", usage=usage, chat=f"chat-{i % 4}",
                    created_at=_at(day, 12)))
        # Outside the range: would reorder the table if it were counted.
        records.append(UsageRecord(
            id="msg-late", user_id=ensure_user(conn, "user_0000").id, model="claude-sonnet-4-5",
            provider="anthropic", usage=TokenUsage(input=10_000_000, output=0),
            created_at=_at(date(2026, 2, 3), 1)))
        record_usage_batch(conn, records)
    yield engine
    engine.dispose()


@pytest.mark.parametrize(("search", "listed"), [
    ("", MAX_PER_PAGE),
    ("USER_", MAX_PER_PAGE),  # every user matches: still cut at the top 500
    ("_01", 100),  # user_0100 to user_0199; `_` is not a wildcard (user_0010 does not match)
])
def test_per_user_table_lists_the_cost_tables_first_page_of_500(
        crowded_ledger: Engine, pg_url: str, search: str, listed: int) -> None:
    rows = _panel_rows(pg_url, *CROWD_RANGE, search)
    assert len(rows) == listed
    assert rows == _cost_table_rows(crowded_ledger, *CROWD_RANGE, search)
    if listed == MAX_PER_PAGE:  # cut off inside a tie: the usernames decide who is listed
        with crowded_ledger.connect() as conn:
            left_out = cost_table(conn, *CROWD_RANGE, search=search or None,
                                  page=2, per_page=MAX_PER_PAGE)
        assert left_out.total == CROWD
        assert left_out.rows[0].totals.cost_micros == rows[-1]["cost_usd"] * 1_000_000


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
