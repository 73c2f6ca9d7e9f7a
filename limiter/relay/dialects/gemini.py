"""Google Gemini API (`:generateContent`, `:streamGenerateContent`, `:countTokens`): the dialect,
its usage parsers and its error shape.

Accounting (facts of the API): `usageMetadata.promptTokenCount` already includes the tokens read
from a context cache (`cachedContentTokenCount`) but not the prompt of tool results
(`toolUsePromptTokenCount`): input = prompt − cached + tool-use prompt, cache_read = cached.
Output = `candidatesTokenCount` + `thoughtsTokenCount` (the thinking is billed as output and not
counted among the candidates).

A stream is a sequence of `GenerateContentResponse` objects, each carrying the *running* total in
`usageMetadata`: the last one counts, never the sum. With `?alt=sse` they come as SSE `data:`
events (`GeminiStreamParser`); without it as one JSON array written piece by piece
(`GeminiArrayStreamParser`, which reads it incrementally and keeps only the unfinished element).
A chunk whose candidate has a `finishReason` ends the answer; a failure is an `{"error": {...}}`.

Grounding with Google Search (a `google_search` tool; `google_search_retrieval` on the oldest
models) is a per-request fee. The queries the model ran are in each candidate's
`groundingMetadata.webSearchQueries` (in a stream, in the chunks near its end). Google bills
Gemini 3 and later models per search query, the unique non-empty ones of the answer; Gemini 2.5
and older per grounded prompt, one for an answer that searched at all (`SearchCount`). A
request has no way to bound the queries of the former, so strict mode refuses a grounded request
to them; the latter bill at most one. Google's free allowances (grounded prompts per day, queries
per month) are counted per account, which the gateway cannot see: every billed search is
counted, so within an allowance the ledger's cost is an upper bound.
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
    asked_service_tier,
    positive_int,
    tools_of,
)
from limiter.relay.sse import MAX_LINE_BYTES, StreamUsageParser, count, load_json, text_chars


def gemini_usage(metadata: object) -> TokenUsage | None:
    """TokenUsage from a `usageMetadata` object; None when it is not one."""
    if not isinstance(metadata, dict):
        return None
    prompt = count(metadata.get("promptTokenCount"))
    candidates = count(metadata.get("candidatesTokenCount"))
    if prompt is None and candidates is None:
        return None
    prompt = prompt or 0
    cached = min(count(metadata.get("cachedContentTokenCount")) or 0, prompt)
    tool_prompt = count(metadata.get("toolUsePromptTokenCount")) or 0
    thoughts = count(metadata.get("thoughtsTokenCount")) or 0
    return TokenUsage(input=prompt - cached + tool_prompt, output=(candidates or 0) + thoughts,
                      cache_read=cached)


def usage_from_answer(body: Any) -> TokenUsage | None:
    """Usage of a complete `:generateContent` answer."""
    return gemini_usage(body.get("usageMetadata")) if isinstance(body, dict) else None


def add_search_queries(candidate: dict[str, Any], queries: set[str]) -> None:
    """Add the non-empty search queries a candidate's grounding reports to `queries`."""
    grounding = candidate.get("groundingMetadata")
    found = grounding.get("webSearchQueries") if isinstance(grounding, dict) else None
    if isinstance(found, list):
        queries.update(query for query in found if isinstance(query, str) and query.strip())


def answer_search_queries(body: Any) -> set[str]:
    """The unique non-empty search queries of a complete answer."""
    queries: set[str] = set()
    candidates = body.get("candidates") if isinstance(body, dict) else None
    if isinstance(candidates, list):
        for candidate in candidates:
            if isinstance(candidate, dict):
                add_search_queries(candidate, queries)
    return queries


# Tools that ground an answer with Google Search (JSON names and proto names).
SEARCH_TOOLS = ("google_search", "googleSearch", "google_search_retrieval",
                "googleSearchRetrieval")
# Models billed per grounded prompt rather than per query: Gemini 2.5 and older.
_PER_PROMPT_MODEL = re.compile(r"(?:^|/)gemini-[12][.-]")


def grounding_asked(body: dict[str, Any], model: str) -> Asked:
    """The searches a request allows and how they are billed (`Dialect.asked`)."""
    per_prompt = bool(_PER_PROMPT_MODEL.search(model))
    count = SearchCount.PER_GROUNDED_ANSWER if per_prompt else SearchCount.REPORTED
    grounded = any(name in tool for tool in tools_of(body) for name in SEARCH_TOOLS)
    bound = (1 if per_prompt else None) if grounded else 0
    return Asked(service_tier=asked_service_tier(body), web_searches=bound, search_count=count)


def _part_chars(part: object) -> int:
    """Generated characters in one content part: text (thoughts included) or a call's args."""
    if not isinstance(part, dict):
        return 0
    chars = text_chars(part.get("text"))
    call = part.get("functionCall")
    if isinstance(call, dict) and call.get("args") is not None:
        chars += len(str(call.get("args")))
    return chars


