"""A small HTTP/1.1 client for the limiter's calls to the providers.

Every request through the gateway is one POST to a provider. aiohttp's `ClientSession` spent
about 0.24 ms of CPU on each on the 2-core benchmark machine (request and response objects,
tracing hooks, cookie and redirect handling), as much as the rest of the relay. This client
does only what a provider call needs: the request goes out in one write, the answer is parsed by
llhttp (httptools, the parser behind uvicorn) as bytes arrive, body bytes are handed over as
they come (a stream is never buffered whole; reading pauses past `HIGH_WATER` bytes unread),
gzip and deflate answers are decompressed, and keep-alive connections are pooled per origin.

Not supported, because provider APIs do not need them: redirects, cookies (a shared gateway must
not keep them anyway), proxies from the environment, HTTP/2 and `Expect: 100-continue`.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

from limiter.admission.deadline import wait_within

# Unread body bytes after which the connection stops reading until the relay catches up.
HIGH_WATER = 256 * 1024
# Idle keep-alive connections older than this are closed rather than reused (servers drop
# idle connections on their own schedule; reusing one they just dropped fails the request).
IDLE_SECONDS = 15.0
DEFAULT_LIMIT = 1000
# Bodies up to this size are sent in one piece with the request head.
COALESCE_BYTES = 64 * 1024


class UpstreamConnectionError(Exception):
    """Refused, reset, closed before the answer was complete, or not HTTP."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@functools.lru_cache(maxsize=256)
