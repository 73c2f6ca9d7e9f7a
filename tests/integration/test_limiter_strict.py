"""Strict enforcement: concurrent requests from a user just below the limit never take spend
past it, because each holds its upper bound before it is forwarded."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ledger.engine import create_sync_engine
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord, record_usage
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.gateway import (
    MovableClock,
    anthropic_request,
    bearer,
    gateway_app,
    limiter_settings,
    openai_request,
    policy,
    query,
    seed_ledger,
    settled,
)

CHAT = "/v1/chat/completions"
LIMIT = 10_000  # micros
ALREADY_SPENT = 5_000


@pytest.fixture
async def upstream() -> Any:
    # Slow answers, so that all the requests are in flight together; each costs almost its
    # bound: 100 input tokens at 1 micro + 500 output tokens at 2 micros = 1,100 micros.
    fake = FakeUpstream(Answer(usage=TokenUsage(input=100, output=500), hang_seconds=0.3))
    await fake.start()
    yield fake
    await fake.close()


def spend(url: str) -> int:
    return int(query(url, "SELECT coalesce(sum(cost_micros), 0) FROM messages")[0][0])


async def test_fifty_concurrent_requests_never_pass_the_limit(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    users = [{"username": "alice", "limit_usd": f"{LIMIT / 1_000_000:.6f}"}, {"username": "bob"}]
    keys = seed_ledger(ledger_url, policy(users=users))
    clock = MovableClock()
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    with engine.begin() as conn:
        alice_id = conn.exec_driver_sql("SELECT id FROM users WHERE username = 'alice'").scalar()
        record_usage(conn, UsageRecord(id=str(uuid.uuid4()), user_id=int(alice_id or 0),
                                       model="gpt-test", provider="openai",
                                       usage=TokenUsage(input=ALREADY_SPENT),
                                       created_at=clock()))
    engine.dispose()

    app = gateway_app(ledger_url, limiter_settings(tmp_path, upstream.base_url,
                                                   enforcement="strict"),
                      clock=clock, registry=CollectorRegistry())
    client = await aiohttp_client(app)
    body = openai_request(max_tokens=500)
    bound = len(json.dumps(body).encode()) + 500 * 2
    assert 1_100 <= bound < 1_250  # the answer costs nearly what was held for it

    async def one() -> int:
        resp = await client.post(CHAT, json=body, headers=bearer(keys["alice"]))
        await resp.read()
        return resp.status

    statuses = await asyncio.gather(*(one() for _ in range(50)))
    await settled(app)
    answered = statuses.count(200)
    assert set(statuses) == {200, 409}
    assert 1 <= answered <= (LIMIT - ALREADY_SPENT) // 1_100
    assert spend(ledger_url) == ALREADY_SPENT + answered * 1_100 <= LIMIT
    assert len(upstream.received) == answered
    # Every hold was settled with its answer: nothing is left reserved.
    assert query(ledger_url, "SELECT count(*) FROM reservations")[0][0] == 0


async def test_strict_bound_uses_model_max_output_tokens(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    # Without max_tokens the bound is the model's max_output_tokens (1,000 at 2 micros):
    # a user with 1,500 micros left cannot start a request whose bound is about 2,100.
    users = [{"username": "alice", "limit_usd": "0.0015"}]
    keys = seed_ledger(sqlite_url, policy(users=users), keys_for=("alice",))
    app = gateway_app(sqlite_url, limiter_settings(tmp_path, upstream.base_url,
                                                   enforcement="strict"),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    refused = await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
    assert refused.status == 409
    assert refused.headers["x-should-retry"] == "false"
    allowed = await client.post(CHAT, json=openai_request(max_tokens=100),
                                headers=bearer(keys["alice"]))
    assert allowed.status == 200
    await settled(app)
    assert query(sqlite_url, "SELECT count(*) FROM reservations")[0][0] == 0


# A long-context model: above 100 tokens of total input every token costs four times more.
TIERED_MODEL = {"name": "gpt-tiered", "provider": "openai", "max_output_tokens": 1000,
                "pricing": {"input": 1, "output": 2,
                            "tiers": [{"above": 100, "input": 4, "output": 8}]}}


async def test_fifty_concurrent_requests_reaching_a_tier_never_pass_the_limit(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path) -> None:
    # Each answer reports 150 input tokens, past the tier: 150 x 4 + 500 x 8 = 4,600 micros,
    # nearly four times what the base prices would hold for it.
    fake = FakeUpstream(Answer(usage=TokenUsage(input=150, output=500), hang_seconds=0.3))
    await fake.start()
    limit = 50_000
    users = [{"username": "alice", "limit_usd": f"{limit / 1_000_000:.6f}"}]
    base = policy()
    keys = seed_ledger(ledger_url, policy(users=users, models=[*base["models"], TIERED_MODEL]),
                       keys_for=("alice",))
    app = gateway_app(ledger_url, limiter_settings(tmp_path, fake.base_url,
                                                   enforcement="strict"),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    # About 450 bytes of body: the 150 tokens the answer reports fit in it, and it can pass
    # the threshold, so the bound is the tier's.
    body = openai_request(model="gpt-tiered", max_tokens=500,
                          messages=[{"role": "user", "content": "fix the tests " * 28}])
    assert 150 < len(json.dumps(body).encode()) < 500

    async def one() -> int:
        resp = await client.post(CHAT, json=body, headers=bearer(keys["alice"]))
        await resp.read()
        return resp.status

    statuses = await asyncio.gather(*(one() for _ in range(50)))
    await settled(app)
    await fake.close()
    answered = statuses.count(200)
    assert set(statuses) == {200, 409} and answered >= 1
    assert spend(ledger_url) == answered * 4_600 <= limit


# A model whose web searches cost 10 USD per 1,000: 10,000 micros each.
SEARCHING_MODEL = {"name": "claude-searching", "provider": "anthropic", "max_output_tokens": 100,
                   "pricing": {"input": 1, "output": 2, "fees": {"web_search": 10}}}


def searching(max_uses: int | None) -> dict[str, Any]:
    tool: dict[str, Any] = {"type": "web_search_20250305", "name": "web_search"}
    if max_uses is not None:
        tool["max_uses"] = max_uses
    return anthropic_request(model="claude-searching", tools=[tool])


async def test_a_request_allowing_unbounded_web_searches_is_refused(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url, policy(models=[SEARCHING_MODEL]), keys_for=("alice",))
    app = gateway_app(sqlite_url, limiter_settings(tmp_path, upstream.base_url,
                                                   enforcement="strict"),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    refused = await client.post("/v1/messages", json=searching(None),
                                headers=bearer(keys["alice"]))
    assert refused.status == 400
    error = (await refused.json())["error"]
    assert "unbounded web searches" in error["message"] and "max_uses" in error["message"]
    assert upstream.received == []
    assert query(sqlite_url, "SELECT count(*) FROM reservations")[0][0] == 0


async def test_the_bound_counts_the_search_tools_max_uses(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    # 30,000 micros left: one search (10,000) fits beside the tokens, five (50,000) do not.
    users = [{"username": "alice", "limit_usd": "0.03"}]
    keys = seed_ledger(sqlite_url, policy(users=users, models=[SEARCHING_MODEL]),
                       keys_for=("alice",))
    app = gateway_app(sqlite_url, limiter_settings(tmp_path, upstream.base_url,
                                                   enforcement="strict"),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    five = await client.post("/v1/messages", json=searching(5), headers=bearer(keys["alice"]))
    assert five.status == 409
    one = await client.post("/v1/messages", json=searching(1), headers=bearer(keys["alice"]))
    assert one.status == 200
    await settled(app)
    assert len(upstream.received) == 1


async def test_a_chat_completions_search_request_holds_its_search(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    # 5,000 micros of room; the catalog prices gpt-4o-mini's searches (its search model's
    # too) at 10 USD per 1,000 calls, 10,000 micros: the tokens fit, one search does not.
    models = [{"name": "gpt-4o-mini", "provider": "openai", "max_output_tokens": 100},
              {"name": "gpt-4o-mini-search-preview", "provider": "openai",
               "max_output_tokens": 100}]
    keys = seed_ledger(sqlite_url, policy(users=[{"username": "alice", "limit_usd": "0.005"}],
                                          models=models), keys_for=("alice",))
    app = gateway_app(sqlite_url, limiter_settings(tmp_path, upstream.base_url,
                                                   enforcement="strict"),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    alice = bearer(keys["alice"])
    for body in (openai_request(model="gpt-4o-mini-search-preview"),
                 openai_request(model="gpt-4o-mini", web_search_options={})):
        refused = await client.post(CHAT, json=body, headers=alice)
        assert refused.status == 409
    assert upstream.received == []
    answered = await client.post(CHAT, json=openai_request(model="gpt-4o-mini"), headers=alice)
    assert answered.status == 200
    await settled(app)
    assert query(sqlite_url, "SELECT web_searches FROM messages") == [(0,)]
