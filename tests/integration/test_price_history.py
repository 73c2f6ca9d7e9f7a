"""Prices as the ledger keeps them: versions, tiers, variants, fees and gaps, on both backends."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from genai_prices import Usage, calc_price
from sqlalchemy import Engine, select

from ledger.catalog import find_model
from ledger.engine import create_sync_engine
from ledger.price_versions import price_versions
from ledger.pricing import Fee, PriceSheet, UnboundedWebSearches, Variant, cost_upper_bound
from ledger.reports import user_detail
from ledger.schema import daily_usage, messages, usage_totals
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenKind, TokenUsage
from ledger.usage import UsageRecord, record_usage
from ledger.users import get_user
from tests.support.ledger_seed import apply_text

K = TokenKind
USERS = "users:\n  - {username: alice}\n"
FLAT = USERS + """models:
  - name: acme-1
    provider: openai
    pricing: {input: 1, output: 2}
"""
TIERED = USERS + """models:
  - name: acme-long
    provider: openai
    pricing:
      input: 2
      output: 10
      cache_read: 0.2
      tiers:
        - above: 100000
          input: 4
          output: 15
          cache_read: 0.4
      variants:
        service_tier:
          flex:
            input: 1
            output: 5
            tiers:
              - {above: 100000, input: 2, output: 7.5}
        batch: {input: 1, output: 5}
      fees:
        web_search: 10
  - name: claude-sonnet-4-5
    provider: anthropic
