"""Reading request bodies without ever holding more than the configured cap.

aiohttp's own `client_max_size` only guards `request.read()`; agent contexts are large, so the
limiter reads the stream itself: a declared Content-Length over the cap is refused before any
byte is read, and a chunked body is read only up to the cap plus one byte.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from limiter import json_codec
from limiter.http.errors import BadRequest, PayloadTooLarge

_CHUNK = 256 * 1024


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than {limit} bytes (max_body_bytes).")


async def read_capped(request: web.Request, limit: int) -> bytearray:
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    buffer = bytearray()
    while True:
        chunk = await request.content.read(min(_CHUNK, limit + 1 - len(buffer)))
        if not chunk:
            break
        buffer.extend(chunk)
        if len(buffer) > limit:
            raise _too_large(limit)
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


async def read_json_object(request: web.Request, limit: int) -> dict[str, Any]:
    return parse_json_object(await read_capped(request, limit))
