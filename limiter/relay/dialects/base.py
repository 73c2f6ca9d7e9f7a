"""What the limiter needs to know about a provider, and the one rule for estimating usage.

A `Provider` answers the protocol questions the gateway asks (which model, streaming or not, how
many output tokens at most), shapes the upstream request (the provider key from settings, never
the client's; hop-by-hop headers dropped) and reads token usage from answers. The per-provider
accounting rules live in the subclasses; the estimate below is used only when a provider's counts
are missing (a stream cut short, an answer without usage).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from multidict import CIMultiDict

from ledger.tokens import TokenUsage
from limiter.http.errors import BadRequest
from limiter.relay.sse import StreamUsageParser
from limiter.settings import UpstreamSettings

# Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus framing headers
# the client library recomputes for the new body.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length",
})
# Credentials and identity meant for the limiter. Accept-encoding is left to the upstream
# client (it decompresses what it asks for), content-type is set for the body actually sent and
# X-Chat-ID is the limiter's own grouping header.
CLIENT_ONLY = frozenset({
    "authorization", "x-api-key", "x-agentmeter-secret", "x-forwarded-user", "accept-encoding",
    "content-type", "x-chat-id", "cookie",
})
# Headers of an upstream answer that must not be copied to the client: hop-by-hop ones, the
# body framing (the relayed body is decompressed and re-framed) and the server's own stamps.
RESPONSE_DROP = HOP_BY_HOP | {"content-encoding", "date", "server"}

# Estimates: about 4 characters (or bytes of request JSON) per token. Used only when the provider
# sent no counts; a request body's bytes over-count its text a little, which errs towards billing.
CHARS_PER_TOKEN = 4


def estimate_tokens(size: int) -> int:
    return math.ceil(max(size, 0) / CHARS_PER_TOKEN)


def settle_usage(known: TokenUsage | None, *, output_final: bool, request_bytes: int,
                 output_chars: int) -> tuple[TokenUsage, bool]:
    """The usage to record and whether it is estimated.

    Exact counts the provider already sent are kept; what is missing is estimated: input from the
    request body's size, output from the relayed text — and a provisional output count (such as
    Anthropic's `message_start`) is raised to the estimate when more text than that was relayed.
    """
    if known is not None and output_final:
        return known, False
    output = estimate_tokens(output_chars)
    if known is None:
        return TokenUsage(input=estimate_tokens(request_bytes), output=output), True
    return known._replace(output=max(known.output, output)), True


def encode_json(value: Any) -> bytes:
    # ASCII escapes keep any string the client sent (even a lone surrogate) encodable.
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def _exactly(raw_body: bytes | None) -> dict[str, Any] | None:
    """The client's object read again with `json`, which keeps every number as written
    (limiter.json_codec reads integers beyond 64 bits as floats); None if it cannot be."""
    if raw_body is None:
        return None
    try:
        value = json.loads(raw_body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def add_top_level_member(raw_body: bytes, member: bytes) -> bytes | None:
    """`raw_body` (a JSON object with at least one member) with `member` (`"key":value`) added
    before its closing brace, copying the bytes once; None when it does not end like an object."""
    end = raw_body.rfind(b"}")
    if end < 0 or raw_body[end + 1:].strip():
        return None
    return b"".join((memoryview(raw_body)[:end], b",", member, b"}"))


def forwardable_headers(incoming: Mapping[str, str]) -> dict[str, str]:
    """The client's headers that may travel upstream (no hop-by-hop, no client credentials)."""
    dropped = HOP_BY_HOP | CLIENT_ONLY
    listed = incoming.get("connection", "")
    if listed:
        dropped = dropped | {name.strip().lower() for name in listed.split(",")}
    return {name: value for name, value in incoming.items() if name.lower() not in dropped}


def relayable_headers(upstream: Mapping[str, str]) -> CIMultiDict[str]:
    """The upstream answer's headers that are sent on to the client (repeated ones kept)."""
    return CIMultiDict((name, value) for name, value in upstream.items()
                       if name.lower() not in RESPONSE_DROP)


class Provider(ABC):
    """One LLM provider's protocol as the limiter sees it (stateless; one shared instance)."""

    name: ClassVar[str]
    path: ClassVar[str]

    def request_model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("The request must name a model (a non-empty string `model`).",
                             code="missing_model")
        return model

    def is_stream(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    @abstractmethod
    def requested_max_tokens(self, body: dict[str, Any]) -> int | None: ...

    def prepare_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body to send upstream; returned unchanged (same object) when nothing is needed."""
        return body

    def upstream_payload(self, body: dict[str, Any], raw_body: bytes | None) -> bytes:
        """The bytes sent upstream: the client's own bytes when the body needs no change, so a
        large agent context is never re-encoded."""
        prepared = self.prepare_body(body)
        if prepared is body and raw_body is not None:
            return raw_body
        exact = _exactly(raw_body)
        if exact is not None:
            prepared = self.prepare_body(exact)
        return encode_json(prepared)

    def upstream_headers(self, incoming: Mapping[str, str],
                         settings: UpstreamSettings) -> dict[str, str]:
        headers = forwardable_headers(incoming)
        headers["Content-Type"] = "application/json"
        return headers

    @abstractmethod
    def usage_from_body(self, body: Any) -> TokenUsage | None:
        """Usage of a complete (non-streamed) answer or error body; None when it reports none."""

    @abstractmethod
    def stream_parser(self) -> StreamUsageParser: ...


def positive_int(value: object) -> int | None:
    return value if type(value) is int and value > 0 else None