"""


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    yield engine
    engine.dispose()


def apply(engine: Engine, text: str, dry_run: bool = False) -> list[str]:
    with engine.connect() as conn:
        transaction = conn.begin()
        changes = apply_text(conn, text)
        if dry_run:
            transaction.rollback()
        else:
            transaction.commit()
    return changes


def record(engine: Engine, model: str, usage: TokenUsage, **billing: object) -> int | None:
    with engine.begin() as conn:
        user = get_user(conn, "alice")
        result = record_usage(conn, UsageRecord(
            id=f"r-{datetime.now(UTC).timestamp()}-{model}", user_id=user.id, model=model,
            provider="openai", usage=usage, created_at=datetime.now(UTC),
            **billing))  # type: ignore[arg-type]
    return result.cost_micros


def test_a_price_change_keeps_the_first_cost_and_reports_both_prices(engine: Engine) -> None:
    apply(engine, FLAT)
    usage = TokenUsage(input=1000, output=1000)
    assert record(engine, "acme-1", usage) == 1000 + 2000
    dearer = FLAT.replace("input: 1,", "input: 3,")
    assert apply(engine, dearer, dry_run=True) == ["model acme-1: price input 1 -> 3"]
    assert apply(engine, dearer) == ["model acme-1: price input 1 -> 3"]
    assert apply(engine, dearer) == []
    assert record(engine, "acme-1", usage) == 3000 + 2000
    with engine.connect() as conn:
        rows = conn.execute(select(messages.c.cost_micros, messages.c.price_id)
                            .order_by(messages.c.created_at)).all()
        assert [r.cost_micros for r in rows] == [3000, 5000]  # the first kept its cost
        assert rows[0].price_id != rows[1].price_id
        now = datetime.now(UTC)
        (model,) = user_detail(conn, "alice", now - timedelta(days=1),
                               now + timedelta(days=1), now).models
    assert [(p.price_id, p.messages, p.cost_micros, p.source) for p in model.prices] == [
        (rows[0].price_id, 1, 3000, "policy"), (rows[1].price_id, 1, 5000, "policy")]
    assert model.prices[0].effective_from < model.prices[1].effective_from


def test_explicit_tiers_variants_and_fees_are_applied_read_back_and_priced(
        engine: Engine) -> None:
    apply(engine, TIERED)
    with engine.connect() as conn:
        model = find_model(conn, "acme-long")
        assert model is not None
        (version,) = price_versions(conn, [model.id])[model.id]
    assert version.source == "policy" and version.source_detail == "test-policy.yaml"
    assert version.sheet == PriceSheet(
        rates={K.INPUT: (2_000_000, 4_000_000), K.OUTPUT: (10_000_000, 15_000_000),
               K.CACHE_READ: (200_000, 400_000)},
        thresholds=(100_000,),
        variants=(Variant("service_tier", "flex", {K.INPUT: (1_000_000, 2_000_000),
                                                   K.OUTPUT: (5_000_000, 7_500_000)}),
                  Variant("processing", "batch", {K.INPUT: (1_000_000, 1_000_000),
                                                  K.OUTPUT: (5_000_000, 5_000_000)})),
        fees={Fee.WEB_SEARCH: 10_000_000})
    # Total input 100,001 (input + cache reads) passes the threshold: flex's tier prices for
    # input and output, the standard tier price for cache reads, and 3 searches at $10/1k.
    usage = TokenUsage(input=60_001, cache_read=40_000, output=1_000)
    cost = record(engine, "acme-long", usage, service_tier="flex", web_searches=3)
    assert cost == 120_002 + 16_000 + 7_500 + 30_000
    with engine.connect() as conn:
        row = conn.execute(select(messages)).one()
        assert (row.service_tier, row.tier_start, row.web_searches, row.pricing_gaps) == (
            "flex", 100_000, 3, None)
        day = conn.execute(select(daily_usage)).one()
        assert (day.web_searches, day.unpriced_web_searches, day.cost_micros) == (3, 0, cost)


def test_a_catalog_model_costs_what_the_catalog_says(engine: Engine) -> None:
    apply(engine, TIERED)
    usage = TokenUsage(input=150_000, cache_read=40_000, cache_write=20_000,
                       cache_write_1h=5_000, output=3_000)  # total input 215,000 > 200k
    cost = record(engine, "claude-sonnet-4-5", usage, web_searches=2)
    expected = calc_price(Usage(input_tokens=215_000, cache_read_tokens=40_000,
                                cache_write_tokens=25_000, cache_write_1h_tokens=5_000,
                                output_tokens=3_000, web_searches=2),
                          "claude-sonnet-4-5", provider_id="anthropic")
    assert cost == math.ceil(expected.total_price * 1_000_000)
    with engine.connect() as conn:
        model = find_model(conn, "claude-sonnet-4-5")
        assert model is not None
        versions = price_versions(conn, [model.id])[model.id]
    assert {v.source for v in versions} == {"catalog"}
    assert versions[-1].source_detail.startswith("genai-prices 0.2.5 anthropic/")


def test_an_unpriced_variant_costs_the_highest_price_and_is_counted(engine: Engine) -> None:
    apply(engine, TIERED)
    cost = record(engine, "acme-long", TokenUsage(input=1_000, output=1_000),
                  service_tier="scale", web_searches=0)
    assert cost == 4_000 + 15_000  # the highest input and output prices the model has
    with engine.connect() as conn:
        assert conn.execute(select(messages.c.pricing_gaps)).scalar_one() == "variant"
        total = conn.execute(select(usage_totals)).one()
        assert (total.variant_gap_messages, total.tier_gap_messages,
                total.fee_gap_messages) == (1, 0, 0)


def test_pricing_none_after_prices_leaves_later_messages_unpriced(engine: Engine) -> None:
    apply(engine, FLAT)
    assert record(engine, "acme-1", TokenUsage(input=10)) == 10
    changes = apply(engine, FLAT.replace("pricing: {input: 1, output: 2}", "pricing: none"))
    assert changes == ["model acme-1: price input 1 -> -", "model acme-1: price output 2 -> -"]
    assert record(engine, "acme-1", TokenUsage(input=10)) is None


def test_the_strict_bound_of_a_tiered_model_covers_every_way_it_is_billed(
        engine: Engine) -> None:
    apply(engine, TIERED)
    with engine.connect() as conn:
        model = find_model(conn, "acme-long")
    assert model is not None and model.prices is not None
    # 150k bytes of body can reach the 100k tier: every byte at the dearest input-side price
    # there (input, 4/1M), output at the tier's 15/1M, up to 3 searches at $10 per 1,000.
    bound = cost_upper_bound(model.prices, 150_000, 1_000, web_searches=3)
    assert bound == 600_000 + 15_000 + 30_000
    usage = TokenUsage(input=100_000, cache_read=50_000, output=1_000)
    for billing in ({}, {"service_tier": "flex"}, {"batch": True}, {"service_tier": "scale"}):
        cost = record(engine, "acme-long", usage, web_searches=3, **billing)
        assert cost is not None and cost <= bound
    with pytest.raises(UnboundedWebSearches):
        cost_upper_bound(model.prices, 150_000, 1_000, web_searches=None)


def test_a_model_unpriced_on_purpose_then_priced_shows_each_new_price(engine: Engine) -> None:
    apply(engine, FLAT.replace("pricing: {input: 1, output: 2}", "pricing: none"))
    assert record(engine, "acme-1", TokenUsage(input=10)) is None
    assert apply(engine, FLAT, dry_run=True) == ["model acme-1: price input - -> 1",
                                                 "model acme-1: price output - -> 2"]
    apply(engine, FLAT)
    assert record(engine, "acme-1", TokenUsage(input=10)) == 10
