"""The ledger suite, run on SQLite and on the real PostgreSQL."""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select

from ledger.catalog import find_model, models_without_pricing, unpriced_usage_by_model
from ledger.engine import create_sync_engine
from ledger.keys import create_key, revoke_keys
from ledger.limit_store import save_limit_config, set_group_limit, set_user_override
from ledger.limits import LimitConfig, LimitSource
from ledger.periods import Period, period_bounds
from ledger.schema import daily_usage, messages, usage_totals
from ledger.settings import DatabaseSettings
from ledger.spend import check_key, limit_status, spend_in_period
from ledger.tokens import TokenKind, TokenUsage
from ledger.users import get_user
from tests.support.ledger_seed import record, seed_policy

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    seed_policy(engine)
    yield engine
    engine.dispose()


def status(engine: Engine, username: str, now: datetime = NOW):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return limit_status(conn, get_user(conn, username).id, now)


def test_record_prices_the_message_and_updates_rollups(engine: Engine) -> None:
    usage = TokenUsage(input=1000, output=2000, cache_read=30000, cache_write=400,
                       cache_write_1h=500)
    result = record(engine, "alice", "claude-sonnet-4-5", usage, NOW, chat="c1")
    assert result.inserted and result.cost_micros == 46_500
    with engine.connect() as conn:
        row = conn.execute(select(messages)).one()
        assert (row.input_tokens, row.output_tokens, row.cache_read_tokens,
                row.cache_write_tokens, row.cache_write_1h_tokens) == (1000, 2000, 30000, 400, 500)
        assert row.cost_micros == 46_500 and not row.partial
        day = conn.execute(select(daily_usage)).one()
        assert (day.messages, day.cost_micros, day.day) == (1, 46_500, NOW.date())
        total = conn.execute(select(usage_totals)).one()
        assert (total.messages, total.cost_micros, total.output_tokens) == (1, 46_500, 2000)


def test_same_id_twice_counts_once(engine: Engine) -> None:
    usage = TokenUsage(input=100)
    first = record(engine, "bob", "gpt-5", usage, NOW, record_id="req-1", provider="openai")
    again = record(engine, "bob", "gpt-5", usage, NOW, record_id="req-1", provider="openai")
    assert first.inserted and not again.inserted
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(messages)).scalar_one() == 1
        assert conn.execute(select(daily_usage.c.messages)).scalar_one() == 1


def test_alias_resolves_to_the_declared_model(engine: Engine) -> None:
    record(engine, "alice", "claude-sonnet-4-5-20250929", TokenUsage(output=1000), NOW)
    with engine.connect() as conn:
        model = find_model(conn, "claude-sonnet-4-5-20250929")
        assert model is not None and model.name == "claude-sonnet-4-5"
        assert conn.execute(select(daily_usage.c.model_id)).scalar_one() == model.id


def test_spend_in_period_is_half_open_and_period_aligned(engine: Engine) -> None:
    record(engine, "bob", "gpt-5", TokenUsage(output=100_000), datetime(2026, 10, 31, 23, 59,
                                                                       59, tzinfo=UTC))
    record(engine, "bob", "gpt-5", TokenUsage(output=200_000), datetime(2026, 11, 1, tzinfo=UTC))
    record(engine, "bob", "gpt-5", TokenUsage(output=400_000), datetime(2026, 12, 1, tzinfo=UTC))
    with engine.connect() as conn:
        bob = get_user(conn, "bob").id
        assert spend_in_period(conn, bob, datetime(2026, 11, 1, tzinfo=UTC),
                               datetime(2026, 12, 1, tzinfo=UTC)) == 2_000_000
    assert status(engine, "bob").spent_micros == 2_000_000
    assert status(engine, "bob", datetime(2026, 12, 1, tzinfo=UTC)).spent_micros == 4_000_000


def test_limit_status_for_every_source(engine: Engine) -> None:
    assert (status(engine, "alice").limit_micros, status(engine, "alice").limit_source) == (
        500_000_000, LimitSource.USER)
    # bob is in ml (200) and interns (20): the lowest wins.
    assert (status(engine, "bob").limit_micros, status(engine, "bob").limit_source) == (
        20_000_000, LimitSource.GROUP)
    assert status(engine, "dave").limit_micros is None
    assert status(engine, "dave").limit_source is LimitSource.USER
    # erin's only group has no limit: the default applies.
    assert (status(engine, "erin").limit_micros, status(engine, "erin").limit_source) == (
        50_000_000, LimitSource.DEFAULT)
    with engine.begin() as conn:
        set_user_override(conn, "erin", 7_000_000)
        set_group_limit(conn, "nolimit", 9_000_000)
    assert status(engine, "erin").limit_micros == 7_000_000


