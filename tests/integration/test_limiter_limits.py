"""Spend limits as a user meets them: the refusal (its status, its body in the caller's dialect
and headers), the status endpoint, period roll-over and several limiter processes sharing one
ledger."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry

from ledger.tokens import TokenUsage
from limiter.http.app_keys import LISTENER
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.gateway import (
    MovableClock,
    apply,
    bearer,
    gateway_app,
    heard,
    limiter_settings,
    message_count,
    metric,
    openai_request,
    policy,
    seed_ledger,
    settled,
)

CHAT = "/v1/chat/completions"


def users(alice_limit: Any = None, **alice: Any) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {"username": "alice", "name": "Alice Liddell", **alice}
    if alice_limit is not None:
        entry["limit_usd"] = alice_limit
    return [entry, {"username": "bob"}]


async def start(aiohttp_client: Any, url: str, tmp_path: Path, upstream: FakeUpstream,
                clock: MovableClock, registry: CollectorRegistry | None = None,
                **changes: Any) -> Any:
    app = gateway_app(url, limiter_settings(tmp_path, upstream.base_url, **changes),
                      clock=clock, registry=registry or CollectorRegistry())
    return await aiohttp_client(app)


async def test_409_exactly_when_spend_reaches_the_limit(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(ledger_url, policy(users=users("0.00006")))  # 60 micros
    clock = MovableClock(datetime(2026, 3, 14, 12, 0, 0, 500_000, tzinfo=UTC))
    registry = CollectorRegistry()
    client = await start(aiohttp_client, ledger_url, tmp_path, upstream, clock, registry)
    upstream.queue(Answer(usage=TokenUsage(input=59)), Answer(usage=TokenUsage(input=1)))
    alice = bearer(keys["alice"])

    first = await client.post(CHAT, json=openai_request(), headers=alice)
    assert first.status == 200
    await settled(client.app)
    # 59 of 60 micros spent: one micro below the limit still passes.
    second = await client.post(CHAT, json=openai_request(), headers=alice)
    assert second.status == 200
    await settled(client.app)

    before = message_count(ledger_url)
    refused = await client.post(CHAT, json=openai_request(), headers=alice)
    assert refused.status == 409
    sentence = ("Chat usage limit exceeded: $0.00006 of $0.00006 this month; "
                "resets 2026-04-01 00:00 UTC.")
    assert await refused.json() == {
        "message": sentence, "spent_micros": 60, "limit_micros": 60,
        "limit_source": "user", "resets_at": "2026-04-01T00:00:00Z",
        "error": {"message": sentence, "type": "insufficient_quota", "code": "limit_exceeded"}}
    # No Retry-After: agents that honour it would sleep until the reset, showing nothing.
    assert "Retry-After" not in refused.headers
    assert refused.headers["x-should-retry"] == "false"
    assert len(upstream.received) == 2
    assert message_count(ledger_url) == before
    assert metric(registry, "agentmeter_limiter_blocked_total", user="alice") == 1
    assert metric(registry, "agentmeter_limiter_requests_total", route=CHAT, code="409",
                  provider="openai") == 1
    # Bob has no limit and is unaffected.
    assert (await client.post(CHAT, json=openai_request(),
                              headers=bearer(keys["bob"]))).status == 200


async def test_sdk_does_not_retry_a_409(aiohttp_client: Any, sqlite_url: str, tmp_path: Path,
                                        upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url, policy(users=users("0.00001")))
    registry = CollectorRegistry()
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream, MovableClock(),
                         registry)
    await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
    await settled(client.app)
    sdk = openai.AsyncOpenAI(api_key=keys["alice"], base_url=str(client.make_url("/v1")),
                             max_retries=3)
    try:
        with pytest.raises(openai.ConflictError) as caught:
            await sdk.chat.completions.create(model="gpt-test",
                                              messages=[{"role": "user", "content": "hi"}])
    finally:
        await sdk.close()
    assert caught.value.status_code == 409
    # The SDK's message is the dialect's error.message: the sentence.
    assert "Chat usage limit exceeded: $0.00003 of $0.00001 this month; resets" in str(
        caught.value)
    assert metric(registry, "agentmeter_limiter_requests_total", route=CHAT, code="409",
                  provider="openai") == 1


async def test_anthropic_callers_get_anthropics_error_object(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url, policy(users=users("0.00001")))
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream,
                         MovableClock(datetime(2026, 3, 14, 12, tzinfo=UTC)))
    await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
    await settled(client.app)
    sdk = anthropic.AsyncAnthropic(api_key=keys["alice"], base_url=str(client.make_url("")),
                                   max_retries=3)
    try:
        with pytest.raises(anthropic.ConflictError) as caught:
            await sdk.messages.create(model="claude-test", max_tokens=10,
                                      messages=[{"role": "user", "content": "hi"}])
    finally:
        await sdk.close()
    sentence = ("Chat usage limit exceeded: $0.00003 of $0.00001 this month; "
                "resets 2026-04-01 00:00 UTC.")
    assert caught.value.body == {
        "type": "error", "error": {"type": "invalid_request_error", "message": sentence,
                                   "code": "limit_exceeded"},
        "message": sentence, "spent_micros": 30, "limit_micros": 10, "limit_source": "user",
        "resets_at": "2026-04-01T00:00:00Z"}
    assert len(upstream.received) == 1  # the SDK did not retry
    # count_tokens generates nothing: it stays open to a user over the limit.
    counted = await client.post("/v1/messages/count_tokens", headers=bearer(keys["alice"]),
                                json={"model": "claude-test",
                                      "messages": [{"role": "user", "content": "hi"}]})
    assert counted.status == 200


@pytest.mark.parametrize("status", [402, 403, 429])
async def test_refusal_status_and_retry_after_are_settings(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream,
        status: int) -> None:
    keys = seed_ledger(sqlite_url, policy(limits={"period": "day"}, users=users("0.00001")))
    registry = CollectorRegistry()
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream,
                         MovableClock(datetime(2026, 3, 14, 23, 59, 30, tzinfo=UTC)), registry,
                         limit_exceeded_status=status, limit_retry_after=True)
    await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
    await settled(client.app)
    refused = await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
    assert refused.status == status
    assert refused.headers["Retry-After"] == "30"
    assert refused.headers["x-should-retry"] == "false"
    assert (await refused.json())["error"]["message"] == (
        "Chat usage limit exceeded: $0.00003 of $0.00001 today; resets 2026-03-15 00:00 UTC.")
    # Refusals are counted as refusals whatever their status.
    assert metric(registry, "agentmeter_limiter_blocked_total", user="alice") == 1


@pytest.mark.parametrize(("document", "expected"), [
    (policy(limits={"enabled": False, "default_limit_usd": 1}, users=users(2)),
     {"is_limited": False, "limit_micros": None, "limit_source": "disabled"}),
    (policy(users=users()), {"is_limited": False, "limit_micros": None, "limit_source": "none"}),
    (policy(limits={"default_limit_usd": 10}, users=users()),
     {"is_limited": True, "limit_micros": 10_000_000, "limit_source": "default"}),
    (policy(limits={"default_limit_usd": 10}, users=users(),
            groups=[{"name": "ml", "limit_usd": 5, "members": ["alice"]},
                    {"name": "big", "limit_usd": 7, "members": ["alice"]}]),
     {"is_limited": True, "limit_micros": 5_000_000, "limit_source": "group"}),
    (policy(limits={"default_limit_usd": 10}, users=users("2.5"),
            groups=[{"name": "ml", "limit_usd": 5, "members": ["alice"]}]),
     {"is_limited": True, "limit_micros": 2_500_000, "limit_source": "user"}),
    (policy(limits={"default_limit_usd": 10}, users=users("unlimited")),
     {"is_limited": False, "limit_micros": None, "limit_source": "user"}),
], ids=["disabled", "none", "default", "group", "user", "unlimited"])
async def test_status_for_every_limit_source(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream,
        document: dict[str, Any], expected: dict[str, Any]) -> None:
    keys = seed_ledger(sqlite_url, document)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream, MovableClock())
    await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
    await settled(client.app)
    resp = await client.get("/api/v1/usage/status", headers=bearer(keys["alice"]))
    assert resp.status == 200
    assert await resp.json() == {
        "username": "alice", "blocked": False, "period": "month",
        "current_spend_micros": 30, "period_start": "2026-03-01T00:00:00Z",
        "period_end": "2026-04-01T00:00:00Z", **expected}


async def test_status_blocked_and_unauthenticated(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url, policy(users=users("0.00003")))
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream, MovableClock())
    await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
    await settled(client.app)
    body = await (await client.get("/api/v1/usage/status", headers=bearer(keys["alice"]))).json()
    assert (body["blocked"], body["current_spend_micros"], body["limit_micros"]) == (True, 30, 30)
    assert (await client.get("/api/v1/usage/status")).status == 401
    assert (await client.get("/api/v1/usage/status", headers=bearer("nope"))).status == 401


async def test_period_rolls_over(aiohttp_client: Any, sqlite_url: str, tmp_path: Path,
                                 upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url, policy(limits={"period": "day"}, users=users("0.00002")))
    clock = MovableClock(datetime(2026, 3, 14, 23, 59, 30, tzinfo=UTC))
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream, clock)
    alice = bearer(keys["alice"])
    assert (await client.post(CHAT, json=openai_request(), headers=alice)).status == 200
    await settled(client.app)
    refused = await client.post(CHAT, json=openai_request(), headers=alice)
    assert refused.status == 409
    assert (await refused.json())["resets_at"] == "2026-03-15T00:00:00Z"

    clock.advance(seconds=30)  # midnight UTC: a new day, a new budget
    status = await (await client.get("/api/v1/usage/status", headers=alice)).json()
    assert (status["period_start"], status["current_spend_micros"], status["blocked"]) == (
        "2026-03-15T00:00:00Z", 0, False)
    assert (await client.post(CHAT, json=openai_request(), headers=alice)).status == 200


async def test_two_limiters_on_one_postgresql_share_limits(
        aiohttp_client: Any, pg_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(pg_url, policy(users=users("0.00003")))
    clock = MovableClock()
    one = await start(aiohttp_client, pg_url, tmp_path / "one", upstream, clock)
    two = await start(aiohttp_client, pg_url, tmp_path / "two", upstream, clock)
    alice = bearer(keys["alice"])
    assert (await one.post(CHAT, json=openai_request(), headers=alice)).status == 200
    await settled(one.app)
    # What one limiter recorded, the other sees on its very next check.
    assert (await two.post(CHAT, json=openai_request(), headers=alice)).status == 409
    assert (await one.post(CHAT, json=openai_request(), headers=alice)).status == 409
    # Raising the limit through one limiter's admin API frees the user on the other, once the
    # ledger's notification of the change has reached it (it remembers its last check).
    admin = bearer("admin-token-xyz")
    put = await one.put("/api/v1/limits/users/alice", json={"limit_usd": "1"}, headers=admin)
    assert put.status == 200
    await heard(two.app)
    assert (await two.post(CHAT, json=openai_request(), headers=alice)).status == 200


async def test_policy_change_applies_without_restart(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url, policy(users=users()))
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream, MovableClock())
    alice = bearer(keys["alice"])
    assert (await client.post(CHAT, json=openai_request(), headers=alice)).status == 200
    await settled(client.app)
    # Limits and spend are read on every check: no restart, no cache to wait for.
    apply(sqlite_url, policy(limits={"default_limit_usd": "0.00001"}, users=users()))
    assert (await client.post(CHAT, json=openai_request(), headers=alice)).status == 409


async def test_sqlite_ledgers_answer_every_key_check_themselves(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    """SQLite announces no changes, so nothing is answered from memory."""
    keys = seed_ledger(sqlite_url, policy(users=users()))
    registry = CollectorRegistry()
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream, MovableClock(),
                         registry)
    for _ in range(2):
        assert (await client.post(CHAT, json=openai_request(),
                                  headers=bearer(keys["alice"]))).status == 200
    checks = {source: metric(registry, "agentmeter_limiter_key_checks_total", source=source)
              for source in ("ledger", "cache")}
    assert checks == {"ledger": 2, "cache": 0}
    assert client.app[LISTENER] is None
