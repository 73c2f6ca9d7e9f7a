"""Gemini accounting: the prompt includes cached tokens but not the tool-use prompt; output adds
the thoughts; a stream's chunks carry running totals — the last counts, for any split, as SSE
and as the JSON array read incrementally."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.tokens import TokenUsage
from limiter.http.error_shapes import gemini_error
from limiter.relay.dialects.gemini import (
    GeminiArrayStreamParser,
    GeminiGenerate,
    GeminiStreamParser,
    gemini_usage,
    usage_from_answer,
)
from tests.support.agent_replies import Reply, ToolCall
from tests.support.shapes_gemini import array_stream, generate_body, sse_stream, stream_chunks
from tests.support.stream_split import feed_split

USAGE = TokenUsage(input=900, output=310, cache_read=4096)
REPLY = Reply(text='Several words, with "quotes", {braces} and [brackets] \\ escaped.',
              usage=USAGE, reasoning_tokens=200)
CHUNKS = stream_chunks(REPLY, "gemini-2.5-pro")
SSE = "".join(sse_stream(CHUNKS)).encode()
ARRAY = "".join(array_stream(CHUNKS)).encode()


def test_usage_metadata_fields() -> None:
    metadata = {"promptTokenCount": 5000, "cachedContentTokenCount": 4096,
                "toolUsePromptTokenCount": 12, "candidatesTokenCount": 110,
                "thoughtsTokenCount": 200, "totalTokenCount": 5322}
    assert gemini_usage(metadata) == TokenUsage(input=916, output=310, cache_read=4096)
    assert gemini_usage({"promptTokenCount": 7}) == TokenUsage(input=7)


@pytest.mark.parametrize("metadata", [
    None, [], {}, {"promptTokenCount": "7"}, {"totalTokenCount": 9},
    {"promptTokenCount": -1, "candidatesTokenCount": True},
])
def test_missing_or_malformed_usage_is_none(metadata: object) -> None:
    assert gemini_usage(metadata) is None


def test_generate_content_answer() -> None:
    assert usage_from_answer(generate_body(REPLY, "gemini-2.5-pro")) == USAGE
    assert usage_from_answer({"candidates": []}) is None
    assert usage_from_answer("text") is None


def test_chunks_report_running_totals_not_increments() -> None:
    # The fixture itself: several chunks, each with a usage, rising to the final one.
    outputs = [gemini_usage(chunk["usageMetadata"]).output for chunk in CHUNKS]  # type: ignore[union-attr]
    assert len(outputs) > 3 and outputs == sorted(outputs) and outputs[-1] == USAGE.output


STREAMS = {"sse": (GeminiStreamParser, SSE), "array": (GeminiArrayStreamParser, ARRAY)}


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(STREAMS)), data=st.data())
def test_usage_is_the_last_chunks_for_any_split(kind: str, data: st.DataObject) -> None:
    parser_type, stream = STREAMS[kind]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    whole, split = feed_split(parser_type(), stream, []), feed_split(parser_type(), stream, cuts)
    assert whole.usage == split.usage == USAGE
    assert split.complete and split.output_final
    assert split.events == whole.events == len(CHUNKS)
    assert split.output_text_chars == whole.output_text_chars == len(REPLY.text)


@pytest.mark.parametrize("kind", sorted(STREAMS))
def test_every_byte_boundary(kind: str) -> None:
    parser_type, stream = STREAMS[kind]
    for cut in range(len(stream) + 1):
        parser = feed_split(parser_type(), stream, [cut])
        assert parser.usage == USAGE and parser.events == len(CHUNKS)


def test_array_read_one_byte_at_a_time() -> None:
    parser = feed_split(GeminiArrayStreamParser(), ARRAY, list(range(len(ARRAY))))
    assert parser.usage == USAGE and parser.output_text_chars == len(REPLY.text)


@pytest.mark.parametrize("kind", sorted(STREAMS))
def test_stream_cut_short_keeps_the_running_total_but_is_not_final(kind: str) -> None:
    parser_type, stream = STREAMS[kind]
    cut = stream.index(b"finishReason")
    parser = feed_split(parser_type(), stream[:cut], [])
    assert parser.usage is not None and parser.usage.output < USAGE.output
    assert parser.usage.input == USAGE.input
    assert not parser.complete and not parser.output_final


def test_function_call_args_count_as_output() -> None:
    call = ToolCall("run_shell_command", {"command": "echo hi"})
    chunks = stream_chunks(Reply(tool_call=call), "gemini-2.5-pro")
    parser = feed_split(GeminiArrayStreamParser(), "".join(array_stream(chunks)).encode(), [])
    assert parser.complete and parser.output_text_chars == len(str(call.arguments))


@pytest.mark.parametrize("kind", sorted(STREAMS))
def test_error_chunk_is_kept(kind: str) -> None:
    error = {"error": {"code": 429, "message": "Resource exhausted", "status":
                       "RESOURCE_EXHAUSTED"}}
    data = (f"data: {json.dumps(error)}\n\n" if kind == "sse" else json.dumps([error])).encode()
    parser = feed_split(STREAMS[kind][0](), data, [3])
    assert parser.error == error["error"] and parser.usage is None


def test_array_junk_never_raises_and_an_overlong_element_is_dropped() -> None:
    for junk in (b"]]]}}}", b'[{"a": "\\', b"[1, 2, {", b'{"usageMetadata": 5}', b"\xff{\xfe}",
                 b'["x", {"candidates": [7, {"content": 3}]}]'):
        parser = feed_split(GeminiArrayStreamParser(), junk, [len(junk) // 2])
        assert parser.usage is None and parser.output_text_chars == 0
    parser = GeminiArrayStreamParser()
    parser.feed(b'[{"x": "' + b"a" * (8 * 1024 * 1024 + 1))
    parser.feed(b'"},')
    parser.feed(json.dumps(CHUNKS[-1]).encode() + b"]")
    assert parser.usage == USAGE


@pytest.mark.parametrize(("body", "cap"), [
    ({"generationConfig": {"maxOutputTokens": 512}}, 512),
    ({"generation_config": {"max_output_tokens": 64}}, 64),
    ({"generationConfig": {"maxOutputTokens": 0}}, None),
    ({"generationConfig": "junk"}, None),
    ({}, None),
])
def test_output_cap_from_the_generation_config(body: dict[str, object], cap: int | None) -> None:
    assert GeminiGenerate().requested_max_tokens(body) == cap


@pytest.mark.parametrize(("content_type", "status", "parser"), [
    ("text/event-stream", 200, GeminiStreamParser),
    ("application/json", 200, GeminiArrayStreamParser),
    ("application/json", 400, None),
    ("text/html", 200, None),
])
def test_a_stream_is_read_by_its_answers_content_type(content_type: str, status: int,
                                                      parser: type | None) -> None:
    chosen = GeminiGenerate().answer_parser(content_type, status)
    assert (type(chosen) if chosen is not None else None) is parser


def test_error_shape_is_the_gemini_apis() -> None:
    assert gemini_error(429, "rate_limited", "Slow down.") == {"error": {
        "code": 429, "message": "Slow down.", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                     "reason": "rate_limited", "domain": "agentmeter"}]}}
    assert gemini_error(418, "teapot", "No.")["error"]["status"] == "UNKNOWN"
