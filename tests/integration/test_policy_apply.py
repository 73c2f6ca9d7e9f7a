"""`apply`: the ledger equals the file afterwards; removals never delete history."""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select

from ledger.catalog import all_models, find_model
from ledger.engine import create_sync_engine
from ledger.limit_store import load_limit_config
from ledger.limits import LimitSource
from ledger.policy_file import PolicyError
from ledger.schema import group_members, messages, users
from ledger.settings import DatabaseSettings
from ledger.spend import limit_status
from ledger.tokens import TokenUsage
from ledger.users import get_user
from tests.support.ledger_seed import POLICY, apply_text, record

NOW = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    yield engine
    engine.dispose()


def apply(engine: Engine, text: str) -> list[str]:
    with engine.begin() as conn:
        return apply_text(conn, text)


def source(engine: Engine, username: str) -> tuple[int | None, LimitSource]:
    with engine.connect() as conn:
        s = limit_status(conn, get_user(conn, username).id, NOW)
        return s.limit_micros, s.limit_source


def test_applying_the_same_file_twice_changes_nothing(engine: Engine) -> None:
    assert apply(engine, POLICY)
    assert apply(engine, POLICY) == []


def test_removals_drop_overrides_limits_memberships_and_disable_models(engine: Engine) -> None:
    apply(engine, POLICY)
    record(engine, "alice", "gpt-5", TokenUsage(input=10), NOW, provider="openai")
    smaller = """
limits: {enabled: true, default_limit_usd: 50}
groups:
  - {name: ml, members: [bob]}
users:
  - {username: bob, name: Bob Builder}
models:
  - {name: claude-sonnet-4-5, provider: anthropic, pricing: {input: 3, output: 15}}
"""
    changes = apply(engine, smaller)
    assert "user alice: limit $500.00 -> none" in changes
    assert "group ml: limit $200.00 -> none" in changes
    assert "group ml: member alice removed" in changes
    assert "model gpt-5: no longer declared, disabled" in changes
    assert "model claude-sonnet-4-5: alias claude-sonnet-4-5-20250929 removed" in changes
    assert source(engine, "alice") == (50_000_000, LimitSource.DEFAULT)
    assert source(engine, "dave") == (50_000_000, LimitSource.DEFAULT)
    with engine.connect() as conn:
        # Nothing with history is deleted.
        assert get_user(conn, "alice").name == "Alice Liddell"
        assert conn.execute(select(func.count()).select_from(messages)).scalar_one() == 1
        gpt5 = find_model(conn, "gpt-5")
        assert gpt5 is not None and not gpt5.enabled
        assert find_model(conn, "claude-sonnet-4-5-20250929") is None
        members = conn.execute(select(users.c.username).join(
            group_members, group_members.c.user_id == users.c.id)).scalars().all()
        assert members == ["bob"]
    # Declaring it again brings it back, and the file wins over admin changes.
    apply(engine, POLICY)
    assert source(engine, "alice") == (500_000_000, LimitSource.USER)
    with engine.connect() as conn:
        assert {m.name for m in all_models(conn) if m.enabled} == {
            "claude-sonnet-4-5", "gpt-5", "mystery-model"}


def test_limits_section_omitted_means_the_defaults(engine: Engine) -> None:
    apply(engine, POLICY)
    apply(engine, "users: [{username: alice}]")
    with engine.connect() as conn:
        config = load_limit_config(conn)
        assert not config.enabled and config.default_limit_micros is None


def test_a_bad_file_writes_nothing(engine: Engine) -> None:
    apply(engine, POLICY)
    bad = POLICY.replace("limit_usd: 500", "limit_usd: -5")
    with pytest.raises(PolicyError, match=r"test-policy.yaml:\d+: users\[0\].limit_usd"):
        apply(engine, bad)
    assert source(engine, "alice") == (500_000_000, LimitSource.USER)


def test_dry_run_shows_changes_and_rolls_back(engine: Engine) -> None:
    apply(engine, POLICY)
    with engine.connect() as conn:
        tx = conn.begin()
        changes = apply_text(conn, POLICY.replace("limit_usd: 500", "limit_usd: 600"))
        tx.rollback()
    assert changes == ["user alice: limit $500.00 -> $600.00"]
    assert source(engine, "alice") == (500_000_000, LimitSource.USER)
