"""The provider client (limiter.upstream_client) against real servers on loopback, on both the
default event loop and uvloop (what `agentmeter limiter` runs on)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web

from limiter.upstream_client import UpstreamConnectionError, UpstreamPool, split_url
from tests.support.requirements import require_binary

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


Scenario = Callable[[], Awaitable[None]]
Runner = Callable[[Scenario], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a scenario on a fresh loop of each kind (the tests here are sync on purpose)."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(scenario: Scenario) -> None:
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(asyncio.wait_for(scenario(), 30))

    return runner


class Server:
    """An aiohttp server that counts the connections it accepted."""

    def __init__(self) -> None:
        self.peers: set[Any] = set()
        self.release = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/json", self.json)
        app.router.add_post("/stream", self.stream)
        app.router.add_post("/gzip", self.gzip)
        app.router.add_post("/big", self.big)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def _seen(self, request: web.Request) -> None:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))

    async def json(self, request: web.Request) -> web.Response:
        self._seen(request)
        body = await request.read()
        return web.json_response({"echo": json.loads(body), "query": request.query_string,
                                  "host": request.host,
                                  "headers": {k: v for k, v in request.headers.items()}})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await self.release.wait()
        await response.write(b"data: second\n\n")
        await response.write_eof()
        return response

    async def gzip(self, request: web.Request) -> web.Response:
        self._seen(request)
        assert "gzip" in request.headers.get("Accept-Encoding", "")
        return web.Response(body=gzip.compress(b'{"ok": true}' * 1000),
                            headers={"Content-Encoding": "gzip",
                                     "Content-Type": "application/json"})

    async def big(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(body=bytes(range(256)) * 8192)  # 2 MiB


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Server]:
    s = Server()
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def raw_server(handler: Handler) -> tuple[asyncio.Server, str]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    return srv, f"http://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


async def post(pool: UpstreamPool, url: str, body: bytes = b"{}",
               headers: dict[str, str] | None = None, timeout: float = 5.0) -> Any:
    request = pool.prepare(url, body, headers or {"Content-Type": "application/json"})
    return await pool.send(request, connect_timeout=timeout, read_timeout=timeout)


def test_answers_come_back_and_keep_alive_connections_are_reused(run: Runner) -> None:
    async def scenario() -> None:
        async with serving() as server:
            pool = UpstreamPool()
            for n in range(3):
                response = await post(pool, f"{server.url}/json?n={n}",
                                      json.dumps({"n": n}).encode(),
                                      {"Content-Type": "application/json", "X-Trace": "t"})
                assert response.status == 200
                answer = json.loads(await response.read())
                response.release()
                assert answer["echo"] == {"n": n} and answer["query"] == f"n={n}"
                assert answer["headers"]["X-Trace"] == "t"
                assert answer["host"] == server.url.removeprefix("http://")
            assert len(server.peers) == 1
            pool.close()

    run(scenario)


def test_a_stream_is_handed_over_as_it_arrives(run: Runner) -> None:
    async def scenario() -> None:
        async with serving() as server:
            pool = UpstreamPool()
            response = await post(pool, f"{server.url}/stream")
            assert response.content_type == "text/event-stream"
            assert await response.readany() == b"data: first\n\n"  # while the server still waits
            server.release.set()
            assert await response.read() == b"data: second\n\n"
            response.release()
            pool.close()

    run(scenario)


def test_gzip_answers_are_decompressed(run: Runner) -> None:
    async def scenario() -> None:
        async with serving() as server:
            pool = UpstreamPool()
            response = await post(pool, f"{server.url}/gzip")
            assert await response.read() == b'{"ok": true}' * 1000
            response.release()
            pool.close()

    run(scenario)


def test_an_unread_large_answer_pauses_reading_and_arrives_whole(run: Runner) -> None:
    async def scenario() -> None:
        async with serving() as server:
            pool = UpstreamPool()
            response = await post(pool, f"{server.url}/big")
            await asyncio.sleep(0.2)  # the server has sent all it can; the client stopped reading
            assert await response.read() == bytes(range(256)) * 8192
            response.release()
            pool.close()

    run(scenario)


def test_a_body_without_length_ends_with_the_connection(run: Runner) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                         b"all of it")
            await writer.drain()
            writer.close()

        srv, url = await raw_server(handler)
        pool = UpstreamPool()
        response = await post(pool, url)
        assert await response.read() == b"all of it"
        response.release()
        assert pool.open_connections == 0
        srv.close()
        await srv.wait_closed()

    run(scenario)


def test_a_connection_the_server_closed_is_not_reused(run: Runner) -> None:
    async def scenario() -> None:
        connections = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await read_request(reader)
            # Claims keep-alive, then hangs up (what a server's idle timeout does).
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()

        srv, url = await raw_server(handler)
        pool = UpstreamPool()
        for _ in range(2):
            response = await post(pool, url)
            assert await response.read() == b"ok"
            response.release()
            await asyncio.sleep(0.05)  # the close reaches the client
        assert connections == 2
        srv.close()

    run(scenario)


def test_refused_cut_malformed_and_silent_servers_fail_clearly(run: Runner) -> None:
    async def scenario() -> None:
        pool = UpstreamPool()
        srv, url = await raw_server(lambda r, w: asyncio.sleep(0))
        srv.close()
        await srv.wait_closed()
        with pytest.raises(OSError):
            await post(pool, url)  # refused

        async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
            await writer.drain()
            writer.close()

        srv, url = await raw_server(cut)
        response = await post(pool, url)
        assert await response.readany() == b"only part"
        with pytest.raises(UpstreamConnectionError):
            await response.readany()
        response.close()
        srv.close()

        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"SMTP ready\r\n\r\n")
            await writer.drain()
            writer.close()

        srv, url = await raw_server(garbage)
        with pytest.raises(UpstreamConnectionError):
            await post(pool, url)
        srv.close()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await reader.read()  # until the client gives up and closes
            writer.close()

        srv, url = await raw_server(silent)
        with pytest.raises(TimeoutError):
            await post(pool, url, timeout=0.2)
        assert pool.open_connections == 0
        srv.close()
        await srv.wait_closed()

    run(scenario)


def test_connection_limit_makes_callers_wait(run: Runner) -> None:
    async def scenario() -> None:
        async with serving() as server:
            pool = UpstreamPool(limit=1)
            first = await post(pool, f"{server.url}/stream")
            second = asyncio.ensure_future(post(pool, f"{server.url}/json"))
            await asyncio.sleep(0.1)
            assert not second.done()  # the one connection is busy with the stream
            server.release.set()
            await first.read()
            first.close()  # not reused: the second caller gets a fresh connection
            response = await asyncio.wait_for(second, 5)
            assert response.status == 200
            await response.read()
            response.release()
            pool.close()

    run(scenario)


def test_header_injection_is_refused_before_anything_is_sent(run: Runner) -> None:
    async def scenario() -> None:
        async with serving() as server:
            pool = UpstreamPool()
            with pytest.raises(ValueError, match="line break"):
                await post(pool, f"{server.url}/json", headers={"X-Bad": "a\r\nHost: evil"})
            assert server.peers == set()
            pool.close()

    run(scenario)


def test_split_url() -> None:
    origin, target = split_url("https://api.example.com/v1/messages?beta=true")
    assert (origin.scheme, origin.host, origin.port, target) == \
        ("https", "api.example.com", 443, "/v1/messages?beta=true")
    assert origin.host_header == "api.example.com"
    origin, _ = split_url("http://[::1]:8080/v1")
    assert origin.host_header == "[::1]:8080"
    with pytest.raises(ValueError):
        split_url("ftp://example.com/")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (providers are only ever called over TLS)."""
    openssl = require_binary("openssl")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return key, cert


