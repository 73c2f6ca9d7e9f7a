"""The gateway's edge against hostile or careless clients, each case sent as exact bytes: the
head is checked before the body is read, the query string and headers are passed on as the
design says, encoded bodies are decoded within bounds, slow clients are cut off, the bytes of
bodies held at once are bounded and answers are written with back-pressure."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web
from backports import zstd
from prometheus_client import CollectorRegistry

from limiter.http.server import gateway_runner
from limiter.settings import LimiterSettings, UpstreamSettings
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.gateway import (
    anthropic_request,
    bearer,
    gateway_app,
    limiter_settings,
    message_count,
    metric,
    openai_request,
    policy,
    seed_ledger,
    settled,
)
from tests.support.raw_http import CHAT, connect, post, read_response

MIB = 1024 * 1024


@dataclass
class Gateway:
    client: Any
    keys: dict[str, str]
    registry: CollectorRegistry


async def start(aiohttp_client: Any, url: str, settings: LimiterSettings) -> Gateway:
    keys = seed_ledger(url)
    registry = CollectorRegistry()
    app = gateway_app(url, settings, registry=registry)
    return Gateway(await aiohttp_client(app), keys, registry)


@pytest.fixture
async def gateway(aiohttp_client: Any, sqlite_url: str, tmp_path: Path,
                  upstream: FakeUpstream) -> Gateway:
    return await start(aiohttp_client, sqlite_url,
                       limiter_settings(tmp_path, upstream.base_url))


def head(path: str = CHAT, *lines: str) -> bytes:
    return ("\r\n".join([f"POST {path} HTTP/1.1", "Host: gateway", *lines])
            + "\r\n\r\n").encode()


# The head decides first ------------------------------------------------------------------------

@pytest.mark.parametrize("credential", [None, "Authorization: Bearer not-a-key"])
async def test_a_large_upload_without_a_valid_key_is_refused_on_its_head(
        gateway: Gateway, upstream: FakeUpstream, credential: str | None) -> None:
    reader, writer = await connect(gateway.client)
    lines = ["Content-Type: application/json", f"Content-Length: {MIB}"]
    if credential:
        lines.append(credential)
    writer.write(head(CHAT, *lines) + b"{" + b" " * 100)  # the rest never comes
    status, _, body = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert status == 401
    assert json.loads(body)["error"]["code"] in {"missing_api_key", "invalid_api_key"}
    assert not upstream.received
    assert metric(gateway.registry, "agentmeter_limiter_buffered_body_bytes") == 0


# What goes upstream ---------------------------------------------------------------------------

async def test_the_query_string_goes_upstream_byte_for_byte_without_a_key_parameter(
        gateway: Gateway, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await connect(gateway.client)
    body = json.dumps(openai_request()).encode()
    query = "q=a+b&x=%00%23y&key=QUERY-SECRET&z=%2F;w&empty="
    writer.write(post(gateway.keys["alice"], body, path=f"{CHAT}?{query}"))
    status, _, _ = await read_response(reader)
    writer.close()
    assert status == 200
    assert [r.raw_path for r in upstream.received] == [f"{CHAT}?q=a+b&x=%00%23y&z=%2F;w&empty="]
    assert "QUERY-SECRET" not in caplog.text


async def test_a_key_in_the_query_is_a_credential(gateway: Gateway,
                                                  upstream: FakeUpstream) -> None:
    reader, writer = await connect(gateway.client)
    body = json.dumps(openai_request()).encode()
    writer.write(head(f"{CHAT}?key={gateway.keys['bob']}", "Content-Type: application/json",
                      f"Content-Length: {len(body)}") + body)
    status, _, _ = await read_response(reader)
    writer.close()
    assert status == 200
    assert [r.raw_path for r in upstream.received] == [CHAT]


async def test_headers_that_choose_billing_or_carry_credentials_stay_behind(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = limiter_settings(tmp_path, upstream.base_url)
    openai = UpstreamSettings(upstream.base_url, api_key="sk-openai-SECRET",
                              headers={"OpenAI-Organization": "org-gateway"})
    settings = LimiterSettings(**{**settings.__dict__,
                                  "providers": {**settings.providers, "openai": openai}})
    gateway = await start(aiohttp_client, sqlite_url, settings)
    client_headers = {
        **bearer(gateway.keys["alice"]), "OpenAI-Organization": "org-caller",
        "OpenAI-Project": "proj-caller", "api-key": "azure-caller",
        "x-goog-api-key": "google-caller", "anthropic-admin-key": "admin-caller",
        "X-Custom": "kept",
    }
    response = await gateway.client.post(CHAT, json=openai_request(), headers=client_headers)
    assert response.status == 200
    (received,) = upstream.received
    sent = {name.lower(): value for name, value in received.headers.items()}
    assert sent["openai-organization"] == "org-gateway"
    assert sent["authorization"] == "Bearer sk-openai-SECRET"
    assert sent["x-custom"] == "kept"
    assert not {"openai-project", "api-key", "x-goog-api-key", "anthropic-admin-key"} & set(sent)


async def test_headers_the_upstreams_connection_header_names_and_cookies_are_not_relayed(
        gateway: Gateway, upstream: FakeUpstream) -> None:
    upstream.queue(Answer(headers={"Connection": "X-Internal-Route", "X-Internal-Route": "r7",
                                   "Set-Cookie": "__cf_bm=abc; path=/", "x-request-id": "req_1"}))
    response = await gateway.client.post(CHAT, json=openai_request(),
                                         headers=bearer(gateway.keys["alice"]))
    assert response.status == 200
    assert response.headers["x-request-id"] == "req_1"
    assert "X-Internal-Route" not in response.headers
    assert "Set-Cookie" not in response.headers


# Encoded bodies ------------------------------------------------------------------------------

ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "zstd": zstd.compress,
}


@pytest.mark.parametrize("coding", list(ENCODERS))
async def test_an_encoded_body_goes_upstream_as_the_plain_json_it_decodes_to(
        gateway: Gateway, upstream: FakeUpstream, sqlite_url: str, coding: str) -> None:
    plain = json.dumps(openai_request()).encode()
    encoded = ENCODERS[coding](plain)
    reader, writer = await connect(gateway.client)
    writer.write(post(gateway.keys["alice"], encoded, f"Content-Encoding: {coding}"))
    status, _, _ = await read_response(reader)
    writer.close()
    assert status == 200
    (received,) = upstream.received
    assert received.raw == plain
    assert "Content-Encoding" not in received.headers
    assert received.headers["Content-Length"] == str(len(plain))
    await settled(gateway.client.app)
    assert message_count(sqlite_url) == 1


@pytest.mark.parametrize("coding", list(ENCODERS))
async def test_a_compression_bomb_is_refused_once_it_decodes_past_max_body_bytes(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream,
        coding: str) -> None:
    gateway = await start(aiohttp_client, sqlite_url,
                          limiter_settings(tmp_path, upstream.base_url, max_body_bytes=MIB))
    bomb = ENCODERS[coding](b'{"model":"gpt-test","messages":"' + b" " * (64 * MIB) + b'"}')
    assert len(bomb) < MIB // 4
    reader, writer = await connect(gateway.client)
    writer.write(post(gateway.keys["alice"], bomb, f"Content-Encoding: {coding}"))
    status, _, body = await read_response(reader)
    writer.close()
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    assert not upstream.received


@pytest.mark.parametrize(("coding", "payload", "status", "code"), [
    ("br", b"\x0b\x02\x80{}\x03", 415, "unsupported_content_encoding"),
    ("gzip", b"not gzip at all", 400, "invalid_content_encoding"),
    ("zstd", b"not zstd at all", 400, "invalid_content_encoding"),
])
async def test_an_unknown_or_broken_encoding_is_refused(
        gateway: Gateway, upstream: FakeUpstream, coding: str, payload: bytes, status: int,
        code: str) -> None:
    reader, writer = await connect(gateway.client)
    writer.write(post(gateway.keys["alice"], payload, f"Content-Encoding: {coding}"))
    answered, _, body = await read_response(reader)
    writer.close()
    assert (answered, json.loads(body)["error"]["code"]) == (status, code)
    assert not upstream.received


# Slow clients --------------------------------------------------------------------------------

async def test_a_body_that_does_not_arrive_in_time_is_answered_408_and_counted(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    gateway = await start(aiohttp_client, sqlite_url, limiter_settings(
        tmp_path, upstream.base_url, client_body_timeout_seconds=0.5))
    reader, writer = await connect(gateway.client)
    body = json.dumps(openai_request()).encode()
    writer.write(post(gateway.keys["alice"], body)[:-10])  # ten bytes short, then silence
    status, _, answer = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert status == 408 and json.loads(answer)["error"]["code"] == "request_timeout"
    assert not upstream.received
    assert metric(gateway.registry, "agentmeter_limiter_client_timeouts_total",
                  phase="body") == 1


HEAD_TIMEOUTS = 'agentmeter_limiter_client_timeouts_total{phase="head"}'


async def scraped(gateway: Gateway) -> str:
    return await (await gateway.client.get("/metrics")).text()


async def test_a_head_that_does_not_arrive_in_time_is_answered_408_and_counted(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    gateway = await start(aiohttp_client, sqlite_url, limiter_settings(
        tmp_path, upstream.base_url, client_header_timeout_seconds=0.5))
    reader, writer = await connect(gateway.client)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n")
    for _ in range(3):  # one header line now and then, never the end of the head
        await asyncio.sleep(0.2)
        writer.write(b"X-Slow: 1\r\n")
    status, _, body = await asyncio.wait_for(read_response(reader), 5)
    assert (status, json.loads(body)["error"]["code"]) == (408, "request_timeout")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert 0.5 <= loop.time() - started < 2.0
    writer.close()
    assert not upstream.received
    assert f"{HEAD_TIMEOUTS} 1.0" in await scraped(gateway)


async def test_a_pipelined_head_that_stalls_is_answered_408_once_the_answer_before_it_ends(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    gateway = await start(aiohttp_client, sqlite_url, limiter_settings(
        tmp_path, upstream.base_url, client_header_timeout_seconds=0.5))
    upstream.queue(Answer(hang_seconds=0.6))
    reader, writer = await connect(gateway.client)
    writer.write(post(gateway.keys["alice"], json.dumps(openai_request()).encode()))
    await asyncio.sleep(0.2)  # the first request is being answered
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gate")  # and never the rest
    first, _, _ = await asyncio.wait_for(read_response(reader), 5)
    loop = asyncio.get_running_loop()
    answered = loop.time()
    second, _, body = await asyncio.wait_for(read_response(reader), 5)
    assert (first, second, json.loads(body)["error"]["code"]) == (200, 408, "request_timeout")
    assert loop.time() - answered >= 0.4  # the head's clock started when the answer ended
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert len(upstream.received) == 1
    assert f"{HEAD_TIMEOUTS} 1.0" in await scraped(gateway)


async def test_an_idle_keep_alive_connection_is_closed_without_an_answer_or_a_count(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    gateway = await start(aiohttp_client, sqlite_url, limiter_settings(
        tmp_path, upstream.base_url, client_header_timeout_seconds=0.5))
    reader, writer = await connect(gateway.client)
    writer.write(post(gateway.keys["alice"], json.dumps(openai_request()).encode()))
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers.get("connection") != "close"
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, not a byte sent
    assert 0.5 <= loop.time() - started < 2.0
    writer.close()
    assert f"{HEAD_TIMEOUTS} 0.0" in await scraped(gateway)


async def test_the_rest_of_a_body_answered_early_is_not_taken_for_a_head(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    gateway = await start(aiohttp_client, sqlite_url, limiter_settings(
        tmp_path, upstream.base_url, client_header_timeout_seconds=0.5))
    reader, writer = await connect(gateway.client)
    body = b" " * (MIB // 8)  # too large to be read before the key is known: 401 on the head
    writer.write(post("not-a-key", body)[:-len(body)])
    status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
    assert status == 401 and headers.get("connection") != "close"
    writer.write(body)  # the body comes after the answer, then nothing
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert f"{HEAD_TIMEOUTS} 0.0" in await scraped(gateway)


async def test_a_head_whose_first_byte_comes_late_gets_the_whole_timeout(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    """The head's clock starts at its first byte: idle for most of the bound, then a head sent
    over most of the bound again, is served."""
    gateway = await start(aiohttp_client, sqlite_url, limiter_settings(
        tmp_path, upstream.base_url, client_header_timeout_seconds=1.0))
    reader, writer = await connect(gateway.client)
    request = post(gateway.keys["alice"], json.dumps(openai_request()).encode())
    await asyncio.sleep(0.7)
    writer.write(request[:20])
    await asyncio.sleep(0.7)
    writer.write(request[20:])
    status, _, _ = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert status == 200
    assert len(upstream.received) == 1
    assert f"{HEAD_TIMEOUTS} 0.0" in await scraped(gateway)


class _BusyReader(asyncio.Protocol):
    """Runs `work` in an I/O callback, where the loop is between its poll for ready sockets
    and its timers."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work

    def data_received(self, data: bytes) -> None:
        self._work()


