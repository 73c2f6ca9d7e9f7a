"""The proxy's fast lane: the two provider routes served without aiohttp's request machinery.

aiohttp's server costs about 0.2 ms of CPU per request on the 2-vCPU benchmark machine, a fifth
of what the limiter adds to a call. Each connection therefore starts on the lane: a plain
HTTP/1.1 request `POST /v1/chat/completions` or `POST /v1/messages` with a Content-Length body
of up to `LANE_BODY_BYTES` is read whole, checked by llhttp (httptools) and handed to the same
`proxy` handler as a `LaneRequest`; errors get the same JSON answers and the request the same
metrics as on aiohttp's side. Requests are served one at a time per connection, in order
(pipelined ones wait in the buffer), on keep-alive connections.

Anything else — another route or method, HTTP/1.0, `Transfer-Encoding`, `Expect`, `Upgrade`,
a larger body, a head over `MAX_HEAD_BYTES` or one llhttp refuses — hands the connection over to
aiohttp with every byte not yet served, and aiohttp serves it from there on (its limits, its
errors, its routes), so the lane never answers what it does not fully understand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import cast

import httptools
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from limiter.http.middleware import CLIENT_CLOSED, error_answer, observe_request
from limiter.lane_request import DateHeader, LaneRequest
from limiter.relay.dialects import PROVIDERS
from limiter.relay.proxy import proxy

log = logging.getLogger("agentmeter.limiter")

LANE_PATHS = frozenset(provider.path.encode() for provider in PROVIDERS.values())
# Bodies up to this size are served on the lane (read whole first); larger ones go to aiohttp,
# which streams them within `max_body_bytes`.
LANE_BODY_BYTES = 1024 * 1024
# A request head larger than this is aiohttp's to refuse (its line and field limits are 8190).
MAX_HEAD_BYTES = 32 * 1024
# An idle keep-alive connection is closed after this long (aiohttp's default).
KEEPALIVE_SECONDS = 3630.0
_HEAD_END = b"\r\n\r\n"
_LANE_PREFIX = b"POST /v1/"


class _Head:
    """httptools callbacks collecting a request head."""

    __slots__ = ("headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: CIMultiDict[str] = CIMultiDict()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # decoded as aiohttp decodes them, so the handler sees the same strings
        self.headers.add(name.decode("utf-8", "surrogateescape"),
                         value.decode("utf-8", "surrogateescape"))


class Parsed:
    """A request head the lane can serve."""

    __slots__ = ("headers", "keep_alive", "length", "path", "query")

    def __init__(self, path: bytes, query: str, headers: CIMultiDict[str], length: int,
                 keep_alive: bool) -> None:
        self.path = path
        self.query = query
        self.headers = headers
        self.length = length
        self.keep_alive = keep_alive


def parse_head(head: bytes) -> Parsed | None:
    """The head (request line and headers, blank line included) if the lane serves it."""
    if not head.startswith(_LANE_PREFIX):
        return None
    collected = _Head()
    parser = httptools.HttpRequestParser(collected)
    try:
        parser.feed_data(head)
    except httptools.HttpParserError:  # malformed (or an upgrade): aiohttp answers it
        return None
    if parser.get_http_version() != "1.1":
        return None
    path, _, query = collected.url.partition(b"?")
    if path not in LANE_PATHS:
        return None
    headers = collected.headers
    if ("Transfer-Encoding" in headers or "Expect" in headers or "Upgrade" in headers
            or len(headers.getall("Content-Length", ())) != 1):
        return None
    length = headers["Content-Length"]
    if not length.isdigit() or int(length) > LANE_BODY_BYTES:
        return None
    decoded_query = URL(collected.url.decode("latin-1"), encoded=True).query_string \
        if query else ""
    return Parsed(path, decoded_query, headers, int(length), parser.should_keep_alive())


class LaneProtocol(asyncio.Protocol):
    """One client connection, served on the lane until something hands it to aiohttp."""

    def __init__(self, server: LaneServer) -> None:
        self._server = server
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._closing = False
        # The head of the request at the start of the buffer, parsed while its body arrives.
        self._head: tuple[int, Parsed] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._server.lanes.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._server.lanes.discard(self)
        self._disarm_idle()
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_exception(ConnectionResetError("the client closed the connection"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self.task is None:
            self._next()
        elif len(self._buffer) > LANE_BODY_BYTES + MAX_HEAD_BYTES and self.transport:
            self.transport.pause_reading()  # a pipelining client waits for its turn
            self._reading_paused = True

    def eof_received(self) -> bool:
        # The client will send no more: finish the request in hand, then close.
        self._closing = True
        return self.task is not None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- writing answers (used by LaneRequest and LaneStream)

    def head_bytes(self, lines: list[str]) -> bytes:
        if self._closing or self._server.closing:
            lines.append("Connection: close\r\n")
        lines.append(self._server.date.line())
        lines.append("\r\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    def write_head(self, lines: list[str], body: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        head = self.head_bytes(lines)
        if body:
            transport.writelines((head, body))
        else:
            transport.write(head)

    async def write_parts(self, parts: list[bytes | bytearray | memoryview]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        transport.writelines(parts)
        if self._writing_paused:
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    # -- serving

    def _next(self) -> None:
        """Serve the next complete request in the buffer, or hand the connection over."""
        transport = self.transport
        buffer = self._buffer
        if transport is None or not buffer or self._closing_now():
            return
        if self._head is None:
            end = buffer.find(_HEAD_END, 0, MAX_HEAD_BYTES)
            if end < 0:
                if len(buffer) >= MAX_HEAD_BYTES or not buffer.startswith(
                        _LANE_PREFIX[:len(buffer)]):
                    self._hand_over()
                return
            head_end = end + len(_HEAD_END)
            parsed = parse_head(bytes(buffer[:head_end]))
            if parsed is None:
                self._hand_over()
                return
            self._head = head_end, parsed
        head_end, parsed = self._head
        total = head_end + parsed.length
        if len(buffer) < total:
            return  # the rest of the body is on its way
        self._head = None
        body = bytes(buffer[head_end:total])
        del buffer[:total]
        self._disarm_idle()
        if not parsed.keep_alive:
            self._closing = True
        request = LaneRequest(self, self._server.app, parsed.path.decode(), parsed.query,
                              CIMultiDictProxy(parsed.headers), body)
        self.task = asyncio.get_running_loop().create_task(self._serve(request))

    def _closing_now(self) -> bool:
        if self._closing or self._server.closing:
            self.close()
            return True
        return False

    async def _serve(self, request: LaneRequest) -> None:
        started = time.perf_counter()
        status = 500
        try:
            try:
                response = await proxy(cast(web.Request, request))
            except Exception as exc:
                if request.started:
                    raise  # too late for an error answer: the connection is closed below
                response = error_answer(cast(web.Request, request), exc)
                with contextlib.suppress(ConnectionError):
                    request.send(response)
            status = response.status
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        except Exception:
            log.exception("unexpected error while answering POST %s", request.path)
        finally:
            observe_request(cast(web.Request, request), request.path, status, started)
            self.task = None
            self._after(request)

    def _after(self, request: LaneRequest) -> None:
        """The request is done: next one, wait for one, or close."""
        transport = self.transport
        if transport is None:
            return
        if not request.answered:  # an answer cut short cannot be followed on this connection
            self.close()
            return
        if self._closing_now():
            return
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._arm_idle()
        self._next()

    def _hand_over(self) -> None:
        """aiohttp serves this connection from here on, starting with the buffered bytes."""
        transport = self.transport
        assert transport is not None
        self._disarm_idle()
        self._server.lanes.discard(self)
        handler = self._server.fallback()
        transport.set_protocol(handler)
        self.transport = None
        handler.connection_made(transport)
        if self._reading_paused:
            transport.resume_reading()
        data, self._buffer = bytes(self._buffer), bytearray()
        handler.data_received(data)

    def _arm_idle(self) -> None:
        self._disarm_idle()
        self._idle = asyncio.get_running_loop().call_later(KEEPALIVE_SECONDS, self.close)

    def _disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def idle(self) -> bool:
        return self.task is None


class LaneServer:
    """The protocol factory a site listens with: lane connections, aiohttp's as the fallback.

    Shutdown stops taking requests on idle connections, gives the ones in flight the
    runner's shutdown timeout, then cancels what is left (the proxy records their usage all
    the same), and shuts aiohttp's own connections down as aiohttp does.
    """

    def __init__(self, app: web.Application, fallback: web.Server) -> None:
        self.app = app
        self.fallback = fallback
        self.lanes: set[LaneProtocol] = set()
        self.closing = False
        self.date = DateHeader()

    def __call__(self) -> LaneProtocol:
        return LaneProtocol(self)

    def pre_shutdown(self) -> None:
        self.closing = True
        for lane in list(self.lanes):
            if lane.idle:
                lane.close()
        self.fallback.pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        tasks = [lane.task for lane in self.lanes if lane.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for lane in list(self.lanes):
            lane.close()
        await self.fallback.shutdown(timeout)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose sites serve the provider routes on the lane first."""

    async def _make_server(self) -> web.Server:
        fallback = await super()._make_server()
        return cast(web.Server, LaneServer(self.app, fallback))
