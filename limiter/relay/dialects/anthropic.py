"""Anthropic Messages (`POST /v1/messages`).

Accounting (facts of the API): `input_tokens` excludes both the tokens written to the cache
(`cache_creation_input_tokens`) and those read from it (`cache_read_input_tokens`), so the three
are separate kinds. Cache writes are split by lifetime where the answer carries the
`cache_creation` object: `ephemeral_5m_input_tokens` -> cache_write, `ephemeral_1h_input_tokens`
-> cache_write_1h; without it every cache write is a 5-minute one. If the split reports fewer
tokens than `cache_creation_input_tokens`, the rest is billed as 5-minute writes rather than
dropped. `output_tokens` includes thinking.

In a stream `message_start` carries the input side (`message.usage`) and `message_delta` the
cumulative output (and may repeat the input side): every counter is taken at its latest value,
never summed. `message_stop` ends the stream; `ping` is a keep-alive; `error` reports a failure.

Billing facts sit in the same `usage` object, also taken at their latest value: `service_tier`
(`standard`, `priority`, `batch`), `speed` (`standard` or `fast`) and the web searches the
server ran (`server_tool_use.web_search_requests`). A request asks for a tier with
`service_tier` (`auto` or `standard_only`), for fast mode with `speed`, and bounds its searches
with the web search tool's `max_uses` (`{"type": "web_search_20250305", "max_uses": 5}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ledger.pricing import Billing
from ledger.tokens import TokenUsage
from limiter.relay.dialects.base import Asked, Dialect, asked_service_tier, positive_int, tools_of
from limiter.relay.sse import StreamUsageParser, count, load_json, scan_text_chars, text_keys

# Sent when the client names no API version (the SDKs always do).
DEFAULT_VERSION = "2023-06-01"

_COUNTERS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
             "cache_read_input_tokens")
_SPLIT = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
# What a request's `service_tier` asks for, in the tier names answers report.
_ASKED_TIERS = {"standard_only": "standard"}
WEB_SEARCH_TOOL_PREFIX = "web_search_"


class UsageCounters:
    """Latest value of each Anthropic usage counter and billing fact; a later report replaces,
    never adds."""

    __slots__ = ("has_split", "service_tier", "speed", "values", "web_searches")

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.has_split = False
        self.service_tier: str | None = None
        self.speed: str | None = None
        self.web_searches = 0

    def update(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        tier, speed = usage.get("service_tier"), usage.get("speed")
        if isinstance(tier, str) and tier:
            self.service_tier = tier
        if isinstance(speed, str) and speed:
            self.speed = speed
        server_tools = usage.get("server_tool_use")
        if isinstance(server_tools, dict):
            searches = count(server_tools.get("web_search_requests"))
            if searches is not None:
                self.web_searches = searches
        for name in _COUNTERS:
            value = count(usage.get(name))
            if value is not None:
                self.values[name] = value
        split = usage.get("cache_creation")
        if isinstance(split, dict):
            for name in _SPLIT:
                value = count(split.get(name))
                if value is not None:
                    self.values[name] = value
                    self.has_split = True

    def billing(self) -> Billing:
        return Billing(service_tier=self.service_tier, speed=self.speed,
                       web_searches=self.web_searches)

    def token_usage(self) -> TokenUsage | None:
        values = self.values
        if not values:
            return None
        writes = values.get("cache_creation_input_tokens", 0)
        if self.has_split:
            write_1h = values.get("ephemeral_1h_input_tokens", 0)
            write_5m = values.get("ephemeral_5m_input_tokens", 0)
            write_5m += max(writes - write_5m - write_1h, 0)
        else:
            write_1h, write_5m = 0, writes
        return TokenUsage(
            input=values.get("input_tokens", 0),
            output=values.get("output_tokens", 0),
            cache_read=values.get("cache_read_input_tokens", 0),
            cache_write=write_5m,
            cache_write_1h=write_1h,
        )


def _counters(body: Any) -> UsageCounters:
    counters = UsageCounters()
    if isinstance(body, dict):
        counters.update(body.get("usage"))
    return counters


def web_search_bound(body: dict[str, Any]) -> int | None:
    """The most web searches the request allows: the sum of its search tools' `max_uses`
    (0 without one), None when a search tool sets no bound."""
    bound = 0
    for tool in tools_of(body):
        kind = tool.get("type")
        if isinstance(kind, str) and kind.startswith(WEB_SEARCH_TOOL_PREFIX):
            uses = count(tool.get("max_uses"))
            if uses is None:
                return None
            bound += uses
    return bound


# Delta fields that carry generated text: answer, thinking, tool-call JSON.
_DELTA_TEXT = text_keys("text", "thinking", "partial_json")


class AnthropicStreamParser(StreamUsageParser):
    __slots__ = ("_counters", "_output_final")
    TERMINAL = frozenset({b"message_stop"})

    def __init__(self) -> None:
        super().__init__()
        self._counters = UsageCounters()
        self._output_final = False

    @property
    def usage(self) -> TokenUsage | None:
        return self._counters.token_usage()

    @property
    def output_final(self) -> bool:
        return self._output_final

    @property
    def billing(self) -> Billing:
        return self._counters.billing()

    def on_event(self, event: bytes, data: bytes) -> None:
        if event == b"ping":
            return
        if event == b"content_block_delta":
            self.output_text_chars += scan_text_chars(data, _DELTA_TEXT)
        elif event == b"message_start":
            payload = load_json(data)
            message = payload.get("message") if isinstance(payload, dict) else None
            if isinstance(message, dict):
                self._counters.update(message.get("usage"))
        elif event == b"message_delta":
            payload = load_json(data)
            usage = payload.get("usage") if isinstance(payload, dict) else None
            self._counters.update(usage)
            if isinstance(usage, dict) and count(usage.get("output_tokens")) is not None:
                self._output_final = True
        elif event == b"message_stop":
            self.complete = True
        elif event == b"error":
            payload = load_json(data)
            error = payload.get("error") if isinstance(payload, dict) else None
            self.error = error if isinstance(error, dict) else {"type": "error"}


class AnthropicMessages(Dialect):
    """Anthropic Messages."""

    default_headers: ClassVar[Mapping[str, str]] = {"anthropic-version": DEFAULT_VERSION}

    def requested_max_tokens(self, body: dict[str, Any]) -> int | None:
        return positive_int(body.get("max_tokens"))

    def asked(self, body: dict[str, Any], model: str) -> Asked:
        tier = asked_service_tier(body)
        speed = body.get("speed")
        return Asked(service_tier=_ASKED_TIERS.get(tier, tier) if tier else None,
                     speed=speed if isinstance(speed, str) and speed else None,
                     web_searches=web_search_bound(body))

    def usage_from_body(self, body: Any) -> TokenUsage | None:
        return _counters(body).token_usage()

    def billing_from_body(self, body: Any) -> Billing:
        return _counters(body).billing()

    def stream_parser(self) -> AnthropicStreamParser:
        return AnthropicStreamParser()
