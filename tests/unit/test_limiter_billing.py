"""What a request asks for that changes its price, and what an answer reports beyond tokens,
as each dialect reads them (the gateway's end of it: tests/integration/test_limiter_billing.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ledger.pricing import Billing
from limiter.relay.dialects.anthropic import AnthropicMessages
from limiter.relay.dialects.base import Asked, estimated_billing
from limiter.relay.dialects.openai import ChatCompletions
from limiter.relay.dialects.openai_responses import (
    ResponsesStreamParser,
    responses_asked,
    responses_billing,
)
from tests.support.agent_replies import Reply
from tests.support.shapes_openai import responses_events
from tests.support.stream_split import feed_split

ANSWERS = Path(__file__).parents[1] / "fixtures" / "answers"
EXPECTED: dict[str, Any] = json.loads((ANSWERS / "expected.json").read_text())
ANTHROPIC = AnthropicMessages()
CHAT = ChatCompletions()


def search_tool(**fields: Any) -> dict[str, Any]:
    return {"type": "web_search_20250305", "name": "web_search", **fields}


@pytest.mark.parametrize(("body", "asked"), [
    ({}, Asked()),
    ({"service_tier": "auto"}, Asked()),
    ({"service_tier": "standard_only"}, Asked(service_tier="standard")),
    ({"speed": "fast"}, Asked(speed="fast")),
    ({"tools": [search_tool(max_uses=3)]}, Asked(web_searches=3)),
    ({"tools": [search_tool()]}, Asked(web_searches=None)),
    ({"tools": [search_tool(max_uses=2), search_tool(max_uses=4)]}, Asked(web_searches=6)),
    ({"tools": [{"name": "bash", "input_schema": {}}, "junk"]}, Asked()),
])
def test_what_an_anthropic_request_asks_for(body: dict[str, Any], asked: Asked) -> None:
    assert ANTHROPIC.asked(body) == asked


@pytest.mark.parametrize(("body", "asked"), [
    ({"service_tier": "flex"}, Asked(service_tier="flex")),
    ({"service_tier": "auto"}, Asked()),
    ({"service_tier": 7}, Asked()),
])
def test_what_a_chat_completions_request_asks_for(body: dict[str, Any], asked: Asked) -> None:
    assert CHAT.asked(body) == asked


@pytest.mark.parametrize(("body", "asked"), [
    ({"tools": [{"type": "web_search"}]}, Asked(web_searches=None)),
    ({"tools": [{"type": "web_search_preview"}], "service_tier": "priority"},
     Asked(service_tier="priority", web_searches=None)),
    ({"tools": [{"type": "function", "name": "f"}]}, Asked()),
])
def test_what_a_responses_request_asks_for(body: dict[str, Any], asked: Asked) -> None:
    assert responses_asked(body) == asked


def test_a_responses_answer_reports_its_tier_and_one_search_per_call() -> None:
    name = "openai_responses_web_search.json"
    answer = json.loads((ANSWERS / name).read_text())
    assert responses_billing(answer) == Billing(**EXPECTED[name]["billing"])


def test_a_responses_stream_reports_its_tier_and_searches_for_any_split() -> None:
    reply = Reply(text="Searched twice.", service_tier="flex", web_searches=2)
    data = "".join(responses_events(reply, "gpt-5", "resp_1", {"model": "gpt-5"})).encode()
    for cut in range(0, len(data), 97):
        parser = feed_split(ResponsesStreamParser(), data, [cut])
        assert parser.billing == Billing(service_tier="flex", web_searches=2)


def test_a_chat_stream_cut_before_its_usage_still_knows_its_tier() -> None:
    data = (ANSWERS / "openai_chat_stream_priority.sse").read_bytes()
    parser = CHAT.stream_parser()
    parser.feed(data[:data.index(b"\n\n") + 2])  # the first chunk only
    assert parser.usage is None
    assert parser.billing == Billing(service_tier="priority")


def test_an_answer_without_billing_facts_is_standard() -> None:
    assert CHAT.billing_from_body({"usage": {"prompt_tokens": 1}}) == Billing()
    assert ANTHROPIC.billing_from_body(None) == Billing()


def test_an_estimate_takes_what_was_asked_only_where_the_answer_said_nothing() -> None:
    asked = Asked(service_tier="flex", speed="fast", web_searches=4)
    assert estimated_billing(Billing(), asked) == Billing(service_tier="flex", speed="fast")
    reported = Billing(service_tier="priority", web_searches=1)
    assert estimated_billing(reported, asked) == Billing(service_tier="priority", speed="fast",
                                                         web_searches=1)
