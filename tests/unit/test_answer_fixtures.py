"""The answer fixtures (tests/fixtures/answers) say what genai-prices reads from them.

The limiter's parsers are tested against `expected.json`; this checks that file against the
catalog's own reading of the same answers, so a fixture and its expectation cannot drift apart.
One difference on purpose: genai-prices does not count OpenAI Responses `web_search_call` items;
the expectation counts one search per item.
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
          "POST /v1/responses": "responses"}
JSON_ANSWERS = sorted(name for name in EXPECTED if name.endswith(".json"))


@pytest.mark.parametrize("name", JSON_ANSWERS)
def test_expected_usage_is_what_the_catalog_reads(name: str) -> None:
    expected = EXPECTED[name]
    answer = json.loads((ANSWERS / name).read_text())
    read = extract_usage(answer, provider_id=expected["provider"],
                         api_flavor=FLAVOR[expected["route"]]).usage
    usage = TokenUsage(**expected["usage"])
    billing = Billing(**expected["billing"])
    assert read.input_tokens == usage.input + usage.cache_read + usage.cache_write + (
        usage.cache_write_1h)
    assert (read.output_tokens, read.cache_read_tokens) == (usage.output, usage.cache_read)
    assert read.cache_write_1h_tokens == usage.cache_write_1h
    if expected["provider"] == "anthropic":
        assert read.web_searches == billing.web_searches
        assert answer["usage"]["service_tier"] == billing.service_tier
    else:
        calls = [item for item in answer.get("output", []) if item["type"] == "web_search_call"]
        assert len(calls) == billing.web_searches
        assert answer["service_tier"] == billing.service_tier


def test_every_fixture_has_an_expectation() -> None:
    files = {path.name for path in ANSWERS.iterdir() if path.suffix in (".json", ".sse")}
    assert files - {"expected.json"} == set(EXPECTED)
