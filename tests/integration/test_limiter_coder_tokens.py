"""Coder tokens as keys through the gateway: the official SDKs against the fake Coder API and
the fake provider, over real HTTP, with a real ledger."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import yaml
from prometheus_client import CollectorRegistry
from sqlalchemy import update

from coder.settings import CoderSettings
from ledger.engine import create_sync_engine
from ledger.metric_names import CODER_TOKEN_LOOKUPS
from ledger.migrate import upgrade
from ledger.schema import users
from ledger.settings import DatabaseSettings
from tests.support.fake_coder import FakeCoder, mint_token
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import (
    anthropic_request,
    bearer,
    gateway_app,
    heard,
    limiter_settings,
    metric,
    openai_request,
    policy,
    query,
    seed_ledger,
    settled,
)
from tests.support.monitoring_stack import free_port, running
from tests.support.pg_cluster import own_cluster

LOOKUPS = CODER_TOKEN_LOOKUPS + "_total"


async def start(aiohttp_client: Any, url: str, tmp_path: Path, upstream: FakeUpstream,
                coder: CoderSettings | None, registry: CollectorRegistry | None = None) -> Any:
    app = gateway_app(url, limiter_settings(tmp_path, upstream.base_url),
                      registry=registry or CollectorRegistry(), coder=coder)
    return await aiohttp_client(app)


def coder_settings(fake: FakeCoder, **changes: Any) -> CoderSettings:
    return CoderSettings(url=fake.base_url, **changes)


def spend_by_user(url: str) -> list[tuple[str, str | None, int]]:
    rows = query(url, "SELECT u.username, u.coder_id, count(m.id) FROM users u "
                      "JOIN messages m ON m.user_id = u.id GROUP BY u.username, u.coder_id "
                      "ORDER BY u.username")
    return [(r[0], r[1], int(r[2])) for r in rows]


def suspend(url: str, username: str) -> None:
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            conn.execute(update(users).where(users.c.username == username)
                         .values(suspended=True))
    finally:
        engine.dispose()


def assert_never_upstream(upstream: FakeUpstream, token: str) -> None:
    assert upstream.received
    for received in upstream.received:
        assert all(token not in value for value in received.headers.values())
        assert token not in received.raw_path
        assert "coder-session-token" not in {name.lower() for name in received.headers}


async def test_coder_tokens_work_with_the_official_sdks(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream,
        coder: FakeCoder) -> None:
    keys = seed_ledger(ledger_url)
    dana = coder.add_user("dana", "Dana Scully", "dana@example.com")
    token = coder.token_for(dana)
    client = await start(aiohttp_client, ledger_url, tmp_path, upstream, coder_settings(coder))
    base = str(client.make_url("/")).rstrip("/")
    oai = openai.AsyncOpenAI(api_key=token, base_url=base + "/v1", max_retries=0)
    ant = anthropic.AsyncAnthropic(api_key=token, base_url=base, max_retries=0)
    try:
        completion = await oai.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        message = await ant.messages.create(model="claude-test", max_tokens=50,
                                            messages=[{"role": "user", "content": "hi"}])
    finally:
        await oai.close()
        await ant.close()
    # Coder's own header, and an agentmeter key beside the Coder tokens.
    own_header = await client.post("/v1/messages", json=anthropic_request(),
                                   headers={"Coder-Session-Token": token})
    google_header = await client.post("/v1/chat/completions", json=openai_request(),
                                      headers={"x-goog-api-key": token})
    with_key = await client.post("/v1/chat/completions", json=openai_request(),
                                 headers=bearer(keys["alice"]))
    status = await client.get("/api/v1/usage/status", headers=bearer(token))
    admin_route = await client.get("/api/v1/limits", headers=bearer(token))

    assert admin_route.status == 403
    assert completion.usage is not None and completion.usage.completion_tokens == 9
    assert message.usage.output_tokens == 9
    assert (own_header.status, google_header.status, with_key.status,
            status.status) == (200, 200, 200, 200)
    assert (await status.json())["username"] == "dana"
    await settled(client.app)
    assert spend_by_user(ledger_url) == [("alice", None, 1), ("dana", dana.id, 4)]
    assert coder.calls["me"] == 1  # one lookup, then the cached answer
    assert upstream.received[0].headers["Authorization"] == "Bearer sk-openai-SECRET"
    assert upstream.received[1].headers["x-api-key"] == "sk-ant-SECRET"
    assert_never_upstream(upstream, token)


async def test_a_coder_user_is_limited_like_any_user(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream,
        coder: FakeCoder) -> None:
    seed_ledger(sqlite_url, policy(limits={"default_limit_usd": 0.00001}))  # 10 micros
    token = coder.token_for(coder.add_user("dana"))
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream, coder_settings(coder))

    first = await client.post("/v1/chat/completions", json=openai_request(),
                              headers=bearer(token))
    await settled(client.app)
    second = await client.post("/v1/chat/completions", json=openai_request(),
                               headers=bearer(token))

    assert first.status == 200
    assert second.status == 409
    body = await second.json()
    assert (body["spent_micros"], body["limit_micros"]) == (12 + 9 * 2, 10)


async def test_a_revoked_token_is_refused_within_the_cache_period(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream,
        coder: FakeCoder) -> None:
    seed_ledger(sqlite_url)
    token = coder.token_for(coder.add_user("erin"))
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream,
                         coder_settings(coder, token_cache_seconds=0.5))
    accepted = await client.post("/v1/chat/completions", json=openai_request(),
                                 headers=bearer(token))
    del coder.tokens[token]
    still_cached = await client.post("/v1/chat/completions", json=openai_request(),
                                     headers=bearer(token))
    await asyncio.sleep(0.6)
    refused = await client.post("/v1/chat/completions", json=openai_request(),
                                headers=bearer(token))

    assert (accepted.status, still_cached.status, refused.status) == (200, 200, 401)
    assert (await refused.json())["error"]["code"] == "invalid_coder_token"


async def test_while_coder_is_down_cached_tokens_pass_until_the_grace_ends(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream,
        coder: FakeCoder) -> None:
    seed_ledger(sqlite_url)
    frank = coder.add_user("frank")
    known, never_seen = coder.token_for(frank), coder.token_for(frank)
    registry = CollectorRegistry()
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream,
                         coder_settings(coder, token_cache_seconds=0.3,
                                        outage_grace_seconds=1.0), registry)
    first = await client.post("/v1/chat/completions", json=openai_request(),
                              headers=bearer(known))
    await coder.close()
    await asyncio.sleep(0.4)
    stale = await client.post("/v1/chat/completions", json=openai_request(),
                              headers=bearer(known))
    new = await client.post("/v1/chat/completions", json=openai_request(),
                            headers=bearer(never_seen))
    await asyncio.sleep(1.0)
    past_grace = await client.post("/v1/chat/completions", json=openai_request(),
                                   headers=bearer(known))

    assert (first.status, stale.status, new.status, past_grace.status) == (200, 200, 503, 503)
    assert (await new.json())["error"]["code"] == "coder_unavailable"
    scraped = await (await client.get("/metrics")).text()
    assert f'{LOOKUPS}{{outcome="accepted_stale"}} 1.0' in scraped
    assert metric(registry, LOOKUPS, outcome="accepted") == 1
    assert metric(registry, LOOKUPS, outcome="unavailable") == 2
    assert metric(registry, LOOKUPS, outcome="suspended") == 0


async def test_a_burst_of_unknown_tokens_makes_a_bounded_number_of_calls(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream,
        coder: FakeCoder) -> None:
    seed_ledger(sqlite_url)
    coder.me_delay = 0.05
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream,
                         coder_settings(coder, max_lookups_in_flight=3))
    unknown = [mint_token() for _ in range(5)]

    answers = await asyncio.gather(*(
        client.post("/v1/chat/completions", json=openai_request(),
                    headers=bearer(unknown[i % 5])) for i in range(100)))
    again = await client.post("/v1/chat/completions", json=openai_request(),
                              headers=bearer(unknown[0]))

    assert {a.status for a in answers} == {401} and again.status == 401
    assert coder.calls["me"] == 5  # one per token, shared by its requests, then remembered
    assert coder.max_in_flight <= 3
    assert upstream.received == []


async def test_a_suspended_coder_user_is_told_so(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream,
        coder: FakeCoder) -> None:
    seed_ledger(sqlite_url)
    token = coder.token_for(coder.add_user("gina", status="suspended"))
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream, coder_settings(coder))

    resp = await client.post("/v1/messages", json=anthropic_request(),
                             headers={"x-api-key": token})

    assert resp.status == 403
    body = await resp.json()  # in Anthropic's error shape, as Claude Code reads it
    assert body["type"] == "error" and body["error"]["type"] == "permission_error"
    assert "suspended" in body["error"]["message"]


async def test_a_suspended_users_agentmeter_key_is_refused(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(ledger_url)
    client = await start(aiohttp_client, ledger_url, tmp_path, upstream, None)
    before = await client.post("/v1/chat/completions", json=openai_request(),
                               headers=bearer(keys["bob"]))
    suspend(ledger_url, "bob")  # what `coder sync` does for a user Coder suspended
    await heard(client.app)  # the cached check of bob's key is dropped on PostgreSQL

    after = await client.post("/v1/chat/completions", json=openai_request(),
                              headers=bearer(keys["bob"]))
    models = await client.get("/v1/models", headers=bearer(keys["bob"]))
    other = await client.post("/v1/chat/completions", json=openai_request(),
                              headers=bearer(keys["alice"]))

    assert (before.status, after.status, models.status, other.status) == (200, 403, 403, 200)
    error = (await after.json())["error"]
    assert error["code"] == "account_suspended" and "suspended" in error["message"]


async def test_without_coder_a_coder_token_is_an_unknown_key(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream,
        coder: FakeCoder) -> None:
    seed_ledger(sqlite_url)
    token = coder.token_for(coder.add_user("hana"))
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream, None)

    resp = await client.post("/v1/chat/completions", json=openai_request(),
                             headers=bearer(token))

    assert resp.status == 401
    assert coder.calls.get("me", 0) == 0


async def test_the_limiter_command_takes_coder_url_from_the_environment(
        tmp_path: Path, sqlite_url: str, upstream: FakeUpstream, coder: FakeCoder) -> None:
    """As the Helm chart runs it: `coder.url` arrives as AGENTMETER_CODER_URL."""
    seed_ledger(sqlite_url)
    token = coder.token_for(coder.add_user("ivan"))
    config = tmp_path / "agentmeter.yaml"
    config.write_text(yaml.safe_dump({
        "database": {"url": sqlite_url},
        "limiter": {"spool_dir": str(tmp_path / "spool"),
                    "providers": {name: {"base_url": upstream.base_url, "api_key": f"sk-{name}"}
                                  for name in ("openai", "anthropic")}},
    }))
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AGENTMETER_CODER_URL": coder.base_url}
    url = f"http://127.0.0.1:{port}"
    async with running("agentmeter limiter",
                       [sys.executable, "-m", "agentmeter", "limiter", "--listen",
                        f"127.0.0.1:{port}", "--config", str(config)],
                       tmp_path / "limiter.log", env=env,
                       cwd=Path(__file__).resolve().parents[2]) as process:
        await process.wait_ready(f"{url}/healthz")
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/chat/completions", json=openai_request(),
                                    headers={"Coder-Session-Token": token}) as answer:
                assert answer.status == 200, await answer.text()
            async with session.get(f"{url}/metrics") as answer:
                scraped = await answer.text()

    assert f'{LOOKUPS}{{outcome="accepted"}} 1.0' in scraped
    assert f'{LOOKUPS}{{outcome="unavailable"}} 0.0' in scraped
    assert_never_upstream(upstream, token)


@pytest.mark.postgres
@pytest.mark.slow
async def test_with_the_ledger_away_a_known_coder_user_fails_open_and_a_new_one_gets_503(
        aiohttp_client: Any, tmp_path: Path, upstream: FakeUpstream, coder: FakeCoder) -> None:
    with own_cluster() as cluster:
        await asyncio.to_thread(upgrade, cluster.url)
        seed_ledger(cluster.url)
        known = coder.token_for(coder.add_user("jude"))
        new = coder.token_for(coder.add_user("kim"))
        registry = CollectorRegistry()
        client = await aiohttp_client(gateway_app(
            cluster.url, limiter_settings(tmp_path, upstream.base_url), registry=registry,
            replay_interval_s=0.2, coder=coder_settings(coder)))
        before = await client.post("/v1/chat/completions", json=openai_request(),
                                   headers=bearer(known))
        await settled(client.app)

        await asyncio.to_thread(cluster.stop)
        during = await client.post("/v1/chat/completions", json=openai_request(),
                                   headers=bearer(known))
        stranger = await client.post("/v1/chat/completions", json=openai_request(),
                                     headers=bearer(new))
        refusal = (await stranger.json())["error"]
        await settled(client.app)
        await asyncio.to_thread(cluster.start)
        deadline = asyncio.get_running_loop().time() + 20
        while metric(registry, "agentmeter_limiter_spool_pending") > 0:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        await client.close()

        assert (before.status, during.status, stranger.status) == (200, 200, 503)
        assert refusal["code"] == "ledger_unavailable"
        assert metric(registry, "agentmeter_limiter_fail_open_total",
                      reason="database_error") == 1
        assert spend_by_user(cluster.url) == [("jude", coder.users_by_name("jude").id, 2)]
