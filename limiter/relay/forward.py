"""Sending a request on to the provider and relaying its answer, reading the usage on the way.

Calls go out on the upstream's aiohttp `ClientSession`. Non-streamed answers are read whole and
handed back for the caller to send (aiohttp writes them with back-pressure). Streams are relayed
chunk by chunk as the upstream delivers them (`readany` then `await response.write`, which waits
for the client to drain: a client that does not read stops the reading of the provider); each
chunk is fed to the dialect's incremental usage parser, so the usage of the chunk that ends the
answer is handed on before the client has it; nothing is buffered or re-encoded. A client that
goes away stops the stream at once, wherever it waits: connecting, waiting for the first token or
between events: `limiter.relay.client_watch` cancels the relaying task when it finds the client's
connection closed, and the relay takes that cancellation back; a failed write to the client is
noticed immediately.
(Non-streamed calls are not watched: their answer comes whole, and the provider has usually done
the work by the time a client could notice.)

Which answers to a streamed call are relayed as streams, and with which parser, is the
dialect's `answer_parser`: SSE everywhere, and for Gemini also the JSON array it streams without
`?alt=sse`; anything else (an error body) is read whole.

What is known is always returned: a stream cut by either side is flagged `partial`, with the
provider's exact counts where it already sent them and the estimate of
`limiter.relay.dialects.base.settle_usage` for the rest (`estimated`). An upstream that drops a
stream midway has its client connection closed too, so the client sees a broken stream and not
a seemingly finished answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from ledger.pricing import STANDARD, Billing
from ledger.tokens import TokenUsage
from limiter.http.errors import CLIENT_CLOSED_REQUEST, UpstreamError, UpstreamTimeout
from limiter.relay.client_watch import ClientWatch
from limiter.relay.dialects.base import Dialect, settle_usage
from limiter.relay.headers import relayable_headers
from limiter.relay.sse import StreamUsageParser, load_json
from limiter.relay.upstreams import Upstream

# The provider could not be reached, or broke off before its answer was complete.
UPSTREAM_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, OSError)
STREAM_ERRORS: tuple[type[Exception], ...] = (TimeoutError, *UPSTREAM_ERRORS)
# Bodies larger than this are sent in pieces of BODY_PIECE_BYTES (see UpstreamCall.send).
LARGE_BODY_BYTES = 1024 * 1024
BODY_PIECE_BYTES = 256 * 1024


@dataclass(slots=True)
class ForwardResult:
    # Already written and finished for relayed streams; a web.Response ready to return otherwise.
    response: web.StreamResponse
    status: int
    usage: TokenUsage | None
    partial: bool
    estimated: bool
    upstream_seconds: float
    first_byte_seconds: float | None
    # The client went away before the answer was complete (the upstream was closed at once).
    client_gone: bool = False
    # The provider's error object when the answer reported one (an error body or stream event).
    error: dict[str, Any] | None = None
    # The id the provider gave a successful answer (see `Dialect.answer_id`).
    answer_id: str | None = None
    # What the answer reported beyond tokens: its service tier, speed and fees.
    billing: Billing = STANDARD


async def _pieces(payload: bytes) -> AsyncIterator[memoryview]:
    view = memoryview(payload)
    for start in range(0, len(view), BODY_PIECE_BYTES):
        yield view[start:start + BODY_PIECE_BYTES]


@dataclass(slots=True)
class UpstreamCall:
    """Everything one provider call needs, ready to go out."""

    upstream: Upstream
    method: str
    url: URL
    headers: Mapping[str, str]
    # Dropped once sent: a large request body is not held while a long answer streams.
    payload: bytes | None
    stream: bool
    # The size of the client's body (the basis of the input estimate).
    request_bytes: int
    dialect: Dialect
    on_first_byte: Callable[[], None] | None = None
    # Called once the payload is handed to aiohttp and dropped here (the body's memory is
    # then no longer the limiter's to account for).
    on_sent: Callable[[], None] | None = None

    async def send(self) -> aiohttp.ClientResponse:
        payload, self.payload = self.payload, None
        data: bytes | AsyncIterator[memoryview] | None = payload
        headers = self.headers
        if payload is not None and len(payload) > LARGE_BODY_BYTES:
            # aiohttp writes bytes in one go and warns past 1 MiB; a large agent context goes
            # out in pieces instead, each written as the upstream connection drains.
            data = _pieces(payload)
            headers = {**headers, "Content-Length": str(len(payload))}
        try:
            return await self.upstream.session.request(
                self.method, self.url, data=data, headers=headers)
        except TimeoutError as exc:
            raise self.timeout_error() from exc
        except UPSTREAM_ERRORS as exc:
            raise self.unreachable_error() from exc
        finally:
            del payload
            if self.on_sent is not None:
                self.on_sent()

    def timeout_error(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"The {self.upstream.name} provider did not answer in time.")

    def unreachable_error(self) -> UpstreamError:
        return UpstreamError(f"The {self.upstream.name} provider could not be reached.")

    async def read_whole(self, upstream: aiohttp.ClientResponse, started: float,
                         first_byte: float) -> ForwardResult:
        """A complete (non-SSE) answer: success or error body, usage read from its JSON."""
        try:
            data = await upstream.read()
        except TimeoutError as exc:
            raise self.timeout_error() from exc
        except UPSTREAM_ERRORS as exc:
            raise self.unreachable_error() from exc
        finally:
            upstream.release()
        elapsed = asyncio.get_running_loop().time() - started
        parsed = load_json(data) if data else None
        usage = self.dialect.usage_from_body(parsed)
        estimated = False
        if usage is None and 200 <= upstream.status < 300:
            # A success without counts: estimate rather than record a free answer.
            usage, estimated = settle_usage(None, output_final=False,
                                            request_bytes=self.request_bytes,
                                            output_chars=len(data))
        error = parsed.get("error") if isinstance(parsed, dict) else None
        response = web.Response(body=data, status=upstream.status,
                                headers=relayable_headers(upstream.headers))
        return ForwardResult(
            response=response, status=upstream.status, usage=usage, partial=False,
            estimated=estimated, upstream_seconds=elapsed, first_byte_seconds=first_byte,
            error=error if isinstance(error, dict) else None,
            answer_id=self.dialect.answer_id(parsed) if upstream.status < 400 else None,
            billing=self.dialect.billing_from_body(parsed))


async def relay(call: UpstreamCall, request: web.Request,
                before_end: Callable[[ForwardResult], None] | None = None) -> ForwardResult:
    """Send the call and relay the provider's answer to `request`'s client.

    Raises UpstreamError / UpstreamTimeout when the provider fails before any byte reached the
    client; afterwards a failure yields a partial result instead. For a relayed stream,
    `before_end` gets the final result once the provider's terminal event has arrived and
    before the chunk carrying it is written (so the usage can be journaled while the client
    does not have the whole answer yet); non-streamed answers are sent by the caller.
    """
    if call.stream:
        return await _relay_stream(call, request, before_end)
    return await _exchange(call)


async def _exchange(call: UpstreamCall) -> ForwardResult:
    loop = asyncio.get_running_loop()
    started = loop.time()
    upstream = await call.send()
    first_byte = loop.time() - started
    if call.on_first_byte is not None:
        call.on_first_byte()
    return await call.read_whole(upstream, started, first_byte)


class _RelayedStream(web.StreamResponse):
    """A relayed stream's head goes out with its first events, in one write: `prepare` is
    only ever followed at once by the first `write`, and a second send would add to the time
    to the first token. (The switch is aiohttp's own, the one `web.Response` turns off; were it
    gone, the head would simply go out in a write of its own again.)"""

    _send_headers_immediately = False


class _StreamRelay:
    """State of one relayed stream, shared by the relaying task and the function awaiting it."""

    __slots__ = ("before_end", "call", "client_gone", "first_byte", "parser", "request",
                 "response", "started", "status", "upstream_cut", "upstream_seconds", "whole")

    def __init__(self, call: UpstreamCall, request: web.Request,
                 before_end: Callable[[ForwardResult], None] | None) -> None:
        self.call = call
        self.request = request
        self.before_end = before_end
        self.parser: StreamUsageParser = call.dialect.stream_parser()
        self.response: web.StreamResponse | None = None
        self.status = CLIENT_CLOSED_REQUEST
        self.started = asyncio.get_running_loop().time()
        self.first_byte: float | None = None
        self.upstream_seconds = 0.0
        self.client_gone = False
        self.upstream_cut = False
        # Set when the provider answered with a complete body instead of a stream (errors).
        self.whole: ForwardResult | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        upstream = await self.call.send()
        self.status = upstream.status
        parser = self.call.dialect.answer_parser(upstream.content_type, upstream.status)
        if parser is None:
            self.first_byte = loop.time() - self.started
            if self.call.on_first_byte is not None:
                self.call.on_first_byte()
            self.whole = await self.call.read_whole(upstream, self.started, self.first_byte)
            return
        self.parser = parser
        finished = False
        try:
            await self._relay(upstream)
            finished = True
        finally:
            self.upstream_seconds = loop.time() - self.started
            if finished and not self.client_gone:
                upstream.release()
            else:
                upstream.close()  # stop the provider's work (and the spend) now

    async def _relay(self, upstream: aiohttp.ClientResponse) -> None:
        parser = self.parser
        while True:
            try:
                chunk = await upstream.content.readany()
            except STREAM_ERRORS as exc:
                if self.response is None:
                    raise (self.call.timeout_error() if isinstance(exc, TimeoutError)
                           else self.call.unreachable_error()) from exc
                self.upstream_cut = True
                break
            if not chunk:
                break
            # The provider's answer ended with these bytes: they go out with the stream's end.
            last = upstream.content.at_eof()
            # A chunk that may complete the answer is parsed before the client gets it, so
            # that the usage is handed on (journaled) before the client has the whole answer;
            # any other is relayed first (the time to the first token) and parsed after.
            ending = parser.may_complete(chunk) or last
            if ending:
                parser.feed(chunk)
                if last:
                    parser.close()
                self._hand_on_if_complete()
            try:
                response = self.response
                if response is None:
                    response = await self._start(upstream)
                if last:
                    await response.write_eof(chunk)  # the last events and the end: one write
                    return
                await response.write(chunk)
            except ConnectionError:
                self.client_gone = True
                return
            finally:
                if not ending:
                    parser.feed(chunk)
                    self._hand_on_if_complete()
        parser.close()
        self._hand_on_if_complete()  # a last event without its blank line completes here
        try:
            response = self.response
            if response is None:
                response = await self._start(upstream)
            if not self.upstream_cut:
                await response.write_eof()
        except ConnectionError:
            self.client_gone = not parser.complete

    def _hand_on_if_complete(self) -> None:
        before_end = self.before_end
        if before_end is not None and self.parser.complete:
            self.before_end = None
            before_end(self.result())

    async def _start(self, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        self.first_byte = asyncio.get_running_loop().time() - self.started
        if self.call.on_first_byte is not None:
            self.call.on_first_byte()
        response = _RelayedStream(status=upstream.status,
                                  headers=relayable_headers(upstream.headers))
        self.response = response
        await response.prepare(self.request)
        return response

    def result(self) -> ForwardResult:
        if self.whole is not None:
            return self.whole
        parser = self.parser
        usage, estimated = settle_usage(
            parser.usage, output_final=parser.output_final,
            request_bytes=self.call.request_bytes, output_chars=parser.output_text_chars)
        response = self.response
        if response is None:  # the client left before anything could be sent
            response = web.Response(status=CLIENT_CLOSED_REQUEST)
        return ForwardResult(
            response=response, status=self.status, usage=usage, partial=not parser.complete,
            estimated=estimated, upstream_seconds=self.upstream_seconds,
            first_byte_seconds=self.first_byte, client_gone=self.client_gone,
            error=parser.error, answer_id=parser.answer_id if self.status < 400 else None,
            billing=parser.billing)


async def _relay_stream(call: UpstreamCall, request: web.Request,
                        before_end: Callable[[ForwardResult], None] | None) -> ForwardResult:
    relay = _StreamRelay(call, request, before_end)
    # The relay runs in the calling task (a task of its own would cost a loop turn before the
    # first byte): the watch cancels this task when the client leaves, and that cancellation
    # is taken back here; any other is passed on.
    current = asyncio.current_task()
    assert current is not None
    watch = ClientWatch(request, current)
    try:
        await relay.run()
    except asyncio.CancelledError:
        if not watch.fired or current.uncancel() > 0:
            raise  # the calling task itself is being cancelled
        relay.client_gone = True
        if relay.upstream_seconds == 0.0:
            relay.upstream_seconds = asyncio.get_running_loop().time() - relay.started
    finally:
        watch.stop()
    if relay.upstream_cut and request.transport is not None:
        # Mirror the provider's failure: a clean end would pass a cut answer off as complete.
        request.transport.close()
    return relay.result()
