"""Limits under concurrency, on the real PostgreSQL ledger (issue 8, release gate).

Default enforcement lets requests already in flight finish past the limit (the design's "brief
overage"), but no more: the overage is bounded by what was in flight, and once an overage is
recorded every later request is refused. Strict enforcement never passes the limit. Two limiter
processes sharing one ledger refuse a user at the limit within one request of each other: each
hears the other's records from the ledger's notifications as they are committed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
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
    bearer,
    gateway_app,
    limiter_settings,
    openai_request,
    policy,
    query,
    seed_ledger,
    settled,
)

pytestmark = [pytest.mark.postgres]

CHAT = "/v1/chat/completions"
LIMIT = 100_000  # micros (0.1 USD)
# Each answer: 100 input tokens at 1 micro + 500 output tokens at 2 micros (gpt-test).
USAGE = TokenUsage(input=100, output=500)
COST = 1_100
CONCURRENCY = 100
# Slow enough that the whole burst is in flight together.
UPSTREAM_SECONDS = 0.3


@pytest.fixture
async def upstream() -> Any:
    fake = FakeUpstream(Answer(usage=USAGE, hang_seconds=UPSTREAM_SECONDS))
    await fake.start()
    yield fake
    await fake.close()


def seed(url: str, spent: int) -> str:
    """alice under a LIMIT override with `spent` micros already recorded this period."""
    users = [{"username": "alice", "limit_usd": f"{LIMIT / 1_000_000:.6f}"}]
    key = seed_ledger(url, policy(users=users), keys_for=("alice",))["alice"]
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            alice = int(conn.exec_driver_sql(
                "SELECT id FROM users WHERE username = 'alice'").scalar_one())
            # gpt-test: 1 micro per input token, so `spent` input tokens cost `spent` micros.
            record_usage(conn, UsageRecord(id=str(uuid.uuid4()), user_id=alice,
                                           model="gpt-test", provider="openai",
                                           usage=TokenUsage(input=spent),
                                           created_at=datetime.now(UTC)))
    finally:
        engine.dispose()
    return key


def spend(url: str) -> int:
    return int(query(url, "SELECT coalesce(sum(cost_micros), 0) FROM messages")[0][0])


async def _post(client: Any, key: str, body: dict[str, Any] | None = None) -> int:
    resp = await client.post(CHAT, json=body or openai_request(),
                             headers=bearer(key))
    await resp.read()
    return int(resp.status)


async def test_default_mode_overage_is_bounded_by_the_requests_in_flight(
        aiohttp_client: Any, pg_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    key = seed(pg_url, LIMIT - 1)
    app = gateway_app(pg_url, limiter_settings(tmp_path, upstream.base_url),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)

    statuses = await asyncio.gather(*(_post(client, key) for _ in range(CONCURRENCY)))
    await settled(app)

    answered = statuses.count(200)
    assert sorted(set(statuses)) <= [200, 409]
    assert answered >= 1  # spend was under the limit when the burst arrived
    overage = spend(pg_url) - LIMIT
    # Every request admitted was in flight before the first record landed: nothing more.
    assert 0 <= overage <= answered * COST - 1
    assert overage < CONCURRENCY * COST
    # The overage is recorded: from now on this user is refused, however many ask at once.
    again = await asyncio.gather(*(_post(client, key) for _ in range(CONCURRENCY)))
    assert again == [409] * CONCURRENCY
    assert spend(pg_url) == LIMIT + overage


async def test_default_mode_refuses_every_request_after_the_first_recorded_overage(
        aiohttp_client: Any, pg_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    """100 requests arriving over about a second: the ones that start once the overage is in
    the ledger are all refused; only those already on their way could pass."""
    key = seed(pg_url, LIMIT - 1)
    app = gateway_app(pg_url, limiter_settings(tmp_path, upstream.base_url),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    over_at: list[float] = []

    async def watch() -> None:
        while not over_at:
            if await asyncio.to_thread(spend, pg_url) >= LIMIT:
                over_at.append(time.monotonic())
            await asyncio.sleep(0.005)

    async def one(delay: float) -> tuple[float, int]:
        await asyncio.sleep(delay)
        started = time.monotonic()
        return started, await _post(client, key)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(one(n * 0.012) for n in range(CONCURRENCY)))
    await settled(app)
    await asyncio.wait_for(watcher, 5)

    after = [status for started, status in results if started > over_at[0]]
    before = [status for started, status in results if started <= over_at[0]]
    assert after, "the overage landed after the last request: no request tested the rule"
    assert after == [409] * len(after)
    answered = before.count(200)
    assert answered >= 1
    assert 0 <= spend(pg_url) - LIMIT <= answered * COST - 1


async def test_strict_mode_never_passes_the_limit(
        aiohttp_client: Any, pg_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    body = openai_request(max_tokens=500)
    bound = len(json.dumps(body).encode()) + 500 * 2
    # Room for a handful of bounds, not for a hundred.
    key = seed(pg_url, LIMIT - 8 * bound)
    app = gateway_app(pg_url, limiter_settings(tmp_path, upstream.base_url,
                                               enforcement="strict"),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    peak: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            peak.append(await asyncio.to_thread(spend, pg_url))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    statuses = await asyncio.gather(*(_post(client, key, body) for _ in range(CONCURRENCY)))
    await settled(app)
    done.set()
    await watcher

    answered = statuses.count(200)
    assert sorted(set(statuses)) == [200, 409]
    assert 1 <= answered <= 8
    assert max(peak) <= LIMIT
    assert spend(pg_url) == LIMIT - 8 * bound + answered * COST <= LIMIT
    assert query(pg_url, "SELECT count(*) FROM reservations")[0][0] == 0


async def test_two_limiters_refuse_a_user_at_the_limit_within_one_request(
        aiohttp_client: Any, pg_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    """Requests alternate between two limiter apps (own engines, own spools) on one ledger."""
    key = seed(pg_url, LIMIT - 3 * COST + 1)  # the third answer crosses the limit
    clients = []
    for name in ("a", "b"):
        settings = limiter_settings(tmp_path / name, upstream.base_url)
        clients.append(await aiohttp_client(
            gateway_app(pg_url, settings, registry=CollectorRegistry())))

    statuses: list[tuple[str, int]] = []
    for n in range(12):
        statuses.append(("ab"[n % 2], await _post(clients[n % 2], key)))

    codes = [status for _, status in statuses]
    first_refusal = codes.index(409)
    # Three answers reach the limit; the record of the third lands just after its answer, so
    # at most one more request (on either limiter) may still pass.
    assert 3 <= first_refusal <= 4, statuses
    assert codes[first_refusal:] == [409] * (len(codes) - first_refusal), statuses
    refused_by = {name for name, status in statuses if status == 409}
    assert refused_by == {"a", "b"}
    assert LIMIT <= spend(pg_url) <= LIMIT + 2 * COST
