"""OpenAI accounting: prompt_tokens includes cache reads/writes; completion includes reasoning."""

from __future__ import annotations

import json

import pytest

from ledger.tokens import TokenUsage
from limiter.http.errors import BadRequest
from limiter.relay.body import parse_json_object
from limiter.relay.dialects.openai import ChatCompletions, OpenAIStreamParser
from tests.support.fake_upstream import Answer, openai_events, openai_usage_json

OPENAI = ChatCompletions()

# Shaped like a real answer of a reasoning model with prompt caching.
BODY = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "o4-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0},
    },
}


def test_cached_tokens_are_taken_out_of_input_and_reasoning_not_added() -> None:
    assert OPENAI.usage_from_body(BODY) == TokenUsage(input=86, output=300, cache_read=1920)


def test_cache_write_tokens_are_taken_out_of_input() -> None:
    body = json.loads(json.dumps(BODY))
    body["usage"]["prompt_tokens_details"]["cache_write_tokens"] = 50
    assert OPENAI.usage_from_body(body) == TokenUsage(input=36, output=300, cache_read=1920,
                                                      cache_write=50)


def test_usage_without_details() -> None:
    body = {"usage": {"prompt_tokens": 10, "completion_tokens": 4}}
    assert OPENAI.usage_from_body(body) == TokenUsage(input=10, output=4)


@pytest.mark.parametrize("body", [
    {}, {"usage": None}, {"usage": "many"}, {"usage": {}}, [], None, "text",
    {"usage": {"prompt_tokens": "10", "completion_tokens": -3}},
    {"usage": {"prompt_tokens": True}},
])
def test_missing_or_malformed_usage_is_none(body: object) -> None:
    assert OPENAI.usage_from_body(body) is None


def test_malformed_details_are_ignored() -> None:
    body = {"usage": {"prompt_tokens": 10, "completion_tokens": 2,
                      "prompt_tokens_details": {"cached_tokens": "4"}}}
    assert OPENAI.usage_from_body(body) == TokenUsage(input=10, output=2)


def test_reference_usage_round_trips_through_the_fake_provider_shape() -> None:
    usage = TokenUsage(input=7, output=11, cache_read=5, cache_write=3)
    assert OPENAI.usage_from_body({"usage": openai_usage_json(usage, 6)}) == usage


def _parse(events: list[str]) -> OpenAIStreamParser:
    parser = OPENAI.stream_parser()
    for event in events:
        parser.feed(event.encode())
    parser.close()
    return parser


def test_stream_usage_comes_from_the_last_chunk() -> None:
    usage = TokenUsage(input=30, output=20, cache_read=100, cache_write=8)
    parser = _parse(openai_events(Answer(text="one two three", usage=usage,
                                         reasoning_tokens=15), "gpt-x", True))
    assert parser.usage == usage
    assert parser.complete and parser.output_final
    assert parser.output_text_chars == len("one two three")


def test_stream_without_include_usage_has_no_usage_but_completes() -> None:
    parser = _parse(openai_events(Answer(text="a b"), "gpt-x", False))
    assert parser.usage is None and not parser.output_final
    assert parser.complete
    assert parser.output_text_chars == 3


def test_stream_cut_before_usage_is_incomplete() -> None:
    parser = _parse(openai_events(Answer(text="a b c"), "gpt-x", True)[:3])
    assert parser.usage is None and not parser.complete
    assert parser.output_text_chars == len("a b ")


