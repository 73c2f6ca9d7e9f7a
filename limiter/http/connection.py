"""One client connection: aiohttp's protocol, with the head timeout the gateway promises.

aiohttp arms its keep-alive timer when a connection opens and again when an answer ends
(`keepalive_timeout`, which `limiter.http.server` sets to `client_header_timeout_seconds`); on
its own, a firing closes a connection that waits for a request silently, whether the client was
idle or half-way through a head. `GatewayConnection` keeps that timer and decides what a firing
means for a connection that waits for a request:

- no byte of a next head received: the connection is closed silently. This bounds idle
  keep-alive connections; it is not a timeout and is not counted;
- part of a head received: the client gets 408 (the limiter's JSON error, code
  `request_timeout`), the connection is closed, and the callback the server was given counts it
  (`client_timeouts{phase="head"}`). The answer goes out through aiohttp's own error path, the
  one that answers a malformed head with 400: a queued error message becomes a request with its
  own writer, `handle_error` builds the answer and `finish_response` writes it. Its status line
  says HTTP/1.0, as every answer aiohttp gives before a head is parsed (its 400 for a
  malformed head too): the request's version is not known to it yet.

When the head's clock starts: at its first byte, as nginx's `client_header_timeout` does on a
keep-alive connection, so a client that idles for most of the keep-alive bound and then sends a
head at an ordinary pace is served. A head whose first bytes came in while the previous request
was being answered starts its clock when that answer ends. A connection is thus held at
most twice the timeout (idle, then a slow head) before its 408.

Bytes the loop has not read yet: uvloop runs the timers that are due after the callbacks of
one poll and before the next poll, so under load a head that arrived in time, while those
callbacks ran, is still unread when its timer fires. When the timer fires on a connection whose
socket holds unread bytes (FIONREAD) and is being read, the verdict waits
`UNREAD_RECHECK_SECONDS`, by when the loop has polled again and read them.

Which bytes are a head's: aiohttp's parser does not say where a head starts, so bytes count as a
head's when every request parsed on the connection already has its whole body. The start of a
next head that arrives in the same read as the end of a body or of the previous head is not
seen; if that head then stalls, the connection is closed silently at the idle bound, not
answered 408.

This leans on aiohttp's internals (`_process_keepalive`, the queue of parsed messages, the
error message `_ErrInfo`), pinned in constraints.txt; the head-timeout tests in
tests/integration/test_limiter_edge.py fail if an upgrade moves them.
"""

from __future__ import annotations

import asyncio
import fcntl
import struct
import termios
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import _ErrInfo

from limiter.http.errors import RequestTimeout

# How long the verdict on a timed-out connection waits when its socket holds unread bytes.
UNREAD_RECHECK_SECONDS = 0.5


class HeadTimeout(Exception):
    """The error aiohttp's error path carries for a head that did not arrive in time."""


def unread_bytes(transport: asyncio.BaseTransport | None) -> int:
    """Bytes the kernel holds for the transport's socket that the loop has not read (0 when
    that cannot be told)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", answer)[0])


class GatewayConnection(web.RequestHandler):
    """aiohttp's HTTP/1.1 protocol for one connection; `head_timed_out` is called for each
    connection cut off because its head did not arrive in time."""

    __slots__ = ("_head_bytes", "_head_timed_out", "_last_body")

    def __init__(self, manager: web.Server, *, head_timed_out: Callable[[], None],
                 **options: Any) -> None:
        super().__init__(manager, **options)
        self._head_timed_out = head_timed_out
        # Bytes of a head not yet whole have been received.
        self._head_bytes = False
        # The body of the last request parsed (None before the first).
        self._last_body: StreamReader | None = None

    def _waiting_for_request(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def data_received(self, data: bytes) -> None:
        bodies_whole = self._last_body is None or self._last_body.is_eof()
        parsed = len(self._messages)
        super().data_received(data)
        if len(self._messages) > parsed:
            self._head_bytes = False
            self._last_body = self._messages[-1][1]
        elif data and bodies_whole and not self._head_bytes:
            self._head_bytes = True
            if self._waiting_for_request():
                self._start_clock(self._loop.time() + self.keepalive_timeout)

    def _start_clock(self, deadline: float) -> None:
        self._next_keepalive_close_time = deadline
        if self._keepalive_handle is None:
            self._keepalive_handle = self._loop.call_at(deadline, self._process_keepalive)

    def _process_keepalive(self) -> None:
        """aiohttp's keep-alive timer: reschedules itself until its deadline; then judges a
        connection that waits for a request (one handling a request is re-armed when its
        answer ends)."""
        self._keepalive_handle = None
        if self._force_close or not self._keepalive:
            return
        now = self._loop.time()
        if now < self._next_keepalive_close_time:
            self._start_clock(self._next_keepalive_close_time)
            return
        if not self._waiting_for_request():
            return
        transport = self.transport
        if transport is not None and transport.is_reading() and unread_bytes(transport):
            self._start_clock(now + UNREAD_RECHECK_SECONDS)
        elif self._head_bytes:
            self._answer_timeout()
        else:
            self.force_close()

    def _answer_timeout(self) -> None:
        self._head_timed_out()
        self._messages.append((_ErrInfo(status=408, exc=HeadTimeout(), message=""),
                               EMPTY_PAYLOAD))
        assert self._waiter is not None
        self._waiter.set_result(None)

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's answer to an error outside the app; a head timeout is answered like the
        limiter's other errors, without a logged traceback."""
        if not isinstance(exc, HeadTimeout):
            return super().handle_error(request, status, exc, message)
        error = RequestTimeout(
            f"The request head did not arrive within {self.keepalive_timeout:g} s "
            "(client_header_timeout_seconds).")
        answer = web.json_response(error.body(), status=error.status)
        answer.force_close()
        return answer


class GatewayServer(web.Server):
    """aiohttp's low-level server, whose connections are `GatewayConnection`s."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], *,
                 head_timed_out: Callable[[], None], **options: Any) -> None:
        super().__init__(handler, **options)
        self._head_timed_out = head_timed_out
        self._connection_options = {key: value for key, value in options.items()
                                    if key not in ("request_factory", "handler_cancellation",
                                                   "loop")}

    def __call__(self) -> GatewayConnection:
        return GatewayConnection(self, loop=self._loop, head_timed_out=self._head_timed_out,
                                 **self._connection_options)
