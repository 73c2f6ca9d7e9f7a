"""The request and response objects of the proxy's fast lane (`limiter.lane`).

A `LaneRequest` offers the part of `aiohttp.web.Request` that the proxy handler uses (`app`,
`path`, `query_string`, `headers`, `content_length`, `content.read`, `transport`, `method` and
per-request state by typed key), over a request whose head and body the lane has read whole.
Answers go straight to the connection: a complete answer (`send`) in one write, a relayed stream
(`LaneStream`) in HTTP/1.1 chunks, its head together with its first events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDictProxy

if TYPE_CHECKING:
    from limiter.lane import LaneProtocol

# Answers without a body, sent without Content-Length (as every 1xx; RFC 9110 section 8.6).
_BODILESS = frozenset({204, 304})


class _Body:
    """`request.content` of a lane request: the body, already read whole."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, n: int = -1) -> bytes:
        data = self._data
        if n < 0 or n >= len(data):
            self._data = b""
            return data
        self._data = data[n:]
        return data[:n]


class LaneRequest(dict[Any, Any]):
    """One request served by the lane (per-request state is kept in the dict itself)."""

    __slots__ = ("_connection", "answered", "app", "content", "content_length", "headers",
                 "path", "query_string", "started")

    method = "POST"

    def __init__(self, connection: LaneProtocol, app: web.Application, path: str, query: str,
                 headers: CIMultiDictProxy[str], body: bytes) -> None:
        super().__init__()
        self._connection = connection
        self.app = app
        self.path = path
        self.query_string = query
        self.headers = headers
        self.content_length = len(body)
        self.content = _Body(body)
        # The answer's head is out; the whole answer is out (a stream: its last chunk).
        self.started = False
        self.answered = False

    @property
    def transport(self) -> asyncio.Transport | None:
        """The client's connection; None once it is gone."""
        return self._connection.transport

    def send(self, response: web.Response) -> None:
        """Send a complete answer (status, headers, body) in one write."""
        status = response.status
        bodiless = status < 200 or status in _BODILESS
        body = b"" if bodiless else _body_of(response)
        headers = response.headers
        lines = head_lines(status, response.reason, headers)
        if not bodiless:
            if "Content-Type" not in headers:
                lines.append("Content-Type: application/octet-stream\r\n")
            lines.append(f"Content-Length: {len(body)}\r\n")
        self._connection.write_head(lines, body)
        self.started = self.answered = True


# Headers that frame the message on this connection: the lane writes its own.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                      "date", "server"})


def _body_of(response: web.Response) -> bytes:
    body = response.body
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"the lane sends bytes bodies only, not {type(body).__name__}")


def head_lines(status: int, reason: str | None, headers: Mapping[str, str]) -> list[str]:
    """The status line and the answer's own headers (framing headers are the lane's)."""
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    return [f"HTTP/1.1 {status} {reason}\r\n",
            *(f"{name}: {value}\r\n" for name, value in headers.items()
              if name.lower() not in _FRAMING)]


class LaneStream(web.StreamResponse):
    """A relayed stream on a lane connection: chunked, the head sent with the first chunk."""

    def __init__(self, *, status: int, headers: Any) -> None:
        super().__init__(status=status, headers=headers)
        self._lane: LaneRequest | None = None
        self._head_sent = False
        self._ended = False

    @property
    def prepared(self) -> bool:
        return self._lane is not None

    async def prepare(self, request: Any) -> None:  # type: ignore[override]
        self._lane = request

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await self._send(data, last=False)

    async def write_eof(self, data: bytes | bytearray | memoryview = b"") -> None:
        if not self._ended:
            await self._send(data, last=True)

    async def _send(self, data: bytes | bytearray | memoryview, last: bool) -> None:
        request = self._lane
        if request is None:
            raise RuntimeError("write() before prepare()")
        connection = request._connection
        parts: list[bytes | bytearray | memoryview] = []
        if not self._head_sent:
            lines = head_lines(self.status, self.reason, self.headers)
            lines.append("Transfer-Encoding: chunked\r\n")
            parts.append(connection.head_bytes(lines))
            self._head_sent = request.started = True
        if data:
            parts += (b"%x\r\n" % len(data), data, b"\r\n")
        if last:
            parts.append(b"0\r\n\r\n")
            self._ended = True
            request.answered = True
        await connection.write_parts(parts)


class DateHeader:
    """`Date: ...` for the current second (formatted once a second, as aiohttp does)."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = ""

    def line(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = f"Date: {formatdate(now, usegmt=True)}\r\n"
        return self._line