class GeminiStreamParser(StreamUsageParser):
    """`?alt=sse` streams: every `data:` event is one `GenerateContentResponse`."""

    __slots__ = ("_output_final", "_queries", "_usage")
    TERMINAL = frozenset({b'"finishReason"'})

    def __init__(self) -> None:
        super().__init__()
        self._usage: TokenUsage | None = None
        self._output_final = False
        # Unique non-empty search queries, however many chunks repeat them.
        self._queries: set[str] = set()

    @property
    def billing(self) -> Billing:
        return Billing(web_searches=len(self._queries))

    @property
    def usage(self) -> TokenUsage | None:
        return self._usage

    @property
    def output_final(self) -> bool:
        return self._output_final

    def on_event(self, event: bytes, data: bytes) -> None:
        self.on_chunk(load_json(data))

    def on_chunk(self, chunk: object) -> None:
        """One decoded `GenerateContentResponse` (or error object) of the stream."""
        if not isinstance(chunk, dict):
            return
        error = chunk.get("error")
        if isinstance(error, dict):
            self.error = error
        usage = gemini_usage(chunk.get("usageMetadata"))
        if usage is not None:
            self._usage = usage
        candidates = chunk.get("candidates")
        if not isinstance(candidates, list):
            return
        for candidate in candidates:
            if not isinstance(candidate, dict):
                continue
            content = candidate.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            if isinstance(parts, list):
                self.output_text_chars += sum(map(_part_chars, parts))
            add_search_queries(candidate, self._queries)
            if candidate.get("finishReason"):
                self.complete = True
                self._output_final = usage is not None


# Bytes that change the array reader's state: string quotes, escapes and object brackets.
_STRUCTURE = re.compile(rb'["\\{}\[\]]')


class GeminiArrayStreamParser(GeminiStreamParser):
    """Streams without `alt=sse`: `[{...},\\r\\n{...}]` read element by element as bytes arrive.

    Only the structure is tracked (bracket depth, inside a string or not, a pending escape), so
    the reader needs no buffer beyond the element being received and copes with any split.
    """

    __slots__ = ("_depth", "_element", "_escape", "_in_string")

    def __init__(self) -> None:
        super().__init__()
        self._element = bytearray()
        self._depth = 0
        self._in_string = False
        self._escape = False

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the array, however they were split."""
        start = 0 if self._depth else None  # where the unfinished element resumes in `chunk`
        at = 0
        if self._escape and chunk:
            self._escape = False
            at = 1
        while True:
            match = _STRUCTURE.search(chunk, at)
            if match is None:
                break
            at = match.end()
            byte = chunk[match.start()]
            if self._in_string:
                if byte == 0x5C:  # backslash: the next byte is escaped, even across chunks
                    if at >= len(chunk):
                        self._escape = True
                    at += 1
                elif byte == 0x22:
                    self._in_string = False
            elif byte == 0x22:
                self._in_string = self._depth > 0
            elif byte in (0x7B, 0x5B) and (self._depth or byte == 0x7B):
                if not self._depth:
                    start = match.start()
                self._depth += 1
            elif byte in (0x7D, 0x5D) and self._depth:
                self._depth -= 1
                if not self._depth and start is not None:
                    self._element += chunk[start:at]
                    self._dispatch()
                    start = None
        if start is not None:
            self._element += chunk[start:]
            if len(self._element) > MAX_LINE_BYTES:
                # An element this large is junk: drop it and wait for the next one.
                self._element.clear()
                self._depth = 0
                self._in_string = False

    def close(self) -> None:
        """End of stream: an unfinished element is incomplete JSON and counts for nothing."""
        self._element.clear()

    def _dispatch(self) -> None:
        data = bytes(self._element)
        self._element.clear()
        self.events += 1
        self.on_chunk(load_json(data))


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    # The API's JSON accepts the proto's field names as well as their lowerCamelCase form.
    config = body.get("generationConfig", body.get("generation_config"))
    return config if isinstance(config, dict) else {}


class GeminiGenerate(Dialect):
    """`:generateContent`, `:streamGenerateContent` and `:countTokens` (the model is in the
    path and the stream flag fixed by it: see the registry's rows)."""

    def requested_max_tokens(self, body: dict[str, Any]) -> int | None:
        config = _generation_config(body)
        return positive_int(config.get("maxOutputTokens", config.get("max_output_tokens")))

    def asked(self, body: dict[str, Any], model: str) -> Asked:
        return grounding_asked(body, model)

    def usage_from_body(self, body: Any) -> TokenUsage | None:
        return usage_from_answer(body)

    def billing_from_body(self, body: Any) -> Billing:
        return Billing(web_searches=len(answer_search_queries(body)))

    def stream_parser(self) -> GeminiStreamParser:
        return GeminiStreamParser()

    def answer_parser(self, content_type: str, status: int) -> StreamUsageParser | None:
        """SSE with `?alt=sse`; without it a successful stream is a JSON array, relayed as it
        arrives and read element by element."""
        if content_type == "text/event-stream":
            return GeminiStreamParser()
        if content_type == "application/json" and 200 <= status < 300:
            return GeminiArrayStreamParser()
        return None
