"""Bad input and failing upstreams: a clear JSON error, and the ledger left unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ledger.engine import create_sync_engine
from ledger.keys import revoke_keys
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from limiter.settings import UpstreamSettings
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.gateway import (
    anthropic_request,
    bearer,
    gateway_app,
    ledger_snapshot,
    limiter_settings,
    openai_request,
    policy,
    seed_ledger,
    settled,
)
from tests.support.hostile import ERROR_EXTRAS

CHAT = "/v1/chat/completions"
MIB = 1024 * 1024


async def start(aiohttp_client: Any, url: str, tmp_path: Path, upstream_url: str,
                **changes: Any) -> Any:
    app = gateway_app(url, limiter_settings(tmp_path, upstream_url, **changes),
                      registry=CollectorRegistry())
    return await aiohttp_client(app)


def error_code(body: dict[str, Any]) -> str:
    assert set(body) - ERROR_EXTRAS == {"error"}
    assert set(body["error"]) - ERROR_EXTRAS == {"code", "message"}
    assert body["error"]["message"]
    return str(body["error"]["code"])


@pytest.mark.parametrize(("send", "status", "code"), [
    ({"data": b"{not json"}, 400, "invalid_json"),
    ({"data": b"[1, 2]"}, 400, "invalid_json"),
    ({"data": b""}, 400, "invalid_json"),
    ({"json": {"messages": []}}, 400, "missing_model"),
    ({"json": openai_request("no-such-model")}, 400, "model_not_allowed"),
    ({"json": openai_request("retired-model")}, 400, "model_not_allowed"),
    ({"json": openai_request(), "headers": {"X-Chat-ID": "x" * 201}}, 400, "invalid_chat_id"),
], ids=["malformed", "not-object", "empty", "no-model", "undeclared", "disabled", "chat-id"])
async def test_bad_requests_change_nothing(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream,
        send: dict[str, Any], status: int, code: str) -> None:
    keys = seed_ledger(ledger_url)
    client = await start(aiohttp_client, ledger_url, tmp_path, upstream.base_url)
    before = ledger_snapshot(ledger_url)
    send = dict(send)
    headers = {**bearer(keys["alice"]), "Content-Type": "application/json",
               **send.pop("headers", {})}
    resp = await client.post(CHAT, headers=headers, **send)
    assert resp.status == status
    assert error_code(await resp.json()) == code
    await settled(client.app)
    assert ledger_snapshot(ledger_url) == before
    assert upstream.received == []


async def test_unknown_missing_and_revoked_keys_get_401(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(ledger_url)
    client = await start(aiohttp_client, ledger_url, tmp_path, upstream.base_url)
    before = ledger_snapshot(ledger_url)
    assert (await client.post(CHAT, json=openai_request(),
                              headers=bearer(keys["bob"]))).status == 200
    await settled(client.app)
    after_bob = ledger_snapshot(ledger_url)
    assert after_bob[0] == before[0] + 1

    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    with engine.begin() as conn:
        assert revoke_keys(conn, "bob") == 1
    engine.dispose()
    for headers in ({}, bearer("am-unknown"), {"x-api-key": "am-unknown"}, bearer(keys["bob"]),
                    {"Authorization": "Basic Ym9iOmJvYg=="}):
        resp = await client.post(CHAT, json=openai_request(), headers=headers)
        assert resp.status == 401, headers
        assert error_code(await resp.json()) in {"missing_api_key", "invalid_api_key"}
    await settled(client.app)
    assert ledger_snapshot(ledger_url) == after_bob
    assert len(upstream.received) == 1


# What a small body (or its headers) would earn from a caller the check lets through.
BODY_FAULTS: dict[str, tuple[bytes, dict[str, str], int]] = {
    "malformed": (b"{not json", {}, 400),
    "over_max_body_bytes": (json.dumps(openai_request(
        messages=[{"role": "user", "content": "x" * 300}])).encode(), {}, 413),
    "undeclared_model": (json.dumps(openai_request(model="not-declared")).encode(), {}, 400),
    "chat_id_too_long": (json.dumps(openai_request()).encode(), {"X-Chat-ID": "c" * 201}, 400),
}


@pytest.mark.parametrize("fault", sorted(BODY_FAULTS))
async def test_a_refusal_comes_before_what_the_body_would_earn(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream,
        fault: str) -> None:
    """A small body is read, checked and encoded while the limit check is out; its faults
    never hide a 401/409."""
    keys = seed_ledger(ledger_url, policy(users=[
        {"username": "alice", "limit_usd": "0.000001"}, {"username": "bob"}]))
    client = await start(aiohttp_client, ledger_url, tmp_path, upstream.base_url,
                         max_body_bytes=200)
    assert (await client.post(CHAT, json=openai_request(),
                              headers=bearer(keys["alice"]))).status == 200
    await settled(client.app)  # alice has now spent her 1-micro limit
    before = ledger_snapshot(ledger_url)
    body, fault_headers, fault_status = BODY_FAULTS[fault]
    json_type = {"Content-Type": "application/json", **fault_headers}
    expected = [(bearer("am-unknown"), 401), (bearer(keys["alice"]), 409),
                (bearer(keys["bob"]), fault_status)]
    for headers, status in expected:
        resp = await client.post(CHAT, data=body, headers={**headers, **json_type})
        assert resp.status == status, headers
        if status == 409:
            assert (await resp.json())["limit_source"] == "user"
    await settled(client.app)
    assert ledger_snapshot(ledger_url) == before
    assert len(upstream.received) == 1


async def test_a_client_leaving_mid_body_changes_nothing_and_frees_the_check(
        aiohttp_client: Any, pg_url: str, tmp_path: Path, upstream: FakeUpstream,
        caplog: pytest.LogCaptureFixture) -> None:
    """The check is out while a small body arrives; a client that leaves then must not leave
    the check's connection behind (one connection in the pool here)."""
    keys = seed_ledger(pg_url)
    app = gateway_app(pg_url, limiter_settings(tmp_path, upstream.base_url),
                      registry=CollectorRegistry(), pool_size=1)
    client = await aiohttp_client(app)
    before = ledger_snapshot(pg_url)
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {keys['alice']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(3):
        _, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(head.encode() + b'{"model": "gpt-test", ')  # 978 bytes short
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
    await asyncio.sleep(0.2)
    async with asyncio.timeout(5):  # would wait for a connection that never came back
        resp = await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
    assert resp.status == 200
    await settled(app)
    assert ledger_snapshot(pg_url)[0] == before[0] + 1
    assert len(upstream.received) == 1
    assert "Traceback" not in caplog.text


async def test_upstream_refused_is_502(aiohttp_client: Any, sqlite_url: str,
                                       tmp_path: Path) -> None:
    keys = seed_ledger(sqlite_url)
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = await start(aiohttp_client, sqlite_url, tmp_path, f"http://127.0.0.1:{port}")
    before = ledger_snapshot(sqlite_url)
    for path, body in ((CHAT, openai_request()), ("/v1/messages", anthropic_request(stream=True))):
        resp = await client.post(path, json=body, headers=bearer(keys["alice"]))
        assert resp.status == 502
        assert error_code(await resp.json()) == "upstream_error"
    await settled(client.app)
    assert ledger_snapshot(sqlite_url) == before


async def test_upstream_timeout_is_504(aiohttp_client: Any, sqlite_url: str, tmp_path: Path,
                                       upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    upstream.queue(Answer(hang_seconds=3), Answer(hang_seconds=3))
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream.base_url,
                         upstream_timeout_seconds=0.3)
    before = ledger_snapshot(sqlite_url)
    for stream in (False, True):
        resp = await client.post(CHAT, json=openai_request(stream=stream),
                                 headers=bearer(keys["alice"]))
        assert resp.status == 504
        assert error_code(await resp.json()) == "upstream_timeout"
    await settled(client.app)
    assert ledger_snapshot(sqlite_url) == before


async def test_upstream_errors_are_relayed_and_recorded_only_with_usage(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    upstream.queue(Answer(status=500),
                   Answer(status=400, usage_on_error=True, usage=TokenUsage(input=7)))
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream.base_url)
    before = ledger_snapshot(sqlite_url)
    resp = await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
    assert resp.status == 500
    assert (await resp.json())["error"]["message"] == "fake failure"  # the provider's own body
    await settled(client.app)
    assert ledger_snapshot(sqlite_url) == before
    resp = await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
    assert resp.status == 400
    await settled(client.app)
    assert ledger_snapshot(sqlite_url) == (before[0] + 1, before[1] + 7, 0)


async def test_missing_provider_config_is_503(aiohttp_client: Any, sqlite_url: str,
                                              tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream.base_url,
                         providers={"openai": UpstreamSettings(base_url=upstream.base_url)})
    resp = await client.post("/v1/messages", json=anthropic_request(),
                             headers=bearer(keys["alice"]))
    assert resp.status == 503
    assert error_code(await resp.json()) == "provider_not_configured"


async def test_unknown_route_and_method_are_json(aiohttp_client: Any, sqlite_url: str,
                                                 tmp_path: Path, upstream: FakeUpstream) -> None:
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream.base_url)
    resp = await client.get("/v1/nothing-here")
    assert resp.status == 404 and error_code(await resp.json()) == "not_found"
    resp = await client.get(CHAT)
    assert resp.status == 405 and error_code(await resp.json()) == "method_not_allowed"
    assert resp.headers["Allow"] == "POST"