def test_stream_counts_reasoning_and_tool_call_text() -> None:
    chunk = {"choices": [{"index": 0, "delta": {
        "reasoning_content": "think", "content": "ok",
        "tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}]}
    parser = _parse([f"data: {json.dumps(chunk)}\n\n"])
    assert parser.output_text_chars == len("think") + len("ok") + len('{"a":1}')


def test_stream_error_event_is_kept_with_the_usage_before_it() -> None:
    events = [
        'data: {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}\n\n',
        'data: {"error": {"message": "boom", "type": "server_error"}}\n\n',
    ]
    parser = _parse(events)
    assert parser.error == {"message": "boom", "type": "server_error"}
    assert parser.usage == TokenUsage(input=9, output=3)
    assert not parser.complete


def test_prepare_body_asks_for_stream_usage_without_touching_the_original() -> None:
    body = {"model": "m", "stream": True, "stream_options": {"other": 1}}
    prepared = OPENAI.prepare_body(body)
    assert prepared["stream_options"] == {"other": 1, "include_usage": True}
    assert body["stream_options"] == {"other": 1}


def test_prepare_body_overrides_include_usage_false() -> None:
    prepared = OPENAI.prepare_body({"model": "m", "stream": True,
                                    "stream_options": {"include_usage": False}})
    assert prepared["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("body", [
    {"model": "m"}, {"model": "m", "stream": False},
    {"model": "m", "stream": True, "stream_options": {"include_usage": True}},
])
def test_prepare_body_leaves_other_bodies_as_they_are(body: dict[str, object]) -> None:
    assert OPENAI.prepare_body(body) is body


def test_request_questions() -> None:
    assert OPENAI.request_model({"model": "gpt-4.1"}) == "gpt-4.1"
    assert OPENAI.is_stream({"stream": True}) and not OPENAI.is_stream({"stream": "yes"})
    assert OPENAI.requested_max_tokens({"max_completion_tokens": 500, "max_tokens": 9}) == 500
    assert OPENAI.requested_max_tokens({"max_tokens": 9}) == 9
    assert OPENAI.requested_max_tokens({"max_tokens": "9"}) is None
    assert OPENAI.requested_max_tokens({}) is None


@pytest.mark.parametrize("body", [{}, {"model": 4}, {"model": ""}, {"model": None}])
def test_request_without_a_model_is_a_bad_request(body: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        OPENAI.request_model(body)


def test_a_delta_whose_text_is_a_json_key_name_is_still_counted() -> None:
    chunks = [{"choices": [{"index": 0, "delta": {"content": "usage"}}], "usage": None},
              {"choices": [{"index": 0, "delta": {"content": "error"}}]},
              {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}]
    parser = _parse([f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks])
    assert parser.output_text_chars == 10
    assert parser.usage == TokenUsage(input=4, output=2) and parser.error is None


@pytest.mark.parametrize("raw", [
    b'{"model":"m","stream":true,"messages":[{"role":"user","content":"}"}]}',
    b'{\n  "model": "m",\n  "stream": true\n}\n\r\n',
    bytearray(b'{"model": "m", "stream": true}'),
])
def test_stream_usage_option_is_spliced_into_the_clients_bytes(raw: bytes) -> None:
    body = json.loads(raw)
    payload = OPENAI.upstream_payload(body, raw)
    assert json.loads(payload) == OPENAI.prepare_body(body)
    assert payload.startswith(bytes(raw).rstrip()[:-1])


def test_payload_is_the_clients_bytes_when_nothing_changes() -> None:
    raw = b'{"model": "m",  "messages": []}'
    assert OPENAI.upstream_payload(json.loads(raw), raw) is raw
    streamed = b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
    assert OPENAI.upstream_payload(json.loads(streamed), streamed) is streamed


def test_payload_is_re_encoded_when_options_must_change_or_bytes_are_missing() -> None:
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": False},
            "messages": [{"role": "user", "content": "h\u00e9 \ud800"}]}
    raw = json.dumps(body).encode()
    assert json.loads(OPENAI.upstream_payload(body, raw))["stream_options"] == {
        "include_usage": True}
    assert json.loads(OPENAI.upstream_payload({"model": "m", "stream": True}, None)) == {
        "model": "m", "stream": True, "stream_options": {"include_usage": True}}
    # A body that does not end like an object (cannot come from a JSON object) is re-encoded.
    assert json.loads(OPENAI.upstream_payload({"model": "m", "stream": True}, b'{"a":1} x'))[
        "stream_options"] == {"include_usage": True}


def test_a_re_encoded_payload_keeps_integers_beyond_64_bits_exactly() -> None:
    """The request path reads JSON with orjson, which turns such integers into floats; what
    goes upstream is the client's numbers as written."""
    raw = (b'{"model":"m","stream":true,"stream_options":{"include_usage":false},'
           b'"seed":123456789012345678901234567890,"messages":[]}')
    body = parse_json_object(raw)
    assert isinstance(body["seed"], float)
    sent = json.loads(OPENAI.upstream_payload(body, raw))
    assert sent["seed"] == 123456789012345678901234567890
    assert sent["stream_options"] == {"include_usage": True}