def test_https_answers_with_a_verified_certificate_and_refuses_an_unknown_one(
        run: Runner, certificate: tuple[Path, Path]) -> None:
    key, cert = certificate

    async def scenario() -> None:
        served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        served.load_cert_chain(cert, key)

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while not reader.at_eof():
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
                await writer.drain()
            writer.close()

        srv = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=served)
        url = f"https://localhost:{srv.sockets[0].getsockname()[1]}/v1/messages"
        trusting = ssl.create_default_context(cafile=str(cert))
        pool = UpstreamPool(ssl_context=trusting)
        for _ in range(2):
            response = await post(pool, url)
            assert (response.status, await response.read()) == (200, b"secret")
            response.release()
        assert pool.open_connections == 1  # the TLS connection was kept and reused
        pool.close()

        default = UpstreamPool()  # system trust store: the self-signed server is refused
        with pytest.raises(ssl.SSLCertVerificationError):
            await post(default, url)
        assert default.open_connections == 0
        srv.close()
        await srv.wait_closed()

    run(scenario)


def test_a_large_body_arrives_intact(run: Runner) -> None:
    async def scenario() -> None:
        async with serving() as server:
            pool = UpstreamPool()
            payload = {"messages": ["x" * 1000 + str(n) for n in range(3000)]}  # ~3 MB
            body = bytearray(json.dumps(payload).encode())  # what the proxy hands over
            response = await post(pool, f"{server.url}/json", body)
            assert response.status == 200
            assert json.loads(await response.read())["echo"] == payload
            response.release()
            pool.close()

    run(scenario)


def test_begin_writes_on_an_idle_connection_before_it_returns(run: Runner) -> None:
    """`begin` is `send` without the loop turn before the request leaves (the gateway calls
    it before handing the exchange to a task): the server, in a thread of its own, has the
    request while the event loop has not run since."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/json"
    arrived = [threading.Event(), threading.Event()]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            for event in arrived:
                data = b""
                while not data.endswith(b"{}"):
                    data += conn.recv(65536)
                event.set()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def scenario() -> None:
        pool = UpstreamPool()
        request = pool.prepare(url, b"{}", {"Content-Type": "application/json"})
        assert pool.begin(request, read_timeout=5) is None  # nothing idle: `send` connects
        response = await post(pool, url)
        assert await response.read() == b"ok"
        response.release()

        sent = pool.begin(pool.prepare(url, b"{}", {}), read_timeout=5)
        assert sent is not None
        assert arrived[1].wait(5)  # blocking: no loop turn since `begin`
        response = await pool.answer(sent)
        assert (response.status, await response.read()) == (200, b"ok")
        response.release()
        pool.close()

    try:
        run(scenario)
    finally:
        thread.join(5)
        listener.close()
