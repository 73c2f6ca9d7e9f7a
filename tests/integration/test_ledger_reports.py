"""The per-user cost table and per-user detail over a date range."""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from ledger.engine import create_sync_engine
from ledger.errors import UserNotFound
from ledger.reports import cost_table, user_detail
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from tests.support.ledger_seed import record, seed_policy


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    seed_policy(engine)
    sonnet = "claude-sonnet-4-5"
    record(engine, "alice", sonnet, TokenUsage(input=1000, output=100), at(3), chat="a1")
    record(engine, "alice", sonnet, TokenUsage(input=1000, cache_read=10, cache_write=5,
                                               cache_write_1h=6), at(4), chat="a1")
    record(engine, "alice", "gpt-5", TokenUsage(input=100), at(4), chat="a2", provider="openai")
    record(engine, "bob", sonnet, TokenUsage(output=1_000_000), at(5))
    record(engine, "carol", sonnet, TokenUsage(input=1), at(10), chat="c1")
    yield engine
    engine.dispose()


def test_cost_table_sums_the_range_most_expensive_first(engine: Engine) -> None:
    with engine.connect() as conn:
        page = cost_table(conn, at(1, 0), at(6, 0))
    assert [r.username for r in page.rows] == ["bob", "alice"]
    alice = page.rows[1].totals
    assert (alice.messages, alice.chats, alice.input_tokens, alice.output_tokens,
            alice.cache_read_tokens, alice.cache_write_tokens) == (3, 2, 2100, 100, 10, 11)
    assert alice.cost_micros == 3000 + 1500 + 3000 + 3 + 19 + 36 + 125
    assert page.rows[0].totals.cost_micros == 15_000_000 and page.rows[0].totals.chats == 0
    assert page.total == 2


def test_search_matches_username_and_display_name(engine: Engine) -> None:
    with engine.connect() as conn:
        by_name = cost_table(conn, at(1, 0), at(30, 0), search="liddell")
        by_user = cost_table(conn, at(1, 0), at(30, 0), search="CAR")
        none = cost_table(conn, at(1, 0), at(30, 0), search="%")
    assert [r.username for r in by_name.rows] == ["alice"]
    assert [r.username for r in by_user.rows] == ["carol"]
    assert none.rows == [] and none.total == 0


def test_pagination(engine: Engine) -> None:
    with engine.connect() as conn:
        first = cost_table(conn, at(1, 0), at(30, 0), page=1, per_page=2)
        second = cost_table(conn, at(1, 0), at(30, 0), page=2, per_page=2)
        with pytest.raises(ValueError):
            cost_table(conn, at(1, 0), at(30, 0), per_page=501)
        with pytest.raises(ValueError):
            cost_table(conn, at(1, 0), at(30, 0), page=0)
    assert [r.username for r in first.rows] == ["bob", "alice"]
    assert [r.username for r in second.rows] == ["carol"]
    assert first.total == second.total == 3


def test_user_detail_breaks_down_by_model_and_chat(engine: Engine) -> None:
    with engine.connect() as conn:
        detail = user_detail(conn, "alice", at(1, 0), at(30, 0), at(20))
        with pytest.raises(UserNotFound):
            user_detail(conn, "nobody", at(1, 0), at(30, 0), at(20))
    assert detail.name == "Alice Liddell"
    assert detail.summary.messages == 3 and detail.summary.chats == 2
    assert [m.model for m in detail.models] == ["claude-sonnet-4-5", "gpt-5"]
    chats = {c.chat: c for c in detail.chats}
    assert chats["a1"].totals.messages == 2
    assert (chats["a1"].first_seen.day, chats["a1"].last_seen.day) == (3, 4)
    assert chats["a2"].totals.cost_micros == 125
    assert detail.limit.limit_micros == 500_000_000
    assert detail.limit.spent_micros == detail.summary.cost_micros
