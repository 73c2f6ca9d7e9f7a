"""The policy loader: errors name the file, the line and the key."""

import pytest

from ledger.policy_file import PolicyError, load_policy, parse_policy
from ledger.tokens import TokenKind


def error(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return str(info.value)


def test_example_policy_loads() -> None:
    policy = load_policy("examples/policy.yaml")
    sonnet = next(m for m in policy.models if m.name == "claude-sonnet-4-5")
    assert sonnet.pricing is not None
    assert sonnet.pricing.price(TokenKind.CACHE_READ) == 300_000  # 0.3 USD/1M, exact
    assert sonnet.aliases == ("claude-sonnet-4-5-20250929",)
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
    ("models:\n  - name: m\n    provider: google\n", "p.yaml:3: models[0].provider: must be one"),
    ("models:\n  - {name: m, provider: openai}\n  - {name: n, provider: openai, aliases: [m]}\n",
     "'m' already names model 'm'"),
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
