"""The gateway in front of the fake agents provider, for running the real clients through it.

A ledger declares every model the fake serves at easy prices (1 micro per input token, 2 per
output token, 0.5 per cached token), one user has a key, and the gateway is served on a real
port (the clients are other processes): a client's set-up takes `base_url` and `key` in place of
the fake's. `rows()` reads back what the ledger recorded, in the fake's units, to compare with
`FakeAgentsProvider.reported()` to the micro.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ledger.tokens import TokenUsage
from tests.support.fake_agents_provider import DEFAULT_MODELS, FakeAgentsProvider
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
PRICES = {"input": 1, "output": 2, "cache_read": 0.5}


def cost_micros(usage: TokenUsage) -> int:
    """What the gateway's prices make `usage` cost (whole micros: the fake's counts are even
    where they are cached)."""
    return usage.input * 1 + usage.output * 2 + usage.cache_read // 2


@dataclass
class AgentGateway:
    server: GatewayTestServer
    ledger_url: str
    key: str

    @property
    def base_url(self) -> str:
        """Without a version suffix, as the clients' set-ups take a provider's."""
        return str(self.server.make_url("")).rstrip("/")

    async def rows(self) -> Counter[tuple[TokenUsage, int]]:
        """Every recorded message once the writer is done: its usage and its cost."""
        await settled(self.server.app)
        return Counter(
            (TokenUsage(input=row.input_tokens, output=row.output_tokens,
                        cache_read=row.cache_read_tokens, cache_write=row.cache_write_tokens,
                        cache_write_1h=row.cache_write_1h_tokens), row.cost_micros)
            for row in query(self.ledger_url, "SELECT * FROM messages"))


def expected_rows(fake: FakeAgentsProvider) -> Counter[tuple[TokenUsage, int]]:
    """The rows the ledger must hold for what the fake reported."""
    return Counter((usage, cost_micros(usage)) for usage in fake.reported())


@asynccontextmanager
async def gateway_in_front(fake: FakeAgentsProvider, ledger_url: str,
                           tmp_path: Path) -> AsyncIterator[AgentGateway]:
    models: list[dict[str, Any]] = [
        {"name": name, "provider": kind, "pricing": PRICES}
        for kind, names in DEFAULT_MODELS.items() if kind in ("openai", "anthropic")
        for name in names]
    keys = seed_ledger(ledger_url, policy(models=models), keys_for=(USER,))
    app = gateway_app(ledger_url, limiter_settings(tmp_path, fake.base_url),
                      registry=CollectorRegistry())
    server = GatewayTestServer(app)
    await server.start_server()
    try:
        yield AgentGateway(server, ledger_url, keys[USER])
    finally:
        await server.close()
