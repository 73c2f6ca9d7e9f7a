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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ledger.tokens import TokenUsage
from limiter.relay.dialects.base import Dialect, positive_int
from limiter.relay.sse import StreamUsageParser, count, load_json, scan_text_chars, text_keys

# Sent when the client names no API version (the SDKs always do).
DEFAULT_VERSION = "2023-06-01"

_COUNTERS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
             "cache_read_input_tokens")
_SPLIT = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")


class UsageCounters:
    """Latest value of each Anthropic usage counter; a later report replaces, never adds."""

    __slots__ = ("has_split", "values")

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.has_split = False

    def update(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
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


def anthropic_usage(usage: object) -> TokenUsage | None:
    counters = UsageCounters()
    counters.update(usage)
    return counters.token_usage()


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

    def usage_from_body(self, body: Any) -> TokenUsage | None:
        return anthropic_usage(body.get("usage")) if isinstance(body, dict) else None

    def stream_parser(self) -> AnthropicStreamParser:
        return AnthropicStreamParser()