def split_url(url: str) -> tuple[Origin, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Origin(parts.scheme, parts.hostname, port), target


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request encoded before it is sent (the limiter builds it while the check is out)."""

    origin: Origin
    parts: list[bytes]


def _header_line(name: str, value: str) -> bytes:
    if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
        raise ValueError(f"header {name!r} holds a line break")
    return f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")


class UpstreamResponse:
    """An answer whose status and headers have arrived; the body is read as it comes."""

    def __init__(self, connection: _Connection, status: int, headers: CIMultiDict[str],
                 read_timeout: float | None) -> None:
        self.status = status
        self.headers = headers
        self._connection = connection
        self._read_timeout = read_timeout
        self._chunks: deque[bytes] = deque()
        self._unread = 0
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        encoding = headers.get("Content-Encoding", "").strip().lower()
        self._decoder = (zlib.decompressobj(wbits=47) if encoding in ("gzip", "x-gzip")
                         else zlib.decompressobj() if encoding == "deflate" else None)

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").partition(";")[0].strip().lower()

    async def readany(self) -> bytes:
        """The body bytes that arrived since the last call; b"" once the body is complete."""
        while not self._chunks and not self._complete and self._error is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await wait_within(self._waiter, self._read_timeout)
            finally:
                self._waiter = None
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._unread = 0
            self._connection.resume()
            return data
        if self._error is not None:
            raise self._error
        return b""

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Done with the answer: its connection is reused if it can be, closed otherwise."""
        self._connection.finished(reusable=self._complete and not self._chunks)

    def close(self) -> None:
        """Drop the connection now (the provider stops working on an abandoned answer)."""
        self._connection.finished(reusable=False)

    # Called by the connection as bytes arrive.
    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error:
                self._fail(UpstreamConnectionError("the provider sent a corrupt compressed body"))
                return
        if data:
            self._chunks.append(data)
            self._unread += len(data)
            if self._unread > HIGH_WATER:
                self._connection.pause()
            self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self._chunks.append(rest)
        self._complete = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._complete and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One connection to an origin, answering one request at a time."""

    def __init__(self, pool: UpstreamPool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._response: UpstreamResponse | None = None
        self._read_timeout: float | None = None
        self._paused = False
        self._keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but provide its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._broken(UpstreamConnectionError("the provider's answer is not valid HTTP"))

    def eof_received(self) -> bool:
        self._broken(UpstreamConnectionError("the provider closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._broken(UpstreamConnectionError("the provider closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        headers = CIMultiDict((name.decode("latin-1"), value.decode("latin-1"))
                              for name, value in self._raw_headers)
        self._raw_headers = []
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer; the real one follows
        self._response = UpstreamResponse(self, status, headers, self._read_timeout)
        if self._head is not None and not self._head.done():
            self._head.set_result(self._response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        if self._response is not None:
            self._response._finish()

    # used by the pool and the response
    async def exchange(self, request: list[bytes], read_timeout: float | None
                       ) -> UpstreamResponse:
        return await wait_within(self.begin(request, read_timeout), read_timeout)

    def begin(self, request: list[bytes], read_timeout: float | None
              ) -> asyncio.Future[UpstreamResponse]:
        """Write the request now; the future gets the answer's head."""
        if self.lost or self.transport is None:
            raise UpstreamConnectionError("the provider closed the connection")
        self._head = head = asyncio.get_running_loop().create_future()
        self._response = None
        self._keep_alive = False
        self._read_timeout = read_timeout
        self.transport.writelines(request)
        return head

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.lost:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.lost:
            self._paused = False
            self.transport.resume_reading()

    def finished(self, reusable: bool) -> None:
        if reusable and self._keep_alive and not self.lost and not self._paused:
            self.pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.lost = True
        self.pool.forget(self)

    def _broken(self, error: UpstreamConnectionError) -> None:
        self.lost = True
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        if self._response is not None and not self._response.complete:
            # A body without a declared length ends when the connection does.
            if self._response_ends_at_close():
                self._response._finish()
            else:
                self._response._fail(error)
        if self.transport is not None:
            self.transport.close()
        self.pool.forget(self)

    def _response_ends_at_close(self) -> bool:
        response = self._response
        assert response is not None
        headers = response.headers
        return ("Content-Length" not in headers
                and "chunked" not in headers.get("Transfer-Encoding", "").lower())


@dataclass(slots=True)
class Sent:
    """A request written on a connection, its answer not read yet (`UpstreamPool.begin`)."""

    connection: _Connection
    head: asyncio.Future[UpstreamResponse]
    read_timeout: float | None


class UpstreamPool:
    """Keep-alive connections to the providers, at most `limit` open at once."""

    def __init__(self, limit: int = DEFAULT_LIMIT,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._limit = limit
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._slots: asyncio.Semaphore | None = None

    @staticmethod
    def prepare(url: str, body: bytes, headers: Mapping[str, str]) -> PreparedRequest:
        """The request's bytes, ready to go out (raises ValueError for a header value with a
        line break or a URL that is not http(s))."""
        origin, target = split_url(url)
        head = [f"POST {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n".encode()]
        head += [_header_line(name, value) for name, value in headers.items()
                 if name.lower() not in ("host", "content-length", "accept-encoding")]
        head.append(f"Content-Length: {len(body)}\r\nAccept-Encoding: gzip, deflate\r\n\r\n"
                    .encode())
        head_bytes = b"".join(head)
        # A small request goes out in one write; a large body (agent contexts reach tens of MB)
        # is handed over as it is rather than copied behind the head.
        parts = [head_bytes + body] if len(body) <= COALESCE_BYTES else [head_bytes, body]
        return PreparedRequest(origin, parts)

    async def send(self, request: PreparedRequest, *, connect_timeout: float | None,
                   read_timeout: float | None) -> UpstreamResponse:
        """Send the request; return once the answer's status and headers have arrived.

        Raises UpstreamConnectionError (or OSError) when the provider cannot be reached or
        fails before answering, TimeoutError when connecting or waiting for the answer takes
        longer than its timeout.
        """
        origin = request.origin
        connection = self._reuse(origin) or await self._connect(origin, connect_timeout)
        try:
            return await connection.exchange(request.parts, read_timeout)
        except BaseException:
            connection.close()
            raise

    def begin(self, request: PreparedRequest, *, read_timeout: float | None) -> Sent | None:
        """The first half of `send` when a keep-alive connection is idle: the request is
        written before this returns (no loop turn before it leaves); `answer` is the second
        half. None when no connection is idle (use `send`)."""
        connection = self._reuse(request.origin)
        if connection is None:
            return None
        try:
            head = connection.begin(request.parts, read_timeout)
        except BaseException:
            connection.close()
            raise
        return Sent(connection, head, read_timeout)

    @staticmethod
    async def answer(sent: Sent) -> UpstreamResponse:
        """The head of the answer to a request `begin` wrote (errors as for `send`)."""
        try:
            return await wait_within(sent.head, sent.read_timeout)
        except BaseException:
            sent.connection.close()
            raise

    def _reuse(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if not connection.lost and now - connection.idle_since < IDLE_SECONDS:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._limit)
        await self._slots.acquire()
        connection = _Connection(self, origin)
        self._open.add(connection)  # from here on, forgetting it gives the slot back
        context = None
        if origin.scheme == "https":
            context = self._ssl = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().create_connection(
                    lambda: connection, origin.host, origin.port, ssl=context,
                    server_hostname=origin.host if context else None)
        except BaseException:
            connection.close()
            raise
        return connection

    def put_back(self, connection: _Connection) -> None:
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(connection.origin, []).append(connection)

    def forget(self, connection: _Connection) -> None:
        if connection not in self._open:
            return
        self._open.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)
        if self._slots is not None:
            self._slots.release()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
