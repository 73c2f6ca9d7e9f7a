"""OpenAI Chat Completions: `POST /v1/chat/completions`.

Accounting (facts of the API): `usage.prompt_tokens` already includes the cached prompt tokens
(`prompt_tokens_details.cached_tokens`) and, where reported, the tokens written to the cache
(`prompt_tokens_details.cache_write_tokens`), so both are taken out of the input count;
`completion_tokens` already includes `completion_tokens_details.reasoning_tokens`, which is
therefore never added again. A stream reports usage only in its last chunk (empty `choices`) and
only when the request asks for it with `stream_options.include_usage`, which the limiter adds.
The service tier that served the answer is its top-level `service_tier` (in every chunk of a
stream; a pricing variant).

Web search in Chat Completions is done by the search models (`gpt-5-search-api`,
`gpt-4o-search-preview`, `gpt-4o-mini-search-preview` and their dated names), which search
before every answer and take their options in `web_search_options` (which no other model
accepts). OpenAI bills such a request one web search tool call (a price per 1,000 calls). The
answer shows the pages it used as `url_citation` annotations of its message but no count, so a
request to a search model, or one with `web_search_options`, counts one search per answer
(`SearchCount.PER_ANSWER`), and strict mode bounds it with one.
"""

from __future__ import annotations

import re
from typing import Any

from ledger.pricing import Billing
from ledger.tokens import TokenUsage
from limiter.relay.dialects.base import (
    Asked,
    Dialect,
    SearchCount,
    add_top_level_member,
    asked_service_tier,
    positive_int,
)
from limiter.relay.sse import (
    StreamUsageParser,
    count,
    load_json,
    scan_text_chars,
    text_chars,
    text_keys,
)


def openai_usage(usage: object) -> TokenUsage | None:
    """TokenUsage from an OpenAI `usage` object; None when it is not one."""
    if not isinstance(usage, dict):
        return None
    prompt = count(usage.get("prompt_tokens"))
    completion = count(usage.get("completion_tokens"))
    if prompt is None and completion is None:
        return None
    prompt = prompt or 0
    details = usage.get("prompt_tokens_details")
    cached = cache_write = 0
    if isinstance(details, dict):
        cached = count(details.get("cached_tokens")) or 0
        cache_write = count(details.get("cache_write_tokens")) or 0
    return TokenUsage(
        input=max(prompt - cached - cache_write, 0),
        output=completion or 0,
        cache_read=cached,
        cache_write=cache_write,
    )


def served_tier(answer: object) -> str | None:
    """The `service_tier` an OpenAI answer (or stream chunk) reports, if any."""
    tier = answer.get("service_tier") if isinstance(answer, dict) else None
    return tier if isinstance(tier, str) and tier else None


# Delta fields that carry generated text (reasoning and tool arguments are billed output too).
_TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")
_TEXT_KEYS = text_keys(*_TEXT_FIELDS, "arguments")


def _may_report(data: bytes) -> bool:
    """Whether a chunk may carry usage or an error, and so is worth a full JSON parse.

    With include_usage every chunk has `"usage":null` until the last one; the quoted words can
    only be keys (or whole string values, which merely cost a needless parse).
    """
    at = data.find(b'"usage"')
    if at < 0:
        return b'"error"' in data
    return data[at + 7:at + 14].lstrip(b" \t:")[:4] != b"null" or b'"error"' in data


def _delta_chars(choices: list[Any]) -> int:
    chars = 0
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        for name in _TEXT_FIELDS:
            chars += text_chars(delta.get(name))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    chars += text_chars(function.get("arguments"))
    return chars


class OpenAIStreamParser(StreamUsageParser):
    """Chunks are `data: {json}` events; `data: [DONE]` ends the stream."""

    __slots__ = ("_service_tier", "_tier_read", "_usage")
    TERMINAL = frozenset({b"[DONE]"})

    def __init__(self) -> None:
        super().__init__()
        self._usage: TokenUsage | None = None
        self._service_tier: str | None = None
        # The first chunk naming a tier is parsed whole (the tier is then known even if the
        # stream is cut before its usage); later ones only when they may carry usage.
        self._tier_read = False

    @property
    def usage(self) -> TokenUsage | None:
        return self._usage

    @property
    def billing(self) -> Billing:
        return Billing(service_tier=self._service_tier)

    @property
    def output_final(self) -> bool:
        return self._usage is not None

    def on_event(self, event: bytes, data: bytes) -> None:
        if data == b"[DONE]":
            self.complete = True
            return
        if not _may_report(data) and (self._tier_read or b'"service_tier"' not in data):
            # An ordinary delta (the bulk of a stream): only its text size matters.
            self.output_text_chars += scan_text_chars(data, _TEXT_KEYS)
            return
        chunk = load_json(data)
        if not isinstance(chunk, dict):
            return
        self._tier_read = True
        self._service_tier = served_tier(chunk) or self._service_tier
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices:
            self.output_text_chars += _delta_chars(choices)
        usage = openai_usage(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        error = chunk.get("error")
        if isinstance(error, dict):
            self.error = error


_INCLUDE_USAGE = b'"stream_options":{"include_usage":true}'
# The search models' names, dated or not: gpt-5-search-api, gpt-4o-mini-search-preview-2025-03-11.
_SEARCH_MODEL = re.compile(r"-search-(?:api|preview)(?:-|$)")


def searches_the_web(body: dict[str, Any], model: str) -> bool:
    """Whether a Chat Completions request runs a web search: a search model always does."""
    return isinstance(body.get("web_search_options"), dict) or bool(_SEARCH_MODEL.search(model))


class ChatCompletions(Dialect):
    """OpenAI Chat Completions (and the many APIs compatible with it)."""

    def requested_max_tokens(self, body: dict[str, Any]) -> int | None:
        # max_completion_tokens replaced max_tokens (and bounds reasoning too); either may come.
        return positive_int(body.get("max_completion_tokens")) or positive_int(
            body.get("max_tokens"))

    def prepare_body(self, body: dict[str, Any]) -> dict[str, Any]:
        if not self.is_stream(body):
            return body
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return body
        merged = dict(options) if isinstance(options, dict) else {}
        merged["include_usage"] = True
        return {**body, "stream_options": merged}

    def upstream_payload(self, body: dict[str, Any], raw_body: bytes | None) -> bytes:
        if raw_body is not None and self.is_stream(body) and "stream_options" not in body:
            # The common agent case: splice the option in rather than re-encode the context.
            spliced = add_top_level_member(raw_body, _INCLUDE_USAGE)
            if spliced is not None:
                return spliced
        return super().upstream_payload(body, raw_body)

    def asked(self, body: dict[str, Any], model: str) -> Asked:
        tier = asked_service_tier(body)
        if searches_the_web(body, model):
            return Asked(service_tier=tier, web_searches=1, search_count=SearchCount.PER_ANSWER)
        return Asked(service_tier=tier)

    def usage_from_body(self, body: Any) -> TokenUsage | None:
        return openai_usage(body.get("usage")) if isinstance(body, dict) else None

    def billing_from_body(self, body: Any) -> Billing:
        return Billing(service_tier=served_tier(body))

    def stream_parser(self) -> OpenAIStreamParser:
        return OpenAIStreamParser()
