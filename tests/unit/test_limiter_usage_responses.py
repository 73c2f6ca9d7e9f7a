"""OpenAI Responses accounting: input_tokens includes cached tokens; output includes reasoning;
the stream's usage is in its terminal event, whichever of the three it is, for any split."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.tokens import TokenUsage
from limiter.relay.dialects.openai_responses import (
    ResponsesStreamParser,
    response_facts,
    responses_usage,
)
from tests.support.agent_replies import Reply, ToolCall
from tests.support.shapes_openai import response_object, responses_events
from tests.support.stream_split import feed_split

USAGE = TokenUsage(input=1500, output=420, cache_read=2048)
REPLY = Reply(text="Two words then several more words of the answer.", usage=USAGE,
              reasoning_tokens=256, service_tier="priority", web_searches=2)
REQUEST = {"model": "gpt-5", "input": "hi", "store": True}
STREAM = "".join(responses_events(REPLY, "gpt-5", "resp_1", REQUEST)).encode()


def test_cached_tokens_are_taken_out_of_input_and_reasoning_not_added() -> None:
    usage = {"input_tokens": 3548, "input_tokens_details": {"cached_tokens": 2048},
             "output_tokens": 420, "output_tokens_details": {"reasoning_tokens": 256},
             "total_tokens": 3968}
    assert responses_usage(usage) == USAGE


@pytest.mark.parametrize("usage", [
    None, "many", [], {}, {"input_tokens": "10"}, {"input_tokens": -1, "output_tokens": True},
])
def test_missing_or_malformed_usage_is_none(usage: object) -> None:
    assert responses_usage(usage) is None


def test_malformed_details_are_ignored_and_cached_never_exceeds_input() -> None:
    assert responses_usage({"input_tokens": 10, "output_tokens": 2,
                            "input_tokens_details": {"cached_tokens": "4"}}) == TokenUsage(
        input=10, output=2)
    assert responses_usage({"input_tokens": 10, "output_tokens": 2,
                            "input_tokens_details": {"cached_tokens": 99}}) == TokenUsage(
        output=2, cache_read=10)


def test_json_answer_gives_id_tier_web_searches_and_usage() -> None:
    body = response_object(REPLY, "gpt-5", "resp_7", status="completed", request=REQUEST)
    facts, usage = response_facts(body)
    assert usage == USAGE
    assert (facts.response_id, facts.service_tier, facts.web_search_calls) == (
        "resp_7", "priority", 2)


def test_answer_without_usage() -> None:
    facts, usage = response_facts({"id": "resp_x", "object": "response", "usage": None})
    assert usage is None and facts.response_id == "resp_x"
    assert response_facts(["not", "an", "object"])[1] is None


def _feed(data: bytes, cuts: list[int]) -> ResponsesStreamParser:
    return feed_split(ResponsesStreamParser(), data, cuts)


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_stream_usage_and_facts_are_the_same_for_any_split(cuts: list[int]) -> None:
    whole, split = _feed(STREAM, []), _feed(STREAM, cuts)
    assert whole.usage == split.usage == USAGE
    assert whole.complete and split.complete and split.output_final
    assert split.facts == whole.facts
    assert (split.facts.response_id, split.facts.service_tier,
            split.facts.web_search_calls) == ("resp_1", "priority", 2)
    assert split.output_text_chars == whole.output_text_chars == len(REPLY.text)


def test_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        assert _feed(STREAM, [cut]).usage == USAGE


def test_tool_call_arguments_count_as_output_text() -> None:
    call = ToolCall("shell", {"command": ["echo", "hi"]})
    data = "".join(responses_events(Reply(tool_call=call), "gpt-5", "resp_2", REQUEST))
    parser = _feed(data.encode(), [])
    assert parser.output_text_chars == len(call.arguments_json)


@pytest.mark.parametrize("terminal", ["response.incomplete", "response.failed"])
def test_incomplete_and_failed_answers_carry_the_usage(terminal: str) -> None:
    data = STREAM.decode().replace("response.completed", terminal)
    if terminal == "response.failed":
        data = data.replace('"status": "completed", "background": false, "error": null',
                            '"status": "failed", "background": false, '
                            '"error": {"code": "server_error", "message": "boom"}')
    parser = _feed(data.encode(), [])
    assert parser.complete and parser.usage == USAGE
    if terminal == "response.failed":
        assert parser.error == {"code": "server_error", "message": "boom"}


def test_stream_cut_before_the_terminal_event_knows_the_id_but_no_usage() -> None:
    cut = STREAM.index(b"event: response.completed")
    parser = _feed(STREAM[:cut], [])
    assert parser.usage is None and not parser.complete and not parser.output_final
    assert parser.facts.response_id == "resp_1"
    assert parser.output_text_chars == len(REPLY.text)


def test_events_without_event_lines_are_read_from_their_type() -> None:
    bare = b"\n".join(line for line in STREAM.split(b"\n") if not line.startswith(b"event:"))
    parser = _feed(bare, [])
    assert parser.usage == USAGE and parser.complete
    assert parser.output_text_chars == len(REPLY.text)


def test_error_event_is_kept() -> None:
    error = {"type": "error", "code": "rate_limit_exceeded", "message": "slow down",
             "param": None, "sequence_number": 3}
    parser = _feed(f"event: error\ndata: {json.dumps(error)}\n\n".encode(), [])
    assert parser.error == error and parser.usage is None


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_chunk_that_completes_an_answer_is_always_flagged_first(data: st.DataObject) -> None:
    """For each terminal event name, split anywhere: `may_complete` flags the chunk on which
    the answer completes and every later one, and no chunk before the terminal event starts."""
    terminal = data.draw(st.sampled_from(["response.completed", "response.incomplete",
                                          "response.failed"]))
    stream = STREAM.replace(b"response.completed", terminal.encode())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=40)))
    parser = ResponsesStreamParser()
    flags, completed_on, previous = [], None, 0
    marker_at = stream.index(terminal.encode())
    for cut in [*cuts, len(stream)]:
        chunk, start = stream[previous:cut], previous
        previous = cut
        flags.append(parser.may_complete(chunk))
        if cut <= marker_at:
            assert not flags[-1] or start + len(chunk) > marker_at
        parser.feed(chunk)
        if parser.complete and completed_on is None:
            completed_on = len(flags) - 1
    assert completed_on is not None and all(flags[completed_on:])


@pytest.mark.parametrize("junk", [
    b"event: response.completed\ndata: {\"response\": 5}\n\n",
    b"event: response.completed\ndata: {\"response\": {\"usage\": [1], \"output\": 3}}\n\n",
    b"event: response.output_item.done\ndata: {\"item\": []}\n\n",
    b"event: response.output_text.delta\ndata: {\"delta\": 7}\n\n",
    b"data: {\"type\": 5}\n\n", b"data: [\n\n", b"\xff\xfe\n\n",
])
def test_junk_never_raises(junk: bytes) -> None:
    parser = _feed(junk, [len(junk) // 2])
    assert parser.usage is None and parser.output_text_chars == 0