# -- bodies over max_body_bytes -------------------------------------------------------------


async def _zeros(total: int, chunk: int = MIB) -> AsyncIterator[bytes]:
    block = b" " * chunk
    sent = 0
    while sent < total:
        yield block[: min(chunk, total - sent)]
        sent += chunk


async def _raw_post(port: int, path: str, headers: dict[str, str], total: int) -> bytes:
    """POST with a declared Content-Length, streaming the body; returns the raw answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {total}\r\n"
                 f"Content-Type: application/json\r\n{head}\r\n".encode())

    async def send_body() -> None:
        with contextlib.suppress(ConnectionError):
            async for chunk in _zeros(total):
                writer.write(chunk)
                await writer.drain()

    sender = asyncio.create_task(send_body())
    answer = await reader.readuntil(b"\r\n\r\n")
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sender
    writer.close()
    return answer


async def test_declared_33_mib_body_refused_without_reading_it(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream.base_url)
    before = ledger_snapshot(sqlite_url)
    tracemalloc.start()
    try:
        answer = await _raw_post(client.port, CHAT, bearer(keys["alice"]), 33 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.startswith(b"HTTP/1.1 413")
    assert peak < 8 * MIB  # the default cap is 32 MiB: nothing near it was held
    assert ledger_snapshot(sqlite_url) == before
    assert upstream.received == []


async def test_chunked_body_over_the_cap_stops_at_the_cap(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream.base_url,
                         max_body_bytes=2 * MIB)
    before = ledger_snapshot(sqlite_url)
    tracemalloc.start()
    try:
        resp = await client.post(CHAT, data=_zeros(33 * MIB, 256 * 1024),
                                 headers=bearer(keys["alice"]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.status == 413
    assert error_code(await resp.json()) == "payload_too_large"
    assert peak < 12 * MIB  # the 2 MiB cap plus buffers, never the 33 MiB body
    assert ledger_snapshot(sqlite_url) == before
    assert upstream.received == []


async def test_body_at_the_cap_passes(aiohttp_client: Any, sqlite_url: str, tmp_path: Path,
                                      upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    body = openai_request()
    body["messages"][0]["content"] = "x" * 1000
    size = len(json.dumps(body).encode())
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream.base_url,
                         max_body_bytes=size)
    ok = await client.post(CHAT, data=json.dumps(body), headers=bearer(keys["alice"]))
    assert ok.status == 200
    body["messages"][0]["content"] += "x"
    too_big = await client.post(CHAT, data=json.dumps(body), headers=bearer(keys["alice"]))
    assert too_big.status == 413
