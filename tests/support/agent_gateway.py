"""The limiter in front of the fake agents provider, for running a real client through it.

`gateway_before(fake, ledger_url, tmp_path)` seeds the ledger with every model the fake serves
(priced so a cost is easy to check), makes a key for one user and serves the gateway on a real
port (the clients are other processes) with each upstream kind pointing at the fake under the
gateway's own provider key; a client is then pointed at `base_url` with `key` exactly as it
would be at the fake (`tests.support.agent_setups` takes either base URL). `recorded()` and
`rows()` read back what the ledger holds, to compare with `FakeAgentsProvider.reported()` to the
micro (`expected_rows`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from ledger.tokens import TokenUsage
from limiter.settings import UpstreamSettings
from tests.support.fake_agents_provider import FakeAgentsProvider
from tests.support.gateway import (
    GatewayTestServer,
    gateway_app,
    limiter_settings,
    policy,
    query,
    seed_ledger,
    settled,
)

USER = "alice"
# Micros per token of every model the fake serves.
PRICES = {"input": 2, "output": 10, "cache_read": 0.5}
# The gateway's own provider keys, one per upstream kind (what the fake must receive).
PROVIDER_KEYS = {"openai": "sk-gateway-openai", "anthropic": "sk-gateway-anthropic",
                 "google": "gateway-google-key"}


def cost_micros(usage: TokenUsage) -> int:
    """What one answer of `usage` costs at PRICES (the ceiling taken once, as the ledger does)."""
    return math.ceil(usage.input * PRICES["input"] + usage.output * PRICES["output"]
                     + usage.cache_read * PRICES["cache_read"])


def expected_rows(fake: FakeAgentsProvider) -> Counter[tuple[TokenUsage, int]]:
    """The rows the ledger must hold for what the fake reported: usage and cost."""
    return Counter((usage, cost_micros(usage)) for usage in fake.reported())


@dataclass
class AgentGateway:
    # Without a version suffix, as the clients' set-ups take a provider's.
    base_url: str
    key: str
    app: web.Application
    ledger_url: str

    async def recorded(self) -> list[tuple[TokenUsage, int]]:
        """Every recorded message's usage and cost, once all answers are in the ledger."""
        await settled(self.app)
        rows = query(self.ledger_url,
                     "SELECT input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
                     "cache_write_1h_tokens, cost_micros FROM messages ORDER BY created_at")
        return [(TokenUsage(*row[:5]), row[5]) for row in rows]

    async def rows(self) -> Counter[tuple[TokenUsage, int]]:
        """`recorded()` as a multiset, to compare with `expected_rows`."""
        return Counter(await self.recorded())


@contextlib.asynccontextmanager
async def gateway_before(fake: FakeAgentsProvider, ledger_url: str,
                         tmp_path: Path) -> AsyncIterator[AgentGateway]:
    models = [{"name": name, "provider": provider, "pricing": PRICES}
              for provider, names in fake.models.items() for name in names]
    key = seed_ledger(ledger_url, policy(models=models), keys_for=(USER,))[USER]
    settings = limiter_settings(tmp_path, fake.base_url)
    settings = dataclasses.replace(settings, providers={
        kind: UpstreamSettings(base_url=fake.base_url, api_key=secret)
        for kind, secret in PROVIDER_KEYS.items()})
    server = GatewayTestServer(gateway_app(ledger_url, settings, registry=CollectorRegistry()),
                               host="127.0.0.1")
    await server.start_server()
    try:
        yield AgentGateway(str(server.make_url("")).rstrip("/"), key, server.app, ledger_url)
    finally:
        await server.close()
