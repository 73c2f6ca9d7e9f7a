"""OpenAI Responses API: usage and the facts the gateway keeps from an answer.

Accounting (facts of the API): `usage.input_tokens` already includes the cached prompt tokens
(`input_tokens_details.cached_tokens`), which are taken out of the input count; `output_tokens`
already includes `output_tokens_details.reasoning_tokens`, which is never added again.

Besides usage, an answer tells the gateway the response id (all users share the gateway's
provider key, so it records whose each id is), the `service_tier` that served it (a top-level
field of the response, a pricing variant) and how many web searches it ran (`web_search_call`
output items, a per-request fee).

A stream (`stream: true`) is SSE whose events name their type both in `event:` and in the data's
`type`. `response.created` carries the response (id, no usage yet); text arrives in `*.delta`
events; the terminal event — `response.completed`, `response.incomplete` or `response.failed` —
carries the whole response with its usage. A stream-level failure is an `error` event.

A request asks for a tier with `service_tier`; a web search tool (`{"type": "web_search"}` and
its dated or preview types) has no bound on its searches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.pricing import Billing
from ledger.tokens import TokenUsage
from limiter.http.errors import BadRequest, NotFound
from limiter.relay.dialects.base import (
    Asked,
    Dialect,
    asked_service_tier,
    positive_int,
    tools_of,
)
from limiter.relay.sse import StreamUsageParser, count, load_json, scan_text_chars, text_keys

TERMINAL_EVENTS = (b"response.completed", b"response.incomplete", b"response.failed")
# Delta events whose `delta` is base64 audio, not generated text.
_NOT_TEXT = frozenset({b"response.audio.delta"})
_DELTA = text_keys("delta")
WEB_SEARCH_CALL = "web_search_call"
WEB_SEARCH_TOOL = "web_search"


def responses_usage(usage: object) -> TokenUsage | None:
    """TokenUsage from a Responses `usage` object; None when it is not one."""
    if not isinstance(usage, dict):
        return None
    given = count(usage.get("input_tokens"))
    output = count(usage.get("output_tokens"))
    if given is None and output is None:
        return None
    given = given or 0
    details = usage.get("input_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else None
    cached = min(cached or 0, given)
    return TokenUsage(input=given - cached, output=output or 0, cache_read=cached)


@dataclass
class ResponseFacts:
    """What one Responses answer tells the gateway besides its usage."""

    response_id: str | None = None
    service_tier: str | None = None
    web_search_calls: int = 0

    def update(self, response: object) -> TokenUsage | None:
        """Take the facts of a response object (each one it carries replaces the old value);
        returns its usage, if it reports one."""
        if not isinstance(response, dict):
            return None
        response_id = response.get("id")
        if isinstance(response_id, str) and response_id:
            self.response_id = response_id
        tier = response.get("service_tier")
        if isinstance(tier, str) and tier:
            self.service_tier = tier
        output = response.get("output")
        if isinstance(output, list):
            calls = sum(1 for item in output
                        if isinstance(item, dict) and item.get("type") == WEB_SEARCH_CALL)
            self.web_search_calls = max(self.web_search_calls, calls)
        return responses_usage(response.get("usage"))

    def billing(self) -> Billing:
        return Billing(service_tier=self.service_tier, web_searches=self.web_search_calls)


def responses_asked(body: dict[str, Any]) -> Asked:
    """What a Responses request asks for that changes its price (`Dialect.asked`)."""
    searches = any(isinstance(kind := tool.get("type"), str) and kind.startswith(WEB_SEARCH_TOOL)
                   for tool in tools_of(body))
    return Asked(service_tier=asked_service_tier(body), web_searches=None if searches else 0)


def response_facts(body: Any) -> tuple[ResponseFacts, TokenUsage | None]:
    """The facts and usage of a complete (non-streamed) answer."""
    facts = ResponseFacts()
    return facts, facts.update(body)


def responses_billing(body: Any) -> Billing:
    """What a complete answer reports beyond tokens (`Dialect.billing_from_body`)."""
    return response_facts(body)[0].billing()


class ResponsesStreamParser(StreamUsageParser):
    """Reads a Responses stream; `facts` holds the response id, service tier and web searches."""

    __slots__ = ("_search_items", "_usage", "facts")
    TERMINAL = frozenset(TERMINAL_EVENTS)

    def __init__(self) -> None:
        super().__init__()
        self._usage: TokenUsage | None = None
        self.facts = ResponseFacts()
        self._search_items: set[str] = set()

    @property
    def usage(self) -> TokenUsage | None:
        return self._usage

    @property
    def answer_id(self) -> str | None:
        return self.facts.response_id

    @property
    def output_final(self) -> bool:
        # Usage arrives only in the terminal event, with the final counts.
        return self._usage is not None

    @property
    def billing(self) -> Billing:
        return self.facts.billing()

    def on_event(self, event: bytes, data: bytes) -> None:
        if event.endswith(b".delta") and event not in _NOT_TEXT:
            # The bulk of a stream: only the text size matters, no full parse.
            self.output_text_chars += scan_text_chars(data, _DELTA)
            return
        payload = load_json(data)
        if not isinstance(payload, dict):
            return
        kind = payload.get("type")
        name = kind.encode() if isinstance(kind, str) else event
        if event == b"message" and name.endswith(b".delta") and name not in _NOT_TEXT:
            # A stream without `event:` lines: the type is only in the data.
            self.output_text_chars += scan_text_chars(data, _DELTA)
        elif name == b"error":
            self.error = payload
        elif name == b"response.output_item.done":
            item = payload.get("item")
            if isinstance(item, dict) and item.get("type") == WEB_SEARCH_CALL:
                self._search_items.add(str(item.get("id")))
                self.facts.web_search_calls = max(self.facts.web_search_calls,
                                                  len(self._search_items))
        elif name.startswith(b"response."):
            response = payload.get("response")
            usage = self.facts.update(response)
            if name in TERMINAL_EVENTS:
                self.complete = True
                if usage is not None:
                    self._usage = usage
                error = response.get("error") if isinstance(response, dict) else None
                if name == b"response.failed" and isinstance(error, dict):
                    self.error = error


class ResponseNotFound(NotFound):
    """A response id the caller does not own (or nobody does): OpenAI's own 404, so a client
    cannot tell another user's response from one that never existed."""

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Response with id {response_id!r} not found.")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": "invalid_request_error",
                          "param": None, "code": None}}