def test_a_head_that_arrived_in_time_is_served_though_the_busy_loop_had_not_read_it(
        sqlite_url: str, tmp_path: Path) -> None:
    """On uvloop (what the limiter runs on) the timers due run after the callbacks of a poll:
    a head sent while those keep the loop busy past the gateway's deadline is still unread
    when its timer fires, and must be waited for, not taken for an idle connection."""
    settings = limiter_settings(tmp_path, "http://127.0.0.1:9", client_header_timeout_seconds=0.5)

    async def scenario() -> int:
        runner = gateway_runner(gateway_app(sqlite_url, settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        nudge, busy = socket.socketpair()
        try:
            reader, writer = await asyncio.open_connection(*runner.addresses[0])

            def send_the_head_then_stay_busy() -> None:
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n")  # sent now
                time.sleep(0.5)  # past the gateway's deadline

            loop = asyncio.get_running_loop()
            await loop.connect_accepted_socket(
                lambda: _BusyReader(send_the_head_then_stay_busy), busy)
            await asyncio.sleep(0.3)
            nudge.send(b"!")
            status, _, _ = await asyncio.wait_for(read_response(reader), 5)
            writer.close()
            return status
        finally:
            nudge.close()
            await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(scenario()) == 200


# Bounded buffers -----------------------------------------------------------------------------

async def test_past_the_buffered_body_bound_new_requests_get_503_and_admitted_ones_finish(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    gateway = await start(aiohttp_client, sqlite_url, limiter_settings(
        tmp_path, upstream.base_url, max_buffered_body_bytes=150_000))
    big = openai_request()
    big["messages"][0]["content"] = "x" * 100_000
    body = json.dumps(big).encode()
    first_reader, first = await connect(gateway.client)
    first.write(post(gateway.keys["alice"], body)[:-1000])  # admitted, body still arriving
    await asyncio.sleep(0.3)
    assert metric(gateway.registry, "agentmeter_limiter_buffered_body_bytes") == len(body)
    second_reader, second = await connect(gateway.client)
    second.write(post(gateway.keys["bob"], body))
    status, headers, answer = await asyncio.wait_for(read_response(second_reader), 10)
    second.close()
    assert status == 503 and headers["retry-after"] == "1"
    assert json.loads(answer)["error"]["code"] == "overloaded"
    first.write(post(gateway.keys["alice"], body)[-1000:])
    status, _, _ = await read_response(first_reader)
    first.close()
    assert status == 200 and len(upstream.received) == 1
    assert metric(gateway.registry, "agentmeter_limiter_buffered_body_bytes") == 0


async def test_a_client_that_does_not_read_stops_its_pipelined_calls(
        gateway: Gateway, upstream: FakeUpstream) -> None:
    """Large complete answers to 48 pipelined requests: the gateway waits for the client to
    take each before it serves the next, so the provider is not called 48 times ahead."""
    upstream.default = Answer(text="word " * 60_000)  # ~300 KB per answer
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((gateway.client.server.host, gateway.client.server.port))
    sock.setblocking(False)
    # (the reader buffers at most twice its default 64 KiB limit before it stops reading)
    reader, writer = await asyncio.open_connection(sock=sock)
    one = post(gateway.keys["alice"], json.dumps(openai_request()).encode())
    writer.write(one * 48)
    await asyncio.sleep(1.5)  # not reading
    called_while_blocked = len(upstream.received)
    # The kernel's send buffer (up to 4 MiB here) holds about a dozen answers; no more start.
    assert called_while_blocked < 24
    answers = [await asyncio.wait_for(read_response(reader), 20) for _ in range(48)]
    writer.close()
    assert {status for status, _, _ in answers} == {200}
    assert len(upstream.received) == 48


async def test_connection_waits_are_observed_when_an_upstreams_connections_run_out(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = limiter_settings(tmp_path, upstream.base_url)
    openai = UpstreamSettings(upstream.base_url, api_key="sk", max_connections=1)
    settings = LimiterSettings(**{**settings.__dict__,
                                  "providers": {**settings.providers, "openai": openai}})
    gateway = await start(aiohttp_client, sqlite_url, settings)
    upstream.queue(Answer(hang_seconds=0.3), Answer())
    async with aiohttp.ClientSession() as session:
        calls = [session.post(gateway.client.make_url(CHAT), json=openai_request(),
                              headers=bearer(gateway.keys["alice"])) for _ in range(2)]
        answers = await asyncio.gather(*calls)
        assert [a.status for a in answers] == [200, 200]
        for answer in answers:
            answer.release()
    waited = metric(gateway.registry,
                    "agentmeter_limiter_upstream_connection_wait_seconds_count",
                    provider="openai")
    assert waited == 1
    assert metric(gateway.registry, "agentmeter_limiter_upstream_connection_wait_seconds_sum",
                  provider="openai") > 0.1


# Unbilled routes -----------------------------------------------------------------------------

async def test_token_counting_needs_a_key_but_no_room_under_the_limit_and_records_nothing(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url, policy(limits={"default_limit_usd": 0.000001}))
    app = gateway_app(sqlite_url, limiter_settings(tmp_path, upstream.base_url),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    count = "/v1/messages/count_tokens"
    body = anthropic_request()
    del body["max_tokens"], body["stream"]
    # alice spends past her (tiny) limit first: messages are refused, counting is not
    assert (await client.post("/v1/messages", json=anthropic_request(),
                              headers={"x-api-key": keys["alice"]})).status == 200
    await settled(app)
    assert (await client.post("/v1/messages", json=anthropic_request(),
                              headers={"x-api-key": keys["alice"]})).status == 409
    before = message_count(sqlite_url)
    answer = await client.post(count, json=body, headers={"x-api-key": keys["alice"]})
    assert answer.status == 200
    assert (await answer.json())["input_tokens"] > 0
    refused = await client.post(count, json=body, headers={"x-api-key": "am-unknown"})
    assert refused.status == 401
    await settled(app)
    assert message_count(sqlite_url) == before
    counted = [r for r in upstream.received if r.path == count]
    assert len(counted) == 1
    assert counted[0].headers["x-api-key"] == "sk-ant-SECRET"
    assert counted[0].headers["anthropic-version"]
