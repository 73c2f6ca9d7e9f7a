"""What the limiter needs to know about an API dialect, and the one rule for estimating usage.

A `Dialect` answers the protocol questions the gateway asks of a request body (which model,
streaming or not, how many output tokens at most, what it asks for that changes its price),
prepares the body for the upstream (the client's own bytes whenever nothing needs to change) and
reads from answers their token usage and their billing facts (`ledger.pricing.Billing`). The
per-dialect accounting rules live in the subclasses; the estimate below is used only when an
answer's counts are missing (a stream cut short, an answer without usage). Which routes speak a
dialect and where their calls go is the registry's business (`limiter.relay.registry`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from ledger.pricing import AUTO_SERVICE_TIER, STANDARD, Billing
from ledger.tokens import TokenUsage
from limiter.http.errors import BadRequest, NotFound
from limiter.relay.sse import StreamUsageParser

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


class SearchCount(Enum):
    """How the provider counts the web searches it bills for one answer."""

    # Each search the answer reports (Anthropic, OpenAI Responses, Gemini 3 and later).
    REPORTED = "reported"
    # One for an answer that searched at all: a grounded prompt (Gemini 2.5 and older).
    PER_GROUNDED_ANSWER = "per_grounded_answer"
    # One for every answer, whatever it reports (OpenAI's Chat Completions search models).
    PER_ANSWER = "per_answer"

    def billed(self, reported: int) -> int:
        """The searches billed for an answer that reported `reported` of them."""
        if self is SearchCount.PER_ANSWER:
            return 1
        if self is SearchCount.PER_GROUNDED_ANSWER:
            return min(reported, 1)
        return reported


@dataclass(frozen=True, slots=True)
class Asked:
    """What a request asks of the provider that changes its price (read before it is sent)."""

    # The service tier asked for; None when the request leaves it to the provider (`auto`).
    service_tier: str | None = None
    speed: str | None = None
    # The most web searches the request allows: 0 without a search tool, None for no bound.
    web_searches: int | None = 0
    # How the provider counts the searches of this request's answer.
    search_count: SearchCount = SearchCount.REPORTED

    def billing(self) -> Billing:
        """The billing of an answer that reported none (an estimated record): what was asked."""
        return Billing(service_tier=self.service_tier, speed=self.speed)

    def billed(self, billing: Billing) -> Billing:
        """An answer's billing with its web searches counted as the provider bills them."""
        return dataclasses.replace(billing,
                                   web_searches=self.search_count.billed(billing.web_searches))


def asked_service_tier(body: dict[str, Any]) -> str | None:
    """The request's `service_tier`, None when absent or `auto` (the provider chooses)."""
    tier = body.get("service_tier")
    return tier if isinstance(tier, str) and tier and tier != AUTO_SERVICE_TIER else None


def tools_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    return [tool for tool in tools if isinstance(tool, dict)] if isinstance(tools, list) else []


def estimated_billing(reported: Billing, asked: Asked) -> Billing:
    """An estimated record's billing: what the answer reported, completed by what the request
    asked for where the answer said nothing (a stream cut before the provider named its tier)."""
    return Billing(service_tier=reported.service_tier or asked.service_tier,
                   batch=reported.batch, speed=reported.speed or asked.speed,
                   web_searches=reported.web_searches)


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


class Dialect(ABC):
    """One API dialect as the limiter sees it (stateless; one shared instance)."""

    # Sent upstream when the client did not send them (e.g. Anthropic's API version).
    default_headers: ClassVar[Mapping[str, str]] = {}

    def request_model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("The request must name a model (a non-empty string `model`).",
                             code="missing_model")
        return model

    def is_stream(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def check_request(self, body: dict[str, Any]) -> None:
        """Refuse (400) a request the gateway cannot meter; nothing to refuse by default."""
        return None

    def referenced_answer(self, body: dict[str, Any]) -> str | None:
        """The id of an earlier answer the request builds on (which must be the caller's)."""
        return None

    def not_found(self, answer_id: str) -> NotFound:
        """The 404 for an answer id the caller does not own, in the dialect's error shape."""
        return NotFound(f"{answer_id!r} not found.")

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

    def asked(self, body: dict[str, Any], model: str) -> Asked:
        """What the request for `model` (as the call names it) asks for that changes its price
        (strict mode bounds it)."""
        return Asked(service_tier=asked_service_tier(body))

    @abstractmethod
    def usage_from_body(self, body: Any) -> TokenUsage | None:
        """Usage of a complete (non-streamed) answer or error body; None when it reports none."""

    def answer_id(self, body: Any) -> str | None:
        """The id the provider gave a complete answer, where the gateway keeps whose it is."""
        return None

    def billing_from_body(self, body: Any) -> Billing:
        """What a complete answer reports beyond tokens (the standard tier when nothing)."""
        return STANDARD

    @abstractmethod
    def stream_parser(self) -> StreamUsageParser: ...

    def answer_parser(self, content_type: str, status: int) -> StreamUsageParser | None:
        """How a streamed call's answer is relayed: the parser of a stream passed on as it
        arrives, or None for one complete body (an error answer) read whole."""
        return self.stream_parser() if content_type == "text/event-stream" else None


def positive_int(value: object) -> int | None:
    return value if type(value) is int and value > 0 else None
