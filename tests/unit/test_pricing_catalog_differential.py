"""The ledger prices every Anthropic, OpenAI and Google model exactly as genai-prices does.

For each model in the installed catalog, generated usages (around each tier threshold, every
service tier and batch, cache reads and both cache-write lengths, web searches, zero and huge
counts, at dates across the catalog's price changes) cost, in the ledger,
`ceil(calc_price(...).total_price x 1,000,000)` micro-dollars.

Disagreements on purpose, each tested by name below:
- a service tier the model has no price for: the catalog bills the standard price, the ledger
  the model's highest price, reported as a variant gap (a client must not buy a discount);
- web searches on a model with no web-search price: the catalog bills them nothing, the
  ledger counts them as unpriced searches, a fee gap;
- a model with no input and no output price: the catalog bills its tokens nothing, the ledger
  leaves the message unpriced (its tokens counted, never free by accident);
- a model a provider only resells (Google's Claude models): the catalog ignores the service
  tier there, so they are compared at the standard tier only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from genai_prices.data import providers
from genai_prices.types import ClauseStartsWith, ModelInfo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.price_catalog import CatalogModel, find_catalog_model
from ledger.pricing import Billing, Gap, PriceSheet, price_message
from ledger.tokens import TokenUsage
from tests.support.catalog_prices import catalog_micros

PROVIDERS = ("anthropic", "openai", "google")


def a_name(model: ModelInfo) -> str:
    """A name the model answers to: its id, or for a family matched by prefix (fine-tuned
    models, `ft:gpt-4o-2024-...`) a name with that prefix."""
    if model.is_match(model.id):
        return model.id
    assert isinstance(model.match, ClauseStartsWith)
    return model.match.starts_with + "08-06:acme::x1"


CATALOG = [(p.id, a_name(m)) for p in providers if p.id in PROVIDERS for m in p.models]
SERVICE_TIERS = (None, "default", "standard", "flex", "priority", "fast", "ultrafast")


def sheet_at(model: CatalogModel, at: datetime) -> PriceSheet:
    return [sheet for start, sheet in model.schedule if start <= at][-1]


def counts(thresholds: tuple[int, ...]) -> st.SearchStrategy[int]:
    near = [st.integers(max(0, t - 3), t + 3) for t in (*thresholds, 128_000, 200_000, 272_000)]
    return st.one_of(st.just(0), st.integers(0, 5_000), st.integers(0, 2_000_000),
                     st.integers(0, 10**12), *near)


def known_tiers(sheet: PriceSheet) -> list[str | None]:
    named = [v.value for v in sheet.variants if v.dimension == "service_tier"]
    return [t for t in SERVICE_TIERS if t is None or t in ("default", "standard") or t in named]


@pytest.mark.parametrize(("provider", "name"), CATALOG, ids=[f"{p}/{m}" for p, m in CATALOG])
# Around 40 examples a model (8,600 in all) keep the whole test well under a minute in CI.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_ledger_cost_equals_the_catalogs(provider: str, name: str, data: st.DataObject) -> None:
    model = find_catalog_model(provider, name)
    assert model is not None
    at = data.draw(st.sampled_from([start for start, _ in model.schedule])
                   .flatmap(lambda s: st.integers(0, 3 * 86400).map(
                       lambda d, s=s: max(s, datetime(2023, 1, 1, tzinfo=UTC))
                       + timedelta(seconds=d))), label="at")
    sheet = sheet_at(model, at)
    total = counts(sheet.thresholds)
    usage = data.draw(st.builds(TokenUsage, input=total, output=total, cache_read=total,
                                cache_write=total, cache_write_1h=total), label="usage")
    if not sheet.base.is_usable:  # see test_a_model_without_prices
        assert price_message(sheet, usage).cost_micros is None
        return
    resold = provider == "google" and name.startswith("claude")
    billing = Billing(
        service_tier=None if resold else data.draw(st.sampled_from(known_tiers(sheet))),
        batch=not resold and bool(sheet.variant("processing", "batch")) and data.draw(
            st.booleans()),
        speed=None if resold or not sheet.variant("speed", "fast") else data.draw(
            st.sampled_from([None, "fast"])),
        web_searches=data.draw(st.sampled_from([0, 1, 3, 10**6])) if sheet.fees else 0)
    ours = price_message(sheet, usage, billing)
    assert not ours.gaps
    assert ours.cost_micros == catalog_micros(provider, name, usage, billing, at)


def test_a_service_tier_the_catalog_has_no_price_for() -> None:
    """Disagreement on purpose: the catalog bills an unknown tier at the standard price."""
    model = find_catalog_model("anthropic", "claude-sonnet-4-5")
    assert model is not None
    at = datetime(2026, 11, 1, tzinfo=UTC)
    sheet = sheet_at(model, at)
    usage = TokenUsage(input=1_000, output=1_000)
    billing = Billing(service_tier="priority")
    ours = price_message(sheet, usage, billing)
    assert catalog_micros("anthropic", "claude-sonnet-4-5", usage, billing, at) == 18_000
    # The highest prices the model has for those kinds: the long-context tier's 6 and 22.5.
    assert ours.cost_micros == 6_000 + 22_500 and ours.gaps == {Gap.VARIANT}


def test_web_searches_without_a_price() -> None:
    """Disagreement on purpose: the catalog bills searches it has no price for nothing."""
    model = find_catalog_model("openai", "o3-mini")
    assert model is not None
    at = datetime(2026, 11, 1, tzinfo=UTC)
    usage, billing = TokenUsage(input=1_000), Billing(web_searches=5)
    ours = price_message(sheet_at(model, at), usage, billing)
    assert ours.cost_micros == catalog_micros("openai", "o3-mini", usage, billing, at) == 1_100
    assert ours.gaps == {Gap.FEE} and ours.unpriced_web_searches == 5


def test_a_model_without_prices() -> None:
    """Disagreement on purpose: the catalog bills a model with no token prices nothing; the
    ledger leaves its messages unpriced (cost NULL, tokens counted)."""
    model = find_catalog_model("openai", "whisper-1")  # priced per minute of audio
    assert model is not None
    priced = price_message(model.schedule[-1][1], TokenUsage(input=10, output=10))
    assert priced.cost_micros is None and priced.unpriced == TokenUsage(input=10, output=10)
