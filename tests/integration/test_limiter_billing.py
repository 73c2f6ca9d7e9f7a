"""What an answer reports beyond tokens reaches the ledger through the real gateway: the
service tier it was served at, its speed and its web searches, priced as genai-prices' own
calculator prices the same answer.

The provider is a real HTTP server on a real port answering with the recorded answers of
`tests/fixtures/answers` byte for byte; the models are declared by name with catalog prices.
Web searches are counted as each provider bills them (a Chat Completions search request one per
answer, Gemini 2.5 one per grounded prompt, Gemini 3 one per unique query); a fee the catalog
has no price for is left out of the cost, as the catalog's calculator leaves it, and counted as
a pricing gap that the exporter shows.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from math import ceil
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientPayloadError, ClientSession, web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import exporter_running
from exporter.settings import ExporterSettings
from ledger.pricing import Billing
from ledger.settings import DatabaseSettings
from ledger.tokens import TOKEN_KINDS, TokenUsage
from tests.support.catalog_prices import catalog_micros
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.gateway import (
    MovableClock,
    bearer,
    gateway_app,
    limiter_settings,
    openai_request,
    policy,
    query,
    seed_ledger,
    settled,
)

ANSWERS = Path(__file__).parents[1] / "fixtures" / "answers"
EXPECTED: dict[str, Any] = json.loads((ANSWERS / "expected.json").read_text())
# The threshold each answer's total input passes (README of the fixtures).
TIER_START = {"anthropic_web_search_above_200k.json": 200_000,
              "openai_chat_flex_above_272k.json": 272_000,
              "gemini_stream_grounded_array.json": 200_000}
THROUGH_GATEWAY = sorted(EXPECTED)


def answered_model(name: str) -> str:
    """The model the request names: the expectation's `model`, the one in a Gemini route's
    path, else the one the recorded answer names (each SSE event of a stream names the same)."""
    expected = EXPECTED[name]
    if "model" in expected:
        return str(expected["model"])
    if "/models/" in expected["route"]:
        return str(expected["route"].split("/models/", 1)[1].split(":", 1)[0])
    text = (ANSWERS / name).read_text()
    if name.endswith(".json"):
        return str(json.loads(text)["model"])
    for line in text.splitlines():
        if line.startswith("data: {"):
            event = json.loads(line[6:])
            found = event.get("model") or event.get("message", {}).get("model")
            if found:
                return str(found)
    raise AssertionError(f"{name} names no model")


@contextlib.asynccontextmanager
async def recorded_provider(name: str) -> AsyncIterator[TestServer]:
    """A provider on a real port answering every call with the recorded answer `name`."""
    body = (ANSWERS / name).read_bytes()
    kind = "text/event-stream" if name.endswith(".sse") else "application/json"

    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type=kind)

    app = web.Application()
    app.router.add_post("/v1/{tail:.*}", answer)
    app.router.add_post("/v1beta/{tail:.*}", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.mark.parametrize("name", THROUGH_GATEWAY)
async def test_an_answers_service_tier_and_fees_are_recorded_and_priced_as_the_catalog_does(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, name: str) -> None:
    expected = EXPECTED[name]
    model = answered_model(name)
    declared = {"name": model, "provider": expected["provider"]}  # catalog prices
    keys = seed_ledger(ledger_url, policy(models=[declared]), keys_for=("alice",))
    clock = MovableClock(datetime.now(UTC).replace(microsecond=0))
    path = expected["route"].split(" ", 1)[1]
    body: dict[str, Any] = expected.get("request") or {
        "model": model, "max_tokens": 4096, "stream": expected["stream"],
        "messages": [{"role": "user", "content": "go on"}]}
    async with recorded_provider(name) as provider:
        settings = limiter_settings(tmp_path, str(provider.make_url("")), google=True)
        app = gateway_app(ledger_url, settings, clock=clock, registry=CollectorRegistry())
        client = await aiohttp_client(app)
        resp = await client.post(path, json=body, headers=bearer(keys["alice"]))
        assert resp.status == 200
        assert await resp.read() == (ANSWERS / name).read_bytes()
        await settled(app)

    kinds = ", ".join(f"{kind.value}_tokens" for kind in TOKEN_KINDS)
    rows = query(ledger_url, f"SELECT service_tier, speed, web_searches, tier_start, "
                             f"pricing_gaps, cost_micros, {kinds} FROM messages")
    assert len(rows) == 1
    tier, speed, searches, tier_start, gaps, cost, *tokens = rows[0]
    usage = TokenUsage(**expected["usage"])
    billing = Billing(**expected["billing"])
    assert tokens == [usage.get(kind) for kind in TOKEN_KINDS]
    assert (tier, speed, searches) == (billing.service_tier, billing.speed,
                                       billing.web_searches)
    assert tier_start == TIER_START.get(name, 0)
    if "pricing_gaps" in expected:
        assert gaps == expected["pricing_gaps"]
    assert cost == catalog_micros(expected["provider"], model, usage, billing, clock.now)


@pytest.mark.parametrize(("asked", "recorded"), [("flex", "flex"), ("auto", None)])
async def test_a_cut_stream_is_recorded_at_the_service_tier_the_request_asked_for(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, asked: str,
        recorded: str | None) -> None:
    # The provider drops the stream before any chunk naming a tier or carrying usage.
    fake = FakeUpstream(Answer(drop_after=2))
    await fake.start()
    keys = seed_ledger(sqlite_url, policy(), keys_for=("alice",))
    app = gateway_app(sqlite_url, limiter_settings(tmp_path, fake.base_url),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    resp = await client.post("/v1/chat/completions",
                             json=openai_request(stream=True, service_tier=asked),
                             headers=bearer(keys["alice"]))
    with contextlib.suppress(ClientPayloadError):
        await resp.read()
    await settled(app)
    await fake.close()
    assert query(sqlite_url, "SELECT partial, service_tier FROM messages") == [(1, recorded)]


async def test_a_cut_search_stream_still_counts_its_search(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path) -> None:
    # A search model searched before answering: the call is billed though the stream is cut.
    fake = FakeUpstream(Answer(drop_after=2))
    await fake.start()
    model = {"name": "gpt-4o-mini-search-preview", "provider": "openai"}
    keys = seed_ledger(sqlite_url, policy(models=[model]), keys_for=("alice",))
    app = gateway_app(sqlite_url, limiter_settings(tmp_path, fake.base_url),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    resp = await client.post("/v1/chat/completions",
                             json=openai_request(model=model["name"], stream=True),
                             headers=bearer(keys["alice"]))
    with contextlib.suppress(ClientPayloadError):
        await resp.read()
    await settled(app)
    await fake.close()
    assert query(sqlite_url, "SELECT partial, web_searches, pricing_gaps FROM messages") == [
        (1, 1, None)]  # the catalog prices it (gpt-4o-mini's 10 USD per 1,000)


@pytest.mark.parametrize(("name", "declared", "cost"), [
    # The catalog has no search price for gpt-5-search-api: its tokens are priced
    # (1,276 input at 1.25, 1,024 cache reads at 0.125, 640 output at 10 USD per 1M).
    ("openai_chat_web_search.json", {"name": "gpt-5-search-api", "provider": "openai"},
     ceil(1_276 * 1.25 + 1_024 * 0.125 + 640 * 10)),
    # A policy price without fees: 6,960 input at 0.5 and 732 output at 3 USD per 1M.
    ("gemini_grounded_search.json", {"name": "gemini-3.5-flash", "provider": "google",
                                     "pricing": {"input": 0.5, "output": 3}},
     ceil(6_960 * 0.5 + 732 * 3)),
])
async def test_searches_without_a_price_are_a_fee_gap_on_the_exporter(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, name: str,
        declared: dict[str, Any], cost: int) -> None:
    expected = EXPECTED[name]
    searches = expected["billing"]["web_searches"]
    keys = seed_ledger(ledger_url, policy(models=[declared]), keys_for=("alice",))
    clock = MovableClock(datetime.now(UTC).replace(microsecond=0))
    async with recorded_provider(name) as provider:
        settings = limiter_settings(tmp_path, str(provider.make_url("")), google=True)
        app = gateway_app(ledger_url, settings, clock=clock, registry=CollectorRegistry())
        client = await aiohttp_client(app)
        resp = await client.post(expected["route"].split(" ", 1)[1], json=expected["request"],
                                 headers=bearer(keys["alice"]))
        assert resp.status == 200
        await settled(app)
    assert query(ledger_url, "SELECT web_searches, pricing_gaps, cost_micros FROM messages") == [
        (searches, "fee", cost)]

    async with (exporter_running(ExporterSettings(), DatabaseSettings(url=ledger_url),
                                 listen="127.0.0.1:0", clock=clock) as where,
                ClientSession() as session, session.get(f"{where.url}/metrics") as scraped):
        page = await scraped.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(page) for s in family.samples}
    model = declared["name"]
    assert samples[("agentmeter_fees_total", (("fee", "web_search"), ("model", model),
                                              ("user", "alice")))] == searches
    assert samples[("agentmeter_model_pricing_missing", (("gap", "fee"), ("model", model),
                                                         ("token_type", "")))] == 1.0
    assert samples[("agentmeter_unpriced_messages_total", (("gap", "fee"),
                                                           ("model", model)))] == 1.0
    assert samples[("agentmeter_spend_usd_total", (("model", model), ("user", "alice")))] == (
        cost / 1_000_000)
