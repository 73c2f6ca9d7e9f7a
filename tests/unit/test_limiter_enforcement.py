"""The rules of the check: the refusal body and its sentence, Retry-After, the strict upper
bound, the catalog cache."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.catalog import Model
from ledger.engine import create_async_engine
from ledger.limits import LimitSource
from ledger.periods import Period
from ledger.pricing import PriceSheet, Pricing
from ledger.settings import DatabaseSettings
from ledger.spend import LimitStatus
from limiter.admission.catalog_cache import CatalogCache, CatalogUnavailable
from limiter.admission.enforcement import (
    FALLBACK_MAX_OUTPUT_TOKENS,
    limit_body,
    limit_message,
    retry_after_seconds,
    strict_upper_bound,
)
from tests.support.gateway import seed_ledger

STATUS = LimitStatus(user_id=1, username="alice", period=Period.MONTH, limit_micros=60,
                     limit_source=LimitSource.GROUP, spent_micros=61,
                     period_start=datetime(2026, 3, 1, tzinfo=UTC),
                     period_end=datetime(2026, 4, 1, tzinfo=UTC))


def model(pricing: Pricing | None, max_output_tokens: int | None = None) -> Model:
    return Model(id=1, name="m", provider="openai", enabled=True, declared=True,
                 max_output_tokens=max_output_tokens,
                 prices=None if pricing is None else PriceSheet.flat(pricing))


def test_limit_body_is_the_documented_shape() -> None:
    assert limit_body(STATUS) == {
        "message": "Chat usage limit exceeded: $0.000061 of $0.00006 this month; "
                   "resets 2026-04-01 00:00 UTC.",
        "spent_micros": 61, "limit_micros": 60, "limit_source": "group",
        "resets_at": "2026-04-01T00:00:00Z"}


@pytest.mark.parametrize(("period", "end", "spent", "limit", "sentence"), [
    (Period.MONTH, datetime(2027, 1, 1, tzinfo=UTC), 50_000_000, 50_000_000,
     "Chat usage limit exceeded: $50.00 of $50.00 this month; resets 2027-01-01 00:00 UTC."),
    (Period.WEEK, datetime(2026, 3, 16, tzinfo=UTC), 12_345_678, 12_000_000,
     "Chat usage limit exceeded: $12.345678 of $12.00 this week; resets 2026-03-16 00:00 UTC."),
    (Period.DAY, datetime(2026, 3, 15, tzinfo=UTC), 1_500_000, 0,
     "Chat usage limit exceeded: $1.50 of $0.00 today; resets 2026-03-15 00:00 UTC."),
])
def test_limit_message_names_spend_limit_and_reset(period: Period, end: datetime, spent: int,
                                                   limit: int, sentence: str) -> None:
    status = LimitStatus(user_id=1, username="alice", period=period, limit_micros=limit,
                         limit_source=LimitSource.USER, spent_micros=spent,
                         period_start=datetime(2026, 3, 1, tzinfo=UTC), period_end=end)
    assert limit_message(status) == sentence


@pytest.mark.parametrize(("now", "seconds"), [
    (datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC), 1),
    (datetime(2026, 3, 31, 23, 59, 59, 1, tzinfo=UTC), 1),  # rounded up, never 0 early
    (datetime(2026, 3, 31, 23, 59, 58, 999_999, tzinfo=UTC), 2),
    (datetime(2026, 4, 1, tzinfo=UTC), 0),
])
def test_retry_after_rounds_up(now: datetime, seconds: int) -> None:
    assert retry_after_seconds(STATUS, now) == seconds


def test_strict_upper_bound() -> None:
    # Prices in micro-dollars per 1M tokens: input 3 USD, cache write 3.75 USD, output 15 USD.
    pricing = Pricing(input=3_000_000, output=15_000_000, cache_read=300_000,
                      cache_write=3_750_000)
    # 1,000 body bytes at the dearest input-side price + 200 output tokens at 15.
    assert strict_upper_bound(model(pricing, 4000), 1000, 200) == 3750 + 3000
    # No max_tokens in the request: the model's max_output_tokens.
    assert strict_upper_bound(model(pricing, 4000), 1000, None) == 3750 + 60_000
    assert strict_upper_bound(model(pricing), 0, None) == FALLBACK_MAX_OUTPUT_TOKENS * 15
    # Unpriced or unknown models add no spend, so nothing needs holding.
    assert strict_upper_bound(model(None), 1000, 100) == 0
    assert strict_upper_bound(None, 1000, 100) == 0


async def test_catalog_cache_serves_a_stale_copy_when_the_ledger_is_away(
        sqlite_url: str) -> None:
    seed_ledger(sqlite_url, keys_for=())
    engine = create_async_engine(DatabaseSettings(url=sqlite_url))
    now = [0.0]
    cache = CatalogCache(engine, 2.0, ttl_seconds=2.0, monotonic=lambda: now[0])
    try:
        catalog = await cache.get()
        assert catalog.find("gpt-test-latest") is not None
        assert catalog.find("gpt-test-latest").name == "gpt-test"  # type: ignore[union-attr]
        assert {m.name for m in catalog.enabled()} == {"gpt-test", "claude-test", "free-model"}
        await engine.dispose()
        os.remove(Path(sqlite_url.removeprefix("sqlite:///")))  # the ledger is gone
        now[0] = 10.0
        assert await cache.get() is catalog
    finally:
        await engine.dispose()


async def test_catalog_unavailable_without_any_copy(tmp_path: Path) -> None:
    engine = create_async_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/empty.db"))
    try:
        with pytest.raises(CatalogUnavailable):
            await CatalogCache(engine, 2.0).get()
    finally:
        await engine.dispose()
