"""The policy loader against hostile files: a `PolicyError` naming the place, or a usable policy.

Whatever the text — not YAML, YAML of the wrong shape, plausible keys with hostile values (huge
amounts, NaN, names longer than the ledger's columns, NUL bytes) — `parse_policy` either returns
a Policy or raises `PolicyError` with a short message that names the file; never another
exception, never a traceback in `agentmeter apply`, and never a policy `apply` cannot write.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.engine import create_sync_engine
from ledger.policy_apply import apply_policy
from ledger.policy_file import Policy, PolicyError, parse_policy
from ledger.settings import DatabaseSettings

MIB = 1024 * 1024
FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def outcome(text: str) -> Policy | PolicyError:
    try:
        return parse_policy(text, "hostile.yaml")
    except PolicyError as exc:
        message = str(exc)
        assert message.startswith("hostile.yaml"), message
        assert len(message) < 600, message[:600]
        assert "Traceback" not in message
        return exc


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from([0, -1, 10**30, 2**63, "1e999999", "1e400", "-0", "0.0000001", "NaN",
                     "unlimited", "day", "month", "lowest", "openai", "anthropic", "\x00",
                     "x" * 2000, "1" * 5000]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=10)
NAMES = st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["a", "b", "x" * 300,
                                                                       "y" * 1025, "n\x00"]))


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, strategy, VALUES)


DOCUMENTS = st.fixed_dictionaries({}, optional={
    "limits": maybe(st.fixed_dictionaries({}, optional={
        "enabled": maybe(st.booleans()), "period": maybe(st.sampled_from(["day", "week",
                                                                             "month"])),
        "default_limit_usd": VALUES, "group_policy": maybe(st.sampled_from(["lowest",
                                                                             "highest"]))})),
    "groups": maybe(st.lists(st.fixed_dictionaries({"name": maybe(NAMES)}, optional={
        "limit_usd": VALUES, "members": maybe(st.lists(NAMES, max_size=3))}), max_size=3)),
    "users": maybe(st.lists(st.fixed_dictionaries({"username": maybe(NAMES)}, optional={
        "name": maybe(NAMES), "email": maybe(NAMES), "limit_usd": VALUES}), max_size=3)),
    "models": maybe(st.lists(st.fixed_dictionaries(
        {"name": maybe(NAMES), "provider": maybe(st.sampled_from(["openai", "anthropic"]))},
        optional={"aliases": maybe(st.lists(NAMES, max_size=2)), "enabled": VALUES,
                  "max_output_tokens": VALUES,
                  "pricing": maybe(st.fixed_dictionaries({}, optional={
                      k: VALUES for k in ("input", "output", "cache_read", "cache_write",
                                          "cache_write_1h")}))}), max_size=3)),
})


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(
    lambda b: b.decode("utf-8", "replace"))))
def test_any_text_is_a_policy_or_a_policy_error(text: str) -> None:
    outcome(text)


@FUZZ
@given(text=st.lists(st.sampled_from([
    "limits:", "  enabled: true", "  period: [", "groups:", "  - name: g", "  - {name: &a x}",
    "users:", "  - username: *a", "    limit_usd: 1e999999", "models:", "  - name: m",
    "    provider: openai", "    pricing: {input: .inf}", "    aliases: [m, m]", "- 1",
    "!!python/object:os.system {}", "? [a, b]\n: 1", "%YAML 1.1", "---", "...", "\t- x",
    "  - username: 'a\\0b'", "  default_limit_usd: !!float nan", "users: {a: 1}",
]), max_size=12).map("\n".join))
def test_yaml_fragments_are_a_policy_or_a_policy_error(text: str) -> None:
    outcome(text)


@pytest.fixture(scope="module")
def apply_engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One migrated SQLite ledger; each example applies inside a transaction rolled back."""
    from ledger.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('hostile-policy') / 'ledger.db'}"
    upgrade(url)
    engine = create_sync_engine(DatabaseSettings(url=url))
    yield engine
    engine.dispose()


@FUZZ
@given(document=DOCUMENTS)
def test_structured_documents_parse_and_apply_or_are_refused(
        apply_engine: Any, document: dict[str, Any]) -> None:
    parsed = outcome(yaml.safe_dump(document, allow_unicode=True))
    if isinstance(parsed, PolicyError):
        return
    # Whatever the loader accepts, `apply` can write: no overflow, no value too long.
    with apply_engine.connect() as conn:
        transaction = conn.begin()
        try:
            apply_policy(conn, parsed)
        finally:
            transaction.rollback()


@pytest.mark.parametrize(("text", "expected"), [
    ("users:\n  - username: " + "u" * MIB + "\n",
     "hostile.yaml:2: users[0].username: must be at most 1024 characters"),
    ("users:\n  - username: a\n    name: " + "n" * 2000 + "\n",
     "hostile.yaml:3: users[0].name: must be at most 1024 characters"),
    ("groups:\n  - name: g\n    members: [" + "m" * MIB + "]\n",
     "hostile.yaml:3: groups[0].members: must be at most 1024 characters"),
    ("groups:\n  - name: " + "g" * 256 + "\n", "groups[0].name: must be at most 255"),
    ("models:\n  - name: m\n    provider: openai\n    aliases: [" + "a" * 300 + "]\n",
     "models[0].aliases: must be at most 255"),
    ("users:\n  - username: \"a\\0b\"\n", "users[0].username: must not contain NUL"),
    ("users:\n  - username: a\n    limit_usd: \"1e999999\"\n",
     "users[0].limit_usd: amount is larger than the ledger can hold"),
    ("limits:\n  default_limit_usd: 1" + "0" * 30 + "\n",
     "limits.default_limit_usd: amount is larger than the ledger can hold"),
    ("models:\n  - name: m\n    provider: openai\n    pricing: {input: \"9e99999999\"}\n",
     "models[0].pricing.input: amount is larger than the ledger can hold"),
    ("models:\n  - name: m\n    provider: openai\n    max_output_tokens: 99999999999\n",
     "models[0].max_output_tokens: must be a positive integer up to"),
    ("users:\n  - username: a\n    limit_usd: .nan\n", "users[0].limit_usd: not a finite"),
])
def test_hostile_values_get_a_short_clear_error(text: str, expected: str) -> None:
    started = time.perf_counter()
    error = outcome(text)
    assert isinstance(error, PolicyError)
    assert expected in str(error), str(error)
    assert time.perf_counter() - started < 2.0  # no quadratic big-number work


def test_names_at_the_column_limits_are_accepted(apply_engine: Any) -> None:
    text = yaml.safe_dump({
        "users": [{"username": "u" * 1024, "name": "n" * 1024, "email": "e" * 1024,
                   "limit_usd": "9223372036854"}],
        "groups": [{"name": "g" * 255, "members": ["u" * 1024]}],
        "models": [{"name": "m" * 255, "provider": "openai", "aliases": ["a" * 255],
                    "max_output_tokens": 2**31 - 1, "pricing": "none"}],
    })
    parsed = outcome(text)
    assert isinstance(parsed, Policy)
    with apply_engine.connect() as conn:
        transaction = conn.begin()
        apply_policy(conn, parsed)
        transaction.rollback()