class Responses(Dialect):
    """OpenAI Responses API: `POST /v1/responses` and the routes on a stored response.

    Streams need no option spliced in: their terminal event always carries the usage, so the
    client's bytes go upstream untouched.
    """

    def check_request(self, body: dict[str, Any]) -> None:
        if body.get("background") is True:
            raise BadRequest("Background responses are not supported by this gateway: an "
                             "answer that arrives later cannot be metered. Send the request "
                             "without `background: true`.", code="background_not_supported")

    def referenced_answer(self, body: dict[str, Any]) -> str | None:
        previous = body.get("previous_response_id")
        return previous if isinstance(previous, str) and previous else None

    def not_found(self, answer_id: str) -> NotFound:
        return ResponseNotFound(answer_id)

    def requested_max_tokens(self, body: dict[str, Any]) -> int | None:
        return positive_int(body.get("max_output_tokens"))

    def usage_from_body(self, body: Any) -> TokenUsage | None:
        return response_facts(body)[1]

    def answer_id(self, body: Any) -> str | None:
        return response_facts(body)[0].response_id

    def asked(self, body: dict[str, Any], model: str) -> Asked:
        return responses_asked(body)

    def billing_from_body(self, body: Any) -> Billing:
        return responses_billing(body)

    def stream_parser(self) -> ResponsesStreamParser:
        return ResponsesStreamParser()
