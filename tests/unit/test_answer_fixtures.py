"""The answer fixtures (tests/fixtures/answers) say what genai-prices reads from them.

The limiter's parsers are tested against `expected.json`; this checks that file against the
catalog's own reading of the same answers, so a fixture and its expectation cannot drift apart.
Differences on purpose, where genai-prices reads no search count: the expectation counts one
search per OpenAI Responses `web_search_call` item, one per Chat Completions search answer (its
`url_citation` annotations show the search, not a count), and Gemini's grounding as Google bills
it: the unique non-empty `webSearchQueries` of the answer (Gemini 3), at most one (Gemini 2.5).
A JSON-array stream is read at its last element, which carries the final usage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from genai_prices import extract_usage

from ledger.pricing import Billing
from ledger.tokens import TokenUsage

ANSWERS = Path(__file__).parents[1] / "fixtures" / "answers"
EXPECTED = json.loads((ANSWERS / "expected.json").read_text())
FLAVOR = {"POST /v1/messages": "default", "POST /v1/chat/completions": "chat",
          "POST /v1/responses": "responses", "google": "default"}
JSON_ANSWERS = sorted(name for name in EXPECTED if name.endswith(".json"))


@pytest.mark.parametrize("name", JSON_ANSWERS)
def test_expected_usage_is_what_the_catalog_reads(name: str) -> None:
    expected = EXPECTED[name]
    loaded = json.loads((ANSWERS / name).read_text())
    chunks = loaded if isinstance(loaded, list) else [loaded]
    answer = chunks[-1]
    flavor = FLAVOR.get(expected["route"]) or FLAVOR[expected["provider"]]
    read = extract_usage(answer, provider_id=expected["provider"], api_flavor=flavor).usage
    usage = TokenUsage(**expected["usage"])
    billing = Billing(**expected["billing"])
    assert read.input_tokens == usage.input + usage.cache_read + usage.cache_write + (
        usage.cache_write_1h)
    assert (read.output_tokens, read.cache_read_tokens) == (usage.output, usage.cache_read)
    assert read.cache_write_1h_tokens == usage.cache_write_1h
    if expected["provider"] == "anthropic":
        assert read.web_searches == billing.web_searches
        assert answer["usage"]["service_tier"] == billing.service_tier
    elif expected["provider"] == "google":
        queries = {query for chunk in chunks for candidate in chunk["candidates"]
                   for query in candidate.get("groundingMetadata", {}).get("webSearchQueries", ())
                   if query}
        per_prompt = "/models/gemini-2." in expected["route"]
        assert billing.web_searches == (min(len(queries), 1) if per_prompt else len(queries))
        assert billing.service_tier is None
    elif expected["route"] == "POST /v1/chat/completions" and billing.web_searches:
        annotations = answer["choices"][0]["message"]["annotations"]
        assert billing.web_searches == 1
        assert [a["type"] for a in annotations] == ["url_citation"]
        assert answer["service_tier"] == billing.service_tier
    else:
        calls = [item for item in answer.get("output", []) if item["type"] == "web_search_call"]
        assert len(calls) == billing.web_searches
        assert answer["service_tier"] == billing.service_tier


def test_every_fixture_has_an_expectation() -> None:
    files = {path.name for path in ANSWERS.iterdir() if path.suffix in (".json", ".sse")}
    assert files - {"expected.json"} == set(EXPECTED)
