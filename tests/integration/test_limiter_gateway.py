"""The gateway end to end: real ledger, real fake upstream, the official SDKs as clients."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry

from ledger.tokens import TokenUsage
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.gateway import (
    anthropic_request,
    bearer,
    gateway_app,
    limiter_settings,
    metric,
    openai_request,
    query,
    seed_ledger,
    settled,
)


async def start(aiohttp_client: Any, url: str, tmp_path: Path, upstream: FakeUpstream,
                registry: CollectorRegistry | None = None, **changes: Any) -> Any:
    app = gateway_app(url, limiter_settings(tmp_path, upstream.base_url, **changes),
                      registry=registry or CollectorRegistry())
    return await aiohttp_client(app)


def messages(url: str) -> list[Any]:
    return query(url, "SELECT m.provider, mo.name AS model, m.input_tokens, m.output_tokens, "
                      "m.cost_micros, m.partial, c.external_id AS chat FROM messages m "
                      "JOIN models mo ON mo.id = m.model_id "
                      "LEFT JOIN chats c ON c.id = m.chat_id ORDER BY m.created_at")


async def test_openai_answer_is_relayed_and_recorded_once(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(ledger_url)
    client = await start(aiohttp_client, ledger_url, tmp_path, upstream)
    resp = await client.post("/v1/chat/completions", json=openai_request(),
                             headers={**bearer(keys["alice"]), "X-Chat-ID": "chat-1"})
    assert resp.status == 200
    body = await resp.json()
    assert body["choices"][0]["message"]["content"].startswith("Hello")
    await settled(client.app)
    rows = messages(ledger_url)
    assert [(r.provider, r.model, r.input_tokens, r.output_tokens, r.cost_micros, r.chat)
            for r in rows] == [("openai", "gpt-test", 12, 9, 12 * 1 + 9 * 2, "chat-1")]
    # The provider key from the config went upstream; the client's key did not.
    sent = upstream.received[0].headers
    assert sent["Authorization"] == "Bearer sk-openai-SECRET"


async def test_anthropic_stream_by_alias_with_x_api_key(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    upstream.queue(Answer(usage=TokenUsage(input=10, output=4, cache_read=100)))
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream)
    resp = await client.post("/v1/messages",
                             json=anthropic_request("claude-test-2025", stream=True),
                             headers={"x-api-key": keys["bob"],
                                      "anthropic-version": "2023-06-01"})
    assert resp.status == 200
    text = await resp.text()
    assert "message_stop" in text
    await settled(client.app)
    rows = messages(sqlite_url)
    # 10*3 + 4*15 + 100*0.3 = 120 micros; recorded under the model's name, not the alias.
    assert [(r.model, r.cost_micros, bool(r.partial)) for r in rows] == [
        ("claude-test", 120, False)]
    assert upstream.received[0].headers["x-api-key"] == "sk-ant-SECRET"


async def test_official_sdks_as_clients(aiohttp_client: Any, sqlite_url: str, tmp_path: Path,
                                        upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream)
    base = str(client.make_url("/"))
    oai = openai.AsyncOpenAI(api_key=keys["alice"], base_url=base + "v1", max_retries=0)
    ant = anthropic.AsyncAnthropic(api_key=keys["alice"], base_url=base.rstrip("/"),
                                   max_retries=0)
    try:
        completion = await oai.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        assert completion.usage is not None and completion.usage.completion_tokens == 9
        chunks = [c async for c in await oai.chat.completions.create(
            model="gpt-test-latest", messages=[{"role": "user", "content": "hi"}],
            stream=True)]
        assert chunks
        message = await ant.messages.create(model="claude-test", max_tokens=50,
                                            messages=[{"role": "user", "content": "hi"}])
        assert message.usage.output_tokens == 9
        listed = await oai.models.list()
        assert sorted(m.id for m in listed.data) == ["claude-test", "free-model", "gpt-test"]
    finally:
        await oai.close()
        await ant.close()
    await settled(client.app)
    assert [r.model for r in messages(sqlite_url)] == ["gpt-test", "gpt-test", "claude-test"]


async def test_models_list_is_openai_shaped(aiohttp_client: Any, sqlite_url: str,
                                            tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream)
    resp = await client.get("/v1/models", headers=bearer(keys["alice"]))
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "list"
    assert {m["id"]: m["owned_by"] for m in body["data"]} == {
        "claude-test": "anthropic", "free-model": "openai", "gpt-test": "openai"}
    assert all(m["object"] == "model" for m in body["data"])
    assert (await client.get("/v1/models")).status == 401
    sdk = openai.AsyncOpenAI(api_key=keys["alice"], base_url=str(client.make_url("/v1")))
    try:
        assert sorted([m.id async for m in sdk.models.list()]) == [
            "claude-test", "free-model", "gpt-test"]
    finally:
        await sdk.close()


async def test_models_list_speaks_anthropic_to_anthropic_callers(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream)
    sdk = anthropic.AsyncAnthropic(api_key=keys["alice"], base_url=str(client.make_url("")))
    try:
        page = await sdk.models.list()
    finally:
        await sdk.close()
    assert sorted((m.id, m.type, m.display_name) for m in page.data) == [
        ("claude-test", "model", "claude-test"), ("free-model", "model", "free-model"),
        ("gpt-test", "model", "gpt-test")]
    assert page.has_more is False
    assert (page.first_id, page.last_id) == (page.data[0].id, page.data[-1].id)
    unknown = await client.get("/v1/models", headers={"x-api-key": "nope",
                                                      "anthropic-version": "2023-06-01"})
    assert unknown.status == 401


async def test_models_list_speaks_gemini_under_v1beta(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream)
    resp = await client.get("/v1beta/models", headers={"x-goog-api-key": keys["alice"]})
    assert resp.status == 200
    names = {m["name"]: m["displayName"] for m in (await resp.json())["models"]}
    assert names == {"models/claude-test": "claude-test", "models/free-model": "free-model",
                     "models/gpt-test": "gpt-test"}
    assert (await client.get("/v1beta/models", params={"key": "nope"})).status == 401


async def test_root_answers_probes_without_a_key(aiohttp_client: Any, sqlite_url: str,
                                                 tmp_path: Path, upstream: FakeUpstream) -> None:
    seed_ledger(sqlite_url)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream)
    assert (await client.head("/")).status == 200
    got = await client.get("/")
    assert got.status == 200
    assert (await got.json())["status"] == "ok"
    assert upstream.received == []


async def test_unknown_models_allow_forwards_and_records_unpriced(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream, unknown_models="allow")
    resp = await client.post("/v1/chat/completions", json=openai_request("mystery-model"),
                             headers=bearer(keys["alice"]))
    assert resp.status == 200
    # A declared but disabled model stays refused even then.
    resp = await client.post("/v1/chat/completions", json=openai_request("retired-model"),
                             headers=bearer(keys["alice"]))
    assert resp.status == 400
    await settled(client.app)
    assert [(r.model, r.cost_micros) for r in messages(sqlite_url)] == [("mystery-model", None)]
    limits = await client.get("/api/v1/limits", headers=bearer("admin-token-xyz"))
    body = await limits.json()
    assert "mystery-model" in [m["model"] for m in body["unpriced_models"]]
    assert body["models_without_pricing"] == 2  # free-model and mystery-model


async def test_keys_exist_only_as_hashes(ledger_url: str) -> None:
    keys = seed_ledger(ledger_url)
    rows = query(ledger_url, "SELECT * FROM api_keys")
    stored = " ".join(str(value) for row in rows for value in row)
    assert len(rows) == 2
    for secret in keys.values():
        assert secret not in stored


async def test_provider_keys_never_in_logs_or_answers(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys = seed_ledger(sqlite_url)
    upstream.queue(Answer(status=500), Answer(omit_usage=True))
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream)
    seen: list[str] = []
    for body, path in ((openai_request(), "/v1/chat/completions"),
                       (openai_request(), "/v1/chat/completions"),
                       (anthropic_request(stream=True), "/v1/messages"),
                       ({"model": 3}, "/v1/messages")):
        resp = await client.post(path, json=body, headers=bearer(keys["alice"]))
        seen.append(str(resp.headers) + await resp.text())
    await client.post("/v1/messages", data=b"{", headers=bearer("wrong"))
    metrics = await client.get("/metrics")
    seen.append(await metrics.text())
    await settled(client.app)
    everything = "\n".join(seen) + "\n".join(r.getMessage() + str(r.__dict__)
                                              for r in caplog.records)
    assert "SECRET" not in everything
    assert keys["alice"] not in everything


async def wait_for_messages(url: str, count: int, seconds: float = 10.0) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        rows = messages(url)
        if len(rows) >= count or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(("path", "request_body"), [
    ("/v1/messages", anthropic_request(stream=True)),
    ("/v1/chat/completions", openai_request(stream=True)),
], ids=["anthropic", "openai"])
async def test_client_aborting_a_stream_leaves_a_partial_record(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream,
        path: str, request_body: dict[str, Any]) -> None:
    keys = seed_ledger(ledger_url)
    paused = Answer(text=" ".join(["word"] * 40), pause_after=4,
                    usage=TokenUsage(input=1000, output=500))
    upstream.queue(paused)
    client = await start(aiohttp_client, ledger_url, tmp_path, upstream)
    resp = await client.post(path, json=request_body, headers=bearer(keys["alice"]))
    assert resp.status == 200
    first = await resp.content.readany()
    assert first
    resp.close()  # the agent is interrupted mid-answer
    await asyncio.wait_for(upstream.disconnected.wait(), 10)  # the upstream was closed too
    rows = await wait_for_messages(ledger_url, 1)
    assert len(rows) == 1
    assert rows[0].partial
    if path == "/v1/messages":
        # Anthropic sent the input side in message_start: kept exactly.
        assert rows[0].input_tokens == 1000
    assert rows[0].cost_micros > 0
    paused.resume.set()


async def test_trusted_header_mode_creates_the_user(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    seed_ledger(sqlite_url, keys_for=())
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream,
                         trusted_header_secret="s3cret")
    trusted = {"X-Forwarded-User": "dora", "X-Agentmeter-Secret": "s3cret"}
    resp = await client.post("/v1/chat/completions", json=openai_request(), headers=trusted)
    assert resp.status == 200
    await settled(client.app)
    rows = query(sqlite_url, "SELECT u.username FROM messages m JOIN users u "
                             "ON u.id = m.user_id")
    assert [r.username for r in rows] == ["dora"]
    status = await client.get("/api/v1/usage/status", headers=trusted)
    assert (await status.json())["current_spend_micros"] == 30
    # The secret is checked: a wrong one is not a credential, and nothing is created.
    for headers in ({"X-Forwarded-User": "eve", "X-Agentmeter-Secret": "guess"},
                    {"X-Forwarded-User": "eve"}):
        resp = await client.post("/v1/chat/completions", json=openai_request(),
                                 headers=headers)
        assert resp.status == 401
    assert query(sqlite_url, "SELECT count(*) FROM users WHERE username = 'eve'")[0][0] == 0
    # Forwarded headers never reach the provider.
    assert all("X-Agentmeter-Secret" not in r.headers for r in upstream.received)


async def test_request_metrics(aiohttp_client: Any, sqlite_url: str, tmp_path: Path,
                               upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    registry = CollectorRegistry()
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream, registry=registry)
    for stream in (False, True):
        resp = await client.post("/v1/messages", json=anthropic_request(stream=stream),
                                 headers=bearer(keys["alice"]))
        await resp.read()
    await settled(client.app)
    route = "/v1/messages"
    assert metric(registry, "agentmeter_limiter_requests_total", route=route, code="200",
                  provider="anthropic") == 2
    assert metric(registry, "agentmeter_limiter_request_duration_seconds_count",
                  route=route) == 2
    assert metric(registry, "agentmeter_limiter_overhead_seconds_count", route=route) == 2
    assert metric(registry, "agentmeter_limiter_upstream_duration_seconds_count",
                  provider="anthropic") == 2
    assert metric(registry, "agentmeter_limiter_time_to_first_token_seconds_count",
                  provider="anthropic") == 2
    overhead = metric(registry, "agentmeter_limiter_overhead_seconds_sum", route=route)
    total = metric(registry, "agentmeter_limiter_request_duration_seconds_sum", route=route)
    assert 0 < overhead < total


async def test_provider_cookies_are_not_kept_for_other_users(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    """One upstream session serves every user: a cookie the provider sets for one answer
    (load balancer or bot-protection cookies) must not ride along on anyone's next request."""
    keys = seed_ledger(sqlite_url)
    # By name, not by IP address: cookie jars keep no cookies for bare IP addresses.
    app = gateway_app(sqlite_url, limiter_settings(tmp_path, f"http://localhost:{upstream.port}"),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    upstream.queue(Answer(headers={"Set-Cookie": "__lb=alice-session; Path=/"}))
    resp = await client.post("/v1/chat/completions", json=openai_request(),
                             headers=bearer(keys["alice"]))
    assert resp.status == 200
    resp = await client.post("/v1/chat/completions", json=openai_request(),
                             headers=bearer(keys["bob"]))
    assert resp.status == 200
    assert "Cookie" not in upstream.received[-1].headers
