"""The limiter in front of the fake agents provider: what the real clients are pointed at to
prove the gateway with them.

Every model the fake serves is declared with integer prices (micro-dollars per token), so a
test can price the usage the fake reported by hand and compare it with the ledger to the micro.
The gateway is served on a real port as `agentmeter limiter` serves it, every upstream kind
pointing at the fake.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from ledger.engine import create_sync_engine
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from limiter.settings import LimiterSettings, UpstreamSettings
from tests.support.fake_agents_provider import DEFAULT_MODELS, FakeAgentsProvider
from tests.support.gateway import GatewayTestServer, gateway_app, query, seed_ledger, settled
from tests.support.ledger_seed import record

# USD per 1M tokens, i.e. micro-dollars per token: distinct, so a token counted as the wrong
# kind changes the cost.
PRICES = {"input": 3, "output": 15, "cache_read": 1, "cache_write": 4, "cache_write_1h": 6}
UPSTREAM_KEY = "sk-gateway-upstream-key"


def cost_micros(usage: TokenUsage) -> int:
    """What `usage` costs at PRICES, worked out by hand."""
    return (usage.input * PRICES["input"] + usage.output * PRICES["output"]
            + usage.cache_read * PRICES["cache_read"] + usage.cache_write * PRICES["cache_write"]
            + usage.cache_write_1h * PRICES["cache_write_1h"])


def expected_rows(fake: FakeAgentsProvider) -> Counter[tuple[TokenUsage, int]]:
    """The rows the ledger must hold for what the fake reported: usage and cost."""
    return Counter((usage, cost_micros(usage)) for usage in fake.reported())


def agent_policy(limit_usd: int | None = None) -> dict[str, Any]:
    """One user, alice, and every model of the fake, priced; her limit when given."""
    alice: dict[str, Any] = {"username": "alice", "name": "Alice Liddell"}
    if limit_usd is not None:
        alice["limit_usd"] = limit_usd
    return {"limits": {"enabled": True, "period": "month"}, "users": [alice],
            "models": [{"name": name, "provider": kind, "pricing": PRICES}
                       for kind, names in DEFAULT_MODELS.items() for name in names]}


@dataclass
class AgentGateway:
    """The running gateway: its base URL (no version suffix, like the fake's) and alice's key."""

    base_url: str
    key: str
    app: web.Application
    ledger_url: str

    async def ledger_rows(self) -> list[tuple[str, TokenUsage, int | None]]:
        """(model, tokens, cost_micros) of every recorded message, oldest first, once every
        answered request's usage is in."""
        await settled(self.app)
        rows = query(self.ledger_url,
                     "SELECT mo.name, m.input_tokens, m.output_tokens, m.cache_read_tokens, "
                     "m.cache_write_tokens, m.cache_write_1h_tokens, m.cost_micros "
                     "FROM messages m JOIN models mo ON mo.id = m.model_id "
                     "ORDER BY m.created_at, m.id")
        return [(row[0], TokenUsage(*row[1:6]), row[6]) for row in rows]

    async def recorded(self) -> list[tuple[TokenUsage, int | None]]:
        """(tokens, cost_micros) of every recorded message, oldest first."""
        return [(usage, cost) for _, usage, cost in await self.ledger_rows()]

    async def rows(self) -> Counter[tuple[TokenUsage, int | None]]:
        """`recorded()` as a multiset, to compare with `expected_rows`."""
        return Counter(await self.recorded())


def spend_to_the_limit(ledger_url: str, limit_usd: int) -> None:
    """Record, as earlier usage this month, exactly `limit_usd` of alice's spend."""
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    try:
        # cache reads cost one micro-dollar each
        usage = TokenUsage(cache_read=limit_usd * 1_000_000 // PRICES["cache_read"])
        assert cost_micros(usage) == limit_usd * 1_000_000
        record(engine, "alice", DEFAULT_MODELS["openai"][0], usage, datetime.now(UTC),
               provider="openai")
    finally:
        engine.dispose()


@asynccontextmanager
async def agent_gateway(fake: FakeAgentsProvider, ledger_url: str, tmp_path: Path, *,
                        limit_usd: int | None = None, spent_to_limit: bool = False,
                        **settings: Any) -> AsyncIterator[AgentGateway]:
    """The limiter on a real port in front of `fake`, with alice's key (over her limit from
    the start with `spent_to_limit`); `settings` change LimiterSettings fields."""
    keys = seed_ledger(ledger_url, agent_policy(limit_usd), keys_for=("alice",))
    if spent_to_limit:
        assert limit_usd is not None
        spend_to_the_limit(ledger_url, limit_usd)
    upstreams = {kind: UpstreamSettings(base_url=fake.base_url, api_key=UPSTREAM_KEY)
                 for kind in ("openai", "anthropic", "google")}
    limiter = dataclasses.replace(
        LimiterSettings(spool_dir=str(tmp_path / "spool"), upstream_timeout_seconds=60.0,
                        providers=upstreams), **settings)
    app = gateway_app(ledger_url, limiter, registry=CollectorRegistry())
    server = GatewayTestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield AgentGateway(str(server.make_url("")).rstrip("/"), keys["alice"], app,
                           ledger_url)
    finally:
        await server.close()
