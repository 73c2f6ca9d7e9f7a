"""Anthropic accounting: input excludes cache reads/writes; stream counters are latest, not sums."""

from __future__ import annotations

import json

import pytest

from ledger.tokens import TokenUsage
from limiter.http.errors import BadRequest
from limiter.relay.dialects.anthropic import (
    DEFAULT_VERSION,
    AnthropicMessages,
    AnthropicStreamParser,
)
from tests.support.fake_upstream import Answer, anthropic_events, anthropic_usage_json

ANTHROPIC = AnthropicMessages()

BODY = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 21, "cache_creation_input_tokens": 3000, "cache_read_input_tokens": 9000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
        "output_tokens": 393, "service_tier": "standard",
    },
}


def test_cache_writes_split_by_lifetime_and_reads_separate() -> None:
    assert ANTHROPIC.usage_from_body(BODY) == TokenUsage(
        input=21, output=393, cache_read=9000, cache_write=1000, cache_write_1h=2000)


def test_without_the_split_every_cache_write_is_a_5m_write() -> None:
    body = json.loads(json.dumps(BODY))
    del body["usage"]["cache_creation"]
    assert ANTHROPIC.usage_from_body(body) == TokenUsage(
        input=21, output=393, cache_read=9000, cache_write=3000)


def test_writes_missing_from_the_split_are_billed_not_dropped() -> None:
    body = json.loads(json.dumps(BODY))
    body["usage"]["cache_creation"] = {"ephemeral_1h_input_tokens": 2000}
    assert ANTHROPIC.usage_from_body(body) == TokenUsage(
        input=21, output=393, cache_read=9000, cache_write=1000, cache_write_1h=2000)


def test_plain_usage() -> None:
    assert ANTHROPIC.usage_from_body({"usage": {"input_tokens": 5, "output_tokens": 2}}) == \
        TokenUsage(input=5, output=2)


@pytest.mark.parametrize("body", [
    {}, {"usage": None}, {"usage": []}, {"usage": {}}, None, [1],
    {"usage": {"input_tokens": "5", "output_tokens": -2, "cache_creation": "x"}},
])
def test_missing_or_malformed_usage_is_none(body: object) -> None:
    assert ANTHROPIC.usage_from_body(body) is None


def test_reference_usage_round_trips_through_the_fake_provider_shape() -> None:
    usage = TokenUsage(input=3, output=4, cache_read=5, cache_write=6, cache_write_1h=7)
    assert ANTHROPIC.usage_from_body({"usage": anthropic_usage_json(usage)}) == usage


def _parse(events: list[str]) -> AnthropicStreamParser:
    parser = ANTHROPIC.stream_parser()
    for event in events:
        parser.feed(event.encode())
    parser.close()
    return parser


def test_stream_takes_the_latest_value_of_each_counter_never_the_sum() -> None:
    usage = TokenUsage(input=40, output=512, cache_read=700, cache_write=60, cache_write_1h=30)
    events = anthropic_events(Answer(text="alpha beta", usage=usage), "claude-x")
    # message_delta in these events repeats the whole input side.
    assert '"input_tokens": 40' in events[-2]
    parser = _parse(events)
    assert parser.usage == usage
    assert parser.complete and parser.output_final
    assert parser.output_text_chars == len("alpha beta")


def test_message_delta_with_output_only_keeps_the_input_side() -> None:
    events = [
        'event: message_start\ndata: {"type":"message_start","message":{"usage":'
        '{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}\n\n',
        'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":77,'
        '"input_tokens":null}}\n\n',
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ]
    assert _parse(events).usage == TokenUsage(input=10, output=77, cache_read=5)


def test_stream_cut_after_message_start_has_exact_input_and_provisional_output() -> None:
    usage = TokenUsage(input=40, output=512, cache_read=700)
    parser = _parse(anthropic_events(Answer(text="alpha beta gamma", usage=usage), "c")[:5])
    assert parser.usage == TokenUsage(input=40, output=1, cache_read=700)
    assert not parser.output_final and not parser.complete
    assert parser.output_text_chars == len("alpha beta ")


def test_stream_counts_thinking_and_tool_json() -> None:
    events = [
        'event: content_block_delta\n'
        'data: {"delta":{"type":"thinking_delta","thinking":"hmm"}}\n\n',
        'event: content_block_delta\ndata: {"delta":{"type":"input_json_delta",'
        '"partial_json":"{\\"q\\":"}}\n\n',
        'event: content_block_delta\n'
        'data: {"delta":{"type":"signature_delta","signature":"s"}}\n\n',
    ]
    assert _parse(events).output_text_chars == len("hmm") + len('{"q":')


def test_error_event_and_ping() -> None:
    usage = TokenUsage(input=8, output=100)
    events = anthropic_events(Answer(text="a b", usage=usage), "c")[:4]
    events.append('event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
                  '"message":"Overloaded"}}\n\n')
    parser = _parse(events)
    assert parser.error == {"type": "overloaded_error", "message": "Overloaded"}
    assert parser.usage == TokenUsage(input=8, output=1)
    assert not parser.complete


def test_error_event_with_junk_data() -> None:
    parser = _parse(["event: error\ndata: nope\n\n"])
    assert parser.error == {"type": "error"} and parser.usage is None


def test_request_questions() -> None:
    assert ANTHROPIC.request_model({"model": "claude-haiku-4-5"}) == "claude-haiku-4-5"
    assert ANTHROPIC.requested_max_tokens({"max_tokens": 1024}) == 1024
    assert ANTHROPIC.requested_max_tokens({"max_tokens": 0}) is None
    assert ANTHROPIC.prepare_body(body := {"model": "m", "stream": True}) is body
    with pytest.raises(BadRequest):
        ANTHROPIC.request_model({"messages": []})


def test_the_default_api_version_is_a_default_header() -> None:
    assert ANTHROPIC.default_headers == {"anthropic-version": DEFAULT_VERSION}