def test_blocked_exactly_when_spend_reaches_the_limit(engine: Engine) -> None:
    with engine.begin() as conn:
        set_user_override(conn, "carol", 1_000_000)
    # 999,999 micros: one micro below the limit.
    record(engine, "carol", "claude-sonnet-4-5", TokenUsage(input=333_333), NOW)
    assert status(engine, "carol").spent_micros == 999_999
    assert not status(engine, "carol").blocked
    record(engine, "carol", "claude-sonnet-4-5", TokenUsage(cache_read=1), NOW)
    assert status(engine, "carol").spent_micros == 1_000_000
    assert status(engine, "carol").blocked


def test_unpriced_model_is_stored_and_listed(engine: Engine) -> None:
    result = record(engine, "bob", "mystery-model", TokenUsage(input=10, output=5), NOW,
                    provider="openai")
    assert result.cost_micros is None
    # unknown model seen in traffic (unknown_models: allow)
    record(engine, "bob", "brand-new-model", TokenUsage(input=7), NOW, provider="openai")
    # a priced model without a cache_write_1h price: those tokens are unpriced
    record(engine, "bob", "gpt-5", TokenUsage(input=1, cache_write_1h=50), NOW, provider="openai")
    with engine.connect() as conn:
        gaps = {g.model: g.reason for g in models_without_pricing(conn)}
        assert gaps == {"mystery-model": "no_pricing", "brand-new-model": "undeclared"}
        unpriced = {u.model: u for u in unpriced_usage_by_model(conn)}
        assert unpriced["mystery-model"].messages == 1
        assert unpriced["mystery-model"].tokens[TokenKind.OUTPUT] == 5
        assert unpriced["brand-new-model"].tokens[TokenKind.INPUT] == 7
        assert unpriced["gpt-5"].messages == 0
        assert unpriced["gpt-5"].tokens[TokenKind.CACHE_WRITE_1H] == 50
        assert unpriced["claude-sonnet-4-5"].messages == 0
    # unpriced cost never counts towards spend
    assert status(engine, "bob").spent_micros == 2  # 1 input token at 1.25/1M, rounded up


@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_period_rollup_equals_the_daily_rollup_for_every_period(engine: Engine,
                                                                period: str) -> None:
    with engine.begin() as conn:
        save_limit_config(conn, LimitConfig(enabled=True, period=Period(period)))
    # Sunday 23:59 and Monday 00:00 fall in different weeks; Nov 30 and Dec 1 in different months.
    moments = [datetime(2026, 11, 29, 23, 59, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC),
               datetime(2026, 11, 30, 18, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)]
    for i, moment in enumerate(moments):
        record(engine, "bob", "gpt-5", TokenUsage(output=1000 * (i + 1)), moment,
               provider="openai")
    with engine.connect() as conn:
        bob = get_user(conn, "bob").id
        for moment in moments:
            start, end = period_bounds(Period(period), moment)
            status = limit_status(conn, bob, moment)
            assert status.spent_micros == spend_in_period(conn, bob, start, end)
            assert (status.period_start, status.period_end) == (start, end)


def test_check_key_is_owner_and_status_in_one_answer(engine: Engine) -> None:
    with engine.begin() as conn:
        key = create_key(conn, "carol")
        other = create_key(conn, "carol")
        revoke_keys(conn, "carol", other.key_id)
    record(engine, "carol", "gpt-5", TokenUsage(output=100_000), NOW, provider="openai")
    with engine.connect() as conn:
        found = check_key(conn, key.secret, NOW)
        assert found is not None
        owner, status = found
        assert (owner.username, owner.key_id) == ("carol", key.key_id)
        assert (status.limit_micros, status.limit_source, status.spent_micros) == (
            20_000_000, LimitSource.GROUP, 1_000_000)
        assert check_key(conn, other.secret, NOW) is None
        assert check_key(conn, "am-unknown", NOW) is None


def test_a_name_beats_another_models_alias(engine: Engine) -> None:
    """`gpt-5-mini` was first seen in traffic (a model row of that name), then the policy made
    it an alias of `gpt-5`: every lookup of a requested model, in the ledger and in the
    limiter's catalog, takes the name."""
    from ledger.catalog import all_models
    from limiter.admission.catalog_cache import Catalog
    from tests.support.ledger_seed import POLICY

    record(engine, "alice", "gpt-5-mini", TokenUsage(output=1000), NOW, provider="openai")
    seed_policy(engine, POLICY.replace("  - name: gpt-5\n",
                                       "  - name: gpt-5\n    aliases: [gpt-5-mini]\n"))
    record(engine, "alice", "gpt-5-mini", TokenUsage(output=1000), NOW, provider="openai")
    with engine.connect() as conn:
        model = find_model(conn, "gpt-5-mini")
        assert model is not None and model.name == "gpt-5-mini"
        days = conn.execute(select(daily_usage.c.model_id, daily_usage.c.messages)).all()
        assert [(row.model_id, row.messages) for row in days] == [(model.id, 2)]
        catalog = Catalog(all_models(conn))
    found = catalog.find("gpt-5-mini")
    assert found is not None and found.name == "gpt-5-mini"
    aliased = catalog.find("claude-sonnet-4-5-20250929")
    assert aliased is not None and aliased.name == "claude-sonnet-4-5"
