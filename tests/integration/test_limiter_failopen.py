"""PostgreSQL stopped during a run: requests still pass (fail-open, counted), usage is spooled
and, once the database is back, the ledger holds exactly one record per answered request.

Uses a cluster of the test's own (`own_cluster`), never the shared server.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ledger.migrate import upgrade
from limiter.http.app_keys import RECORDER
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import (
    anthropic_request,
    bearer,
    gateway_app,
    keys_locked,
    limiter_settings,
    metric,
    openai_request,
    policy,
    query,
    seed_ledger,
    settled,
)
from tests.support.pg_cluster import own_cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CHAT = "/v1/chat/completions"


async def wait_for(condition: Any, seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_database_outage_fails_open_spools_and_replays_exactly_once(
        aiohttp_client: Any, tmp_path: Path, upstream: FakeUpstream) -> None:
    with own_cluster() as cluster:
        await asyncio.to_thread(upgrade, cluster.url)
        keys = seed_ledger(cluster.url, policy(limits={"default_limit_usd": 100}))
        registry = CollectorRegistry()
        settings = limiter_settings(tmp_path, upstream.base_url)
        app = gateway_app(cluster.url, settings, registry=registry, replay_interval_s=0.2)
        client = await aiohttp_client(app)
        closed = await aiohttp_client(gateway_app(
            cluster.url, dataclasses.replace(settings, fail_mode="closed",
                                             spool_dir=str(tmp_path / "closed")),
            registry=CollectorRegistry()))
        strict = await aiohttp_client(gateway_app(
            cluster.url, dataclasses.replace(settings, enforcement="strict",
                                             spool_dir=str(tmp_path / "strict")),
            registry=CollectorRegistry()))
        alice, bob = bearer(keys["alice"]), bearer(keys["bob"])
        # Known label sets are exported at 0 before anything happens.
        assert registry.get_sample_value("agentmeter_limiter_fail_open_total",
                                          {"reason": "database_error"}) == 0
        for gateway in (client, closed, strict):
            assert (await gateway.post(CHAT, json=openai_request(), headers=alice)).status == 200
            await settled(gateway.app)
        assert (await client.post("/v1/messages", json=anthropic_request(),
                                  headers=bob)).status == 200
        await settled(client.app)
        answered = 4

        await asyncio.to_thread(cluster.stop)
        assert (await client.get("/readyz")).status == 503
        assert (await client.get("/healthz")).status == 200
        for _ in range(3):
            resp = await client.post(CHAT, json=openai_request(), headers=alice)
            assert resp.status == 200
            answered += 1
        resp = await client.post("/v1/messages", json=anthropic_request(stream=True),
                                 headers=bob)
        assert resp.status == 200 and "message_stop" in await resp.text()
        answered += 1
        await settled(client.app)
        # A caller never seen before cannot be attributed: refused rather than lost.
        assert (await client.post(CHAT, json=openai_request(),
                                  headers=bearer("am-never-seen"))).status == 503
        # fail_mode: closed and strict enforcement answer 503 instead of letting it through.
        for gateway in (closed, strict):
            resp = await gateway.post(CHAT, json=openai_request(), headers=alice)
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "ledger_unavailable"

        text = await (await client.get("/metrics")).text()
        assert 'agentmeter_limiter_fail_open_total{reason="database_error"} 4.0' in text
        assert "agentmeter_limiter_spool_pending 4.0" in text
        assert metric(registry, "agentmeter_limiter_spool_pending") == 4
        spooled = list((tmp_path / "spool").glob("*.jsonl"))
        assert sum(len(p.read_text().splitlines()) for p in spooled) == 4

        await asyncio.to_thread(cluster.start)
        await wait_for(lambda: metric(registry, "agentmeter_limiter_spool_pending") == 0)
        assert list((tmp_path / "spool").glob("*.jsonl")) == []
        assert (await client.get("/readyz")).status == 200

        rows = query(cluster.url, "SELECT id FROM messages")
        assert len(rows) == answered
        assert len({row.id for row in rows}) == answered
        # Replaying again (as a restarted limiter would) adds nothing.
        assert await client.app[RECORDER].replay() == 0
        assert len(query(cluster.url, "SELECT id FROM messages")) == answered
        for gateway in (client, closed, strict):
            await gateway.close()


async def test_a_check_slower_than_its_time_fails_open_as_a_timeout(
        aiohttp_client: Any, tmp_path: Path, upstream: FakeUpstream, pg_url: str) -> None:
    """The ledger is up but its answer does not come (an administrator's lock on the keys):
    after `connect_timeout_seconds` the request goes through, counted as a timeout; with
    `fail_mode: closed` it is answered 503. The record still reaches the ledger. (Checks are
    not answered from memory here: a cached answer would not wait for the lock.)"""
    keys = seed_ledger(pg_url)
    registry = CollectorRegistry()
    settings = dataclasses.replace(limiter_settings(tmp_path, upstream.base_url),
                                   check_cache_seconds=0)
    client = await aiohttp_client(gateway_app(pg_url, settings, registry=registry))
    closed = await aiohttp_client(gateway_app(
        pg_url, dataclasses.replace(settings, fail_mode="closed",
                                    spool_dir=str(tmp_path / "closed")),
        registry=CollectorRegistry()))
    alice = bearer(keys["alice"])
    for gateway in (client, closed):  # the identity is known from an answered check
        assert (await gateway.post(CHAT, json=openai_request(), headers=alice)).status == 200
        await settled(gateway.app)

    with keys_locked(pg_url):
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(10):  # an unbounded check would wait for the lock
            resp = await client.post(CHAT, json=openai_request(), headers=alice)
        waited = loop.time() - started
        assert resp.status == 200
        assert 2.0 <= waited < 4.0  # the gateways' connect_timeout_seconds is 2
        async with asyncio.timeout(10):
            resp = await closed.post(CHAT, json=openai_request(), headers=alice)
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "ledger_unavailable"

    assert metric(registry, "agentmeter_limiter_fail_open_total", reason="timeout") == 1
    assert metric(registry, "agentmeter_limiter_fail_open_total", reason="database_error") == 0
    await settled(client.app)
    assert len(query(pg_url, "SELECT id FROM messages")) == 3
    # The ledger answers again: the next check is a real one, not another timeout.
    assert (await client.post(CHAT, json=openai_request(), headers=alice)).status == 200
    assert metric(registry, "agentmeter_limiter_fail_open_total", reason="timeout") == 1
