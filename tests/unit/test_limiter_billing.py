"""What a request asks for that changes its price, and what an answer reports beyond tokens,
as each dialect reads them (the gateway's end of it: tests/integration/test_limiter_billing.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ledger.pricing import Billing
from limiter.relay.dialects.anthropic import AnthropicMessages
from limiter.relay.dialects.base import Asked, SearchCount, estimated_billing
from limiter.relay.dialects.gemini import (
    GeminiArrayStreamParser,
    GeminiGenerate,
    GeminiStreamParser,
)
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
GEMINI = GeminiGenerate()


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
    assert ANTHROPIC.asked(body, "claude-sonnet-4-5") == asked


def one_search_per_answer(service_tier: str | None = None) -> Asked:
    return Asked(service_tier=service_tier, web_searches=1, search_count=SearchCount.PER_ANSWER)


@pytest.mark.parametrize(("body", "model", "asked"), [
    ({"service_tier": "flex"}, "gpt-5", Asked(service_tier="flex")),
    ({"service_tier": "auto"}, "gpt-5", Asked()),
    ({"service_tier": 7}, "gpt-5", Asked()),
    # A search model searches before every answer, with or without its options.
    ({"web_search_options": {}}, "gpt-5-search-api", one_search_per_answer()),
    ({}, "gpt-5-search-api-2025-10-14", one_search_per_answer()),
    ({"service_tier": "priority"}, "gpt-4o-mini-search-preview",
     one_search_per_answer("priority")),
    ({"web_search_options": {"search_context_size": "low"}}, "some-compatible-model",
     one_search_per_answer()),
    ({"web_search_options": None}, "gpt-5", Asked()),
    ({}, "gpt-5-search-apis", Asked()),
])
def test_what_a_chat_completions_request_asks_for(body: dict[str, Any], model: str,
                                                  asked: Asked) -> None:
    assert CHAT.asked(body, model) == asked


GOOGLE_SEARCH: dict[str, Any] = {"tools": [{"google_search": {}}]}


@pytest.mark.parametrize(("body", "model", "asked"), [
    # Gemini 3 and later bill each query, and nothing in a request bounds them.
    (GOOGLE_SEARCH, "gemini-3.5-flash", Asked(web_searches=None)),
    ({"tools": [{"googleSearch": {}}]}, "gemini-3.1-pro-preview", Asked(web_searches=None)),
    # Gemini 2.5 and older bill one grounded prompt at most.
    (GOOGLE_SEARCH, "gemini-2.5-flash", Asked(
        web_searches=1, search_count=SearchCount.PER_GROUNDED_ANSWER)),
    ({"tools": [{"google_search_retrieval": {}}]}, "gemini-1.5-pro", Asked(
        web_searches=1, search_count=SearchCount.PER_GROUNDED_ANSWER)),
    ({"tools": [{"function_declarations": []}]}, "gemini-2.0-flash", Asked(
        search_count=SearchCount.PER_GROUNDED_ANSWER)),
    ({}, "gemini-3.5-flash", Asked()),
])
def test_what_a_gemini_request_asks_for(body: dict[str, Any], model: str, asked: Asked) -> None:
    assert GEMINI.asked(body, model) == asked


@pytest.mark.parametrize(("count", "reported", "billed"), [
    (SearchCount.REPORTED, 3, 3), (SearchCount.REPORTED, 0, 0),
    (SearchCount.PER_GROUNDED_ANSWER, 3, 1), (SearchCount.PER_GROUNDED_ANSWER, 0, 0),
    (SearchCount.PER_ANSWER, 0, 1), (SearchCount.PER_ANSWER, 2, 1),
])
def test_searches_are_billed_as_the_provider_counts_them(count: SearchCount, reported: int,
                                                         billed: int) -> None:
    asked = Asked(search_count=count)
    assert asked.billed(Billing(service_tier="flex", web_searches=reported)) == Billing(
        service_tier="flex", web_searches=billed)


def test_gemini_counts_the_unique_non_empty_queries_of_every_chunk_for_any_split() -> None:
    data = (ANSWERS / "gemini_stream_grounded_array.json").read_bytes()
    for cut in range(0, len(data), 97):
        parser = feed_split(GeminiArrayStreamParser(), data, [cut])
        assert parser.billing == Billing(web_searches=3)
    sse = (ANSWERS / "gemini_stream_grounded.sse").read_bytes()
    assert feed_split(GeminiStreamParser(), sse, [len(sse) // 2]).billing == Billing(
        web_searches=3)  # reported; a Gemini 2.5 request bills it as one
    answer = json.loads((ANSWERS / "gemini_grounded_search.json").read_text())
    assert GEMINI.billing_from_body(answer) == Billing(web_searches=2)
    assert GEMINI.billing_from_body({"candidates": [{"groundingMetadata": {
        "webSearchQueries": "not a list"}}, "junk"]}) == Billing()


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
