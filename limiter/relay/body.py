"""Reading request bodies within the configured bounds.

One body is read within `max_body_bytes` (a declared Content-Length over it is refused before
any byte is read) and within `client_body_timeout_seconds` (408). A body sent with
`Content-Encoding` gzip, deflate or zstd is decoded as it arrives, and refused with 413 as soon
as the decoded size passes `max_body_bytes` (a bomb never inflates past it); the plain bytes are
what goes upstream. Any other coding gets 415.

All bodies together are bounded by `max_buffered_body_bytes`: a request reserves its declared
size before reading; past the bound it waits up to `BUDGET_WAIT_SECONDS` for room and then gets
503 with a short Retry-After. What a body grows beyond its reservation (chunked or decoded
bodies) is counted but never refused, so nothing already admitted fails.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from limiter import json_codec
from limiter.http.errors import (
    BadRequest,
    ClientClosedRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    UnsupportedMediaType,
)

try:
    from compression.zstd import (  # type: ignore[import-not-found,unused-ignore]
        ZstdDecompressor,
        ZstdError,
    )
except ImportError:  # Python < 3.14
    from backports.zstd import ZstdDecompressor, ZstdError

_CHUNK = 256 * 1024
# How long a request waits for room under max_buffered_body_bytes before its 503.
BUDGET_WAIT_SECONDS = 2.0
RETRY_AFTER_SECONDS = 1


class _Decoder(Protocol):
    def decode(self, data: bytes, room: int) -> bytes: ...


class _Zlib:
    """gzip (wbits 31) or deflate, which RFC 9110 defines as the zlib format (wbits 15)."""

    def __init__(self, wbits: int) -> None:
        self._inflate = zlib.decompressobj(wbits=wbits)

    def decode(self, data: bytes, room: int) -> bytes:
        out = self._inflate.decompress(data, room)
        # Output past `room` stays in unconsumed_tail: the caller refuses the body anyway.
        return out


class _Zstd:
    def __init__(self) -> None:
        self._inflate = ZstdDecompressor()

    def decode(self, data: bytes, room: int) -> bytes:
        return bytes(self._inflate.decompress(data, room))


DECODERS: dict[str, Callable[[], _Decoder]] = {
    "gzip": lambda: _Zlib(31), "x-gzip": lambda: _Zlib(31), "deflate": lambda: _Zlib(15),
    "zstd": _Zstd,
}


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than {limit} bytes (max_body_bytes).")


class BodyBudget:
    """Request-body bytes held in memory at once, over every request of the process."""

    def __init__(self, limit: int, wait_s: float = BUDGET_WAIT_SECONDS) -> None:
        self._limit = limit
        self._wait = wait_s
        self.held = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def reserve(self, size: int) -> BodyHold:
        """A hold of `size` bytes, once they fit (a body alone may always be read)."""
        if self.held and self.held + size > self._limit:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._wait
            while self.held and self.held + size > self._limit:
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    async with asyncio.timeout_at(deadline):
                        await waiter
                except TimeoutError:
                    raise ServiceUnavailable(
                        "The gateway holds as many request bodies as it may "
                        "(max_buffered_body_bytes); try again shortly.", code="overloaded",
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
                finally:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
        return BodyHold(self, size)

    def _add(self, size: int) -> None:
        self.held += size

    def _remove(self, size: int) -> None:
        self.held -= size
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class BodyHold:
    """The bytes one request's body holds; `release` (idempotent) gives them back."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: BodyBudget, size: int) -> None:
        self._budget = budget
        self.size = size
        budget._add(size)

    def grow_to(self, size: int) -> None:
        if size > self.size:
            self._budget._add(size - self.size)
            self.size = size

    def release(self) -> None:
        if self.size:
            size, self.size = self.size, 0
            self._budget._remove(size)


def decoder_for(request: web.Request) -> _Decoder | None:
    """The decoder of the body's Content-Encoding (None: identity); 415 for another."""
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding in ("", "identity"):
        return None
    factory = DECODERS.get(coding)
    if factory is None:
        raise UnsupportedMediaType(
            f"Content-Encoding {coding!r} is not accepted (gzip, deflate, zstd are).",
            code="unsupported_content_encoding")
    return factory()


async def read_capped(request: web.Request, limit: int, timeout_s: float,
                      hold: BodyHold | None = None) -> bytearray:
    """The body, decoded, within `limit` bytes and `timeout_s` seconds (see the module doc)."""
    decoder = decoder_for(request)
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    buffer = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await request.content.read(_CHUNK if decoder else
                                                   min(_CHUNK, limit + 1 - len(buffer)))
                if not chunk:
                    break
                if decoder is not None:
                    chunk = decoder.decode(chunk, limit + 1 - len(buffer))
                buffer.extend(chunk)
                if hold is not None:
                    hold.grow_to(len(buffer))
                if len(buffer) > limit:
                    raise _too_large(limit)
    except ConnectionError:
        raise ClientClosedRequest() from None
    except TimeoutError:
        raise RequestTimeout(f"The request body did not arrive within {timeout_s:g} seconds "
                             "(client_body_timeout_seconds).") from None
    except (zlib.error, ZstdError):
        raise BadRequest("The request body does not decode as its Content-Encoding says.",
                         code="invalid_content_encoding") from None
    return buffer  # not copied to bytes: that would hold the body twice


def parse_json_object(raw: bytes | bytearray) -> dict[str, Any]:
    if not raw.strip():
        raise BadRequest("The request body is empty; a JSON object is expected.",
                         code="invalid_json")
    try:
        value = json_codec.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(value, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    return value


async def read_json_object(request: web.Request, limit: int,
                           timeout_s: float) -> dict[str, Any]:
    return parse_json_object(await read_capped(request, limit, timeout_s))
