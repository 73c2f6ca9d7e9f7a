"""The gateway at the HTTP level, served as `agentmeter limiter` serves it: keep-alive,
pipelining, framing, slow readers and shutdown. Raw bytes over a socket where the framing
matters."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ledger.tokens import TokenUsage
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.gateway import (
    GatewayTestServer,
    bearer,
    gateway_app,
    limiter_settings,
    metric,
    openai_request,
    query,
    seed_ledger,
    settled,
)
from tests.support.raw_http import chunked, connect, post, read_response

CHAT = "/v1/chat/completions"


@dataclass
class Gateway:
    client: Any
    keys: dict[str, str]
    registry: CollectorRegistry


@pytest.fixture
async def gateway(aiohttp_client: Any, sqlite_url: str, tmp_path: Path,
                  upstream: FakeUpstream) -> Gateway:
    """The limiter on a seeded SQLite ledger, served as the CLI serves it."""
    keys = seed_ledger(sqlite_url)
    registry = CollectorRegistry()
    app = gateway_app(sqlite_url, limiter_settings(tmp_path, upstream.base_url),
                      registry=registry)
    return Gateway(await aiohttp_client(app), keys, registry)


def message_count(url: str) -> int:
    return int(query(url, "SELECT count(*) AS n FROM messages")[0].n)


async def test_one_keep_alive_connection_serves_proxied_and_api_requests(
        gateway: Gateway, sqlite_url: str) -> None:
    keys, client = gateway.keys, gateway.client
    connector = aiohttp.TCPConnector(limit=1)  # one connection for all three requests
    async with aiohttp.ClientSession(str(client.make_url("")), connector=connector,
                                     headers=bearer(keys["alice"])) as session:
        async with session.post(CHAT, json=openai_request()) as first:
            assert first.status == 200
            assert "Hello" in (await first.json())["choices"][0]["message"]["content"]
        async with session.get("/v1/models") as models:
            assert models.status == 200
            assert "gpt-test" in {m["id"] for m in (await models.json())["data"]}
        async with session.post(CHAT, json=openai_request(stream=True)) as streamed:
            assert streamed.status == 200
            assert b"data: [DONE]" in await streamed.read()
    await settled(client.app)
    assert message_count(sqlite_url) == 2


async def test_pipelined_requests_are_answered_in_order(
        gateway: Gateway, sqlite_url: str) -> None:
    keys, client = gateway.keys, gateway.client
    reader, writer = await connect(client)
    ok = json.dumps(openai_request()).encode()
    unknown = json.dumps(openai_request(model="no-such-model")).encode()
    writer.write(post(keys["alice"], ok) + post(keys["alice"], unknown)
                 + post(keys["bob"], ok))
    answers = [await read_response(reader) for _ in range(3)]
    assert [status for status, _, _ in answers] == [200, 400, 200]
    assert json.loads(answers[1][2])["error"]["code"] == "model_not_allowed"
    assert answers[0][1]["content-type"].startswith("application/json")
    assert "date" in answers[0][1]
    # An API request pipelined behind a proxied one: answered in turn.
    writer.write(post(keys["alice"], ok) + b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    answers = [await read_response(reader) for _ in range(2)]
    writer.close()
    assert [status for status, _, _ in answers] == [200, 200]
    assert json.loads(answers[1][2]) == json.loads(
        await (await client.get("/healthz")).read())
    await settled(client.app)
    assert message_count(sqlite_url) == 3


async def test_a_request_that_arrives_in_pieces_is_served_once_it_is_whole(
        gateway: Gateway, upstream: FakeUpstream) -> None:
    keys, client = gateway.keys, gateway.client
    reader, writer = await connect(client)
    request = post(keys["alice"], json.dumps(openai_request()).encode())
    head_end = request.index(b"\r\n\r\n") + 4
    pieces = [request[:20], request[20:head_end], request[head_end:head_end + 10],
              request[head_end + 10:]]
    for piece in pieces[:-1]:
        writer.write(piece)
        await asyncio.sleep(0.05)
        assert not upstream.received  # nothing goes upstream before the body is whole
    writer.write(pieces[-1])
    status, _, answer = await read_response(reader)
    writer.close()
    assert status == 200 and json.loads(answer)["choices"]
    assert len(upstream.received) == 1


async def test_a_client_that_reads_slowly_gets_the_whole_stream(
        gateway: Gateway, sqlite_url: str, upstream: FakeUpstream) -> None:
    """Far more than the socket buffers hold: the gateway waits for the client to drain its
    writes (and so stops reading the provider) instead of failing or dropping events."""
    keys, client = gateway.keys, gateway.client
    words = [f"word{i}" for i in range(30_000)]
    upstream.queue(Answer(text=" ".join(words), usage=TokenUsage(input=7, output=len(words))))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((client.server.host, client.server.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(post(keys["alice"], json.dumps(openai_request(stream=True)).encode()))
    await asyncio.sleep(1.0)  # not reading: the gateway's writes back up
    status, _, body = await read_response(reader)
    writer.close()
    assert status == 200
    text = "".join(
        choice["delta"].get("content") or ""
        for line in body.decode().splitlines() if line.startswith("data: {")
        for choice in json.loads(line[6:])["choices"])
    assert text == " ".join(words)
    await settled(client.app)
    rows = query(sqlite_url, "SELECT output_tokens, partial FROM messages")
    assert [(r.output_tokens, bool(r.partial)) for r in rows] == [(len(words), False)]


async def test_connection_close_is_honoured(gateway: Gateway) -> None:
    keys, client = gateway.keys, gateway.client
    reader, writer = await connect(client)
    writer.write(post(keys["alice"], json.dumps(openai_request()).encode(),
                      "Connection: close"))
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway
    writer.close()


@pytest.mark.parametrize("case", ["chunked", "http/1.0", "large", "encoded-path"])
async def test_every_framing_of_a_request_is_served(
        case: str, gateway: Gateway, sqlite_url: str) -> None:
    keys, client = gateway.keys, gateway.client
    body = json.dumps(openai_request()).encode()
    if case == "chunked":
        head = post(keys["alice"], b"").replace(b"Content-Length: 0",
                                                b"Transfer-Encoding: chunked")
        request = head + chunked(body)
    elif case == "http/1.0":
        request = post(keys["alice"], body, version="HTTP/1.0")
    elif case == "large":  # a long prompt, as agents send each turn
        big = openai_request()
        big["messages"][0]["content"] = "word " * (1024 * 1024 // 4)
        request = post(keys["alice"], json.dumps(big).encode())
    else:
        request = post(keys["alice"], body, path="/v1/chat%2Fcompletions")
    reader, writer = await connect(client)
    writer.write(request)
    status, _, answer = await read_response(reader)
    writer.close()
    if case == "encoded-path":
        assert status == 404 and json.loads(answer)["error"]["code"] == "not_found"
        return
    assert status == 200 and json.loads(answer)["choices"]
    await settled(client.app)
    assert message_count(sqlite_url) == 1


async def test_expect_continue_is_answered(gateway: Gateway) -> None:
    keys, client = gateway.keys, gateway.client
    body = json.dumps(openai_request()).encode()
    reader, writer = await connect(client)
    writer.write(post(keys["alice"], b"", "Expect: 100-continue").replace(
        b"Content-Length: 0", b"Content-Length: %d" % len(body)))
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(body)
    status, _, _ = await read_response(reader)
    writer.close()
    assert status == 200


async def test_a_malformed_head_gets_400_and_costs_nothing(
        gateway: Gateway, sqlite_url: str, upstream: FakeUpstream) -> None:
    keys, client = gateway.keys, gateway.client
    reader, writer = await connect(client)
    writer.write(post(keys["alice"], b"{}", "Bad Header Line"))
    status, _, _ = await read_response(reader)
    writer.close()
    assert status == 400
    assert not upstream.received and message_count(sqlite_url) == 0


async def test_proxied_requests_are_counted_by_route_code_and_provider(gateway: Gateway) -> None:
    keys, client, registry = gateway.keys, gateway.client, gateway.registry
    assert (await client.post(CHAT, json=openai_request(),
                              headers=bearer(keys["alice"]))).status == 200
    assert (await client.post(CHAT, json=openai_request())).status == 401
    assert metric(registry, "agentmeter_limiter_requests_total", route=CHAT, code="200",
                  provider="openai") == 1
    assert metric(registry, "agentmeter_limiter_requests_total", route=CHAT, code="401",
                  provider="openai") == 1


async def test_shutdown_lets_a_stream_in_flight_finish_and_records_it(
        sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed_ledger(sqlite_url)
    answer = Answer(text="one two three four", pause_after=2)
    upstream.queue(answer)
    app = gateway_app(sqlite_url, limiter_settings(tmp_path, upstream.base_url),
                      registry=CollectorRegistry())
    server = GatewayTestServer(app)
    await server.start_server()
    idle_reader, idle_writer = await asyncio.open_connection(server.host, server.port)
    async with aiohttp.ClientSession() as session:
        response = await session.post(server.make_url(CHAT), headers=bearer(keys["alice"]),
                                      json=openai_request(stream=True))
        assert response.status == 200
        await asyncio.wait_for(response.content.readany(), 5)
        closing = asyncio.create_task(server.close())
        await asyncio.sleep(0.3)
        assert not closing.done()  # waiting for the stream
        answer.resume.set()
        rest = await asyncio.wait_for(response.read(), 10)
        assert b"data: [DONE]" in rest
        await asyncio.wait_for(closing, 10)
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # idle: closed at once
    idle_writer.close()
    rows = query(sqlite_url, "SELECT partial FROM messages")
    assert [bool(r.partial) for r in rows] == [False]
