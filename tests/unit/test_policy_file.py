"""The policy loader: errors name the file, the line and the key."""

import pytest

from ledger.policy_file import PolicyError, load_policy, parse_policy
from ledger.pricing import Fee
from ledger.tokens import TokenKind


def error(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return str(info.value)


def test_example_policy_loads() -> None:
    policy = load_policy("examples/policy.yaml")
    sonnet = next(m for m in policy.models if m.name == "claude-sonnet-4-5")
    assert sonnet.prices.source == "catalog"
    assert sonnet.prices.detail.endswith(" anthropic/claude-sonnet-4-5")
    assert sonnet.aliases == ("claude-sonnet-4-5-20250929",)
    internal = next(m for m in policy.models if m.name == "sonnet-internal")
    assert internal.prices.detail.endswith(" anthropic/claude-sonnet-4-6")
    own = next(m for m in policy.models if m.name == "gpt-5.4")
    assert own.prices.source == "policy"
    ((_, sheet),) = own.prices.schedule
    assert sheet.thresholds == (272_000,)
    assert sheet.rates[TokenKind.CACHE_READ] == (225_000, 450_000)  # 0.225 USD/1M, exact
    assert sheet.variant("service_tier", "flex") is not None
    assert sheet.fees[Fee.WEB_SEARCH] == 10_000_000
    dave = next(u for u in policy.users if u.username == "dave")
    assert dave.override is not None and dave.override.unlimited


@pytest.mark.parametrize(("text", "expected"), [
    ("limits:\n  enabled: true\n  period: year\n", "p.yaml:3: limits.period: must be one of"),
    ("limits:\n  enabled: yes please\n", "p.yaml:2: limits.enabled: must be true or false"),
    ("users:\n  - username: a\n    limit_usd: 0\n", "p.yaml:3: users[0].limit_usd: must be a "
                                                     "positive USD amount"),
    ("users:\n  - username: a\n    limt_usd: 5\n", "p.yaml:3: users[0].limt_usd: unknown key"),
    ("users:\n  - name: x\n", "p.yaml:2: users[0].username: is required"),
    ("models:\n  - name: m\n    provider: openai\n    pricing:\n      input: -1\n",
     "p.yaml:5: models[0].pricing.input: must not be negative"),
    ("models:\n  - name: m\n    provider: bedrock\n", "p.yaml:3: models[0].provider: must be one"),
    ("models:\n  - {name: m, provider: openai, pricing: none}\n"
     "  - {name: n, provider: openai, aliases: [m]}\n", "'m' already names model 'm'"),
    ("models:\n  - name: x\n  - name: acme-llm-9\n    provider: openai\n",
     "p.yaml:2: models[0].provider: is required"),
    ("models:\n  - name: acme-llm-9\n    provider: openai\n",
     "p.yaml:2: models[0]: no price in the catalog; give pricing, catalog_name or pricing: none"),
    ("models:\n  - name: acme\n    provider: openai\n    catalog_name: acme-llm-9\n",
     "p.yaml:4: models[0].catalog_name: 'acme-llm-9' is not in the catalog for provider openai"),
    ("models:\n  - name: m\n    provider: openai\n    pricing: free\n",
     "p.yaml:4: models[0].pricing: must be catalog, none or a mapping of prices"),
    ("models:\n  - name: m\n    provider: openai\n    pricing:\n      input: 1\n      tiers:\n"
     "        - {above: 272000, input: 2}\n        - above: 200000\n          input: 3\n",
     "p.yaml:8: models[0].pricing.tiers[1].above: thresholds must ascend (200000 after 272000)"),
    ("models:\n  - name: m\n    provider: openai\n    pricing:\n      input: 1\n      tiers:\n"
     "        - above: 1000\n          output: -2\n",
     "p.yaml:8: models[0].pricing.tiers[0].output: must not be negative"),
    ("models:\n  - name: m\n    provider: openai\n    pricing:\n      input: 1\n"
     "      variants:\n        service_tier:\n          flex: {input: -1}\n",
     "p.yaml:8: models[0].pricing.variants.service_tier.flex.input: must not be negative"),
    ("models:\n  - name: m\n    provider: openai\n    pricing:\n      input: 1\n"
     "      tiers:\n        - {input: 2}\n",
     "p.yaml:7: models[0].pricing.tiers[0].above: is required"),
    ("groups:\n  - {name: g}\n  - {name: g}\n", "group 'g' is declared twice"),
    ("limits: [1]\n", "p.yaml:1: limits: must be a mapping"),
    ("limits: {\n", "p.yaml:2: not valid YAML"),
    ("users:\n  - {username: a, limit_usd: 0.0000001}\n", "not a whole number of micro-dollars"),
    ("[1, 2]\n", "the policy file: must be a mapping"),
])
def test_errors_name_file_line_and_key(text: str, expected: str) -> None:
    assert expected in error(text)


def test_missing_file_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy("/nonexistent/policy.yaml")
