"""`agentmeter coder sync` against a fake Coder over real HTTP, into a real ledger."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from ledger.engine import create_sync_engine
from ledger.limit_store import effective_limit
from ledger.limits import LimitSource
from ledger.schema import group_members, groups, messages, users
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from tests.support.cli_process import Finished, agentmeter
from tests.support.fake_coder import FakeCoder
from tests.support.ledger_seed import record


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    yield engine
    engine.dispose()


class Sync:
    def __init__(self, coder: FakeCoder, url: str) -> None:
        admin = coder.add_user("admin", "Site Admin", "admin@example.com")
        self.env = {"AGENTMETER_DATABASE_URL": url, "AGENTMETER_CODER_URL": coder.base_url,
                    "AGENTMETER_CODER_TOKEN": coder.token_for(admin)}

    async def __call__(self, *args: str, ok: bool = True) -> Finished:
        return await agentmeter(self.env, "coder", "sync", *args, ok=ok)


def _users(engine: Engine) -> dict[str, tuple[str, str, bool, str | None]]:
    with engine.connect() as conn:
        return {r.username: (r.name, r.email, bool(r.suspended), r.coder_id)
                for r in conn.execute(select(users))}


def _groups(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        found: dict[str, list[str]] = {r.name: [] for r in conn.execute(select(groups.c.name))}
        for row in conn.execute(select(groups.c.name, users.c.username)
                                .join(group_members, group_members.c.group_id == groups.c.id)
                                .join(users, users.c.id == group_members.c.user_id)):
            found[row.name].append(row.username)
    return {name: sorted(members) for name, members in found.items()}


async def test_users_and_groups_follow_coder_and_history_stays(
        coder: FakeCoder, engine: Engine, ledger_url: str) -> None:
    sync = Sync(coder, ledger_url)
    alice = coder.add_user("alice", "Alice Liddell", "alice@example.com")
    bob = coder.add_user("bob", "Bob Builder")
    carol = coder.add_user("carol", "Carol Danvers", status="suspended")
    research = coder.add_organization("research")
    dave = coder.add_user("dave", "Dave Lister", orgs=(research,))
    ml = coder.add_group("ml", [alice, bob])
    gpu = coder.add_group("gpu", [dave], org=research)

    first = await sync()

    assert "group ml: member alice added" in first.stdout
    assert _users(engine) == {
        "admin": ("Site Admin", "admin@example.com", False, coder.users_by_name("admin").id),
        "alice": ("Alice Liddell", "alice@example.com", False, alice.id),
        "bob": ("Bob Builder", "bob@example.com", False, bob.id),
        "carol": ("Carol Danvers", "carol@example.com", True, carol.id),
        "dave": ("Dave Lister", "dave@example.com", False, dave.id),
    }
    # "Everyone" of each organisation is not copied; a non-default organisation prefixes.
    assert _groups(engine) == {"ml": ["alice", "bob"], "research/gpu": ["dave"]}
    assert (await sync()).stdout.strip() == "nothing to change"

    record(engine, "dave", "claude-sonnet-4-5", TokenUsage(input=1000, output=100),
           datetime.now(UTC))
    bob.username, bob.name = "robert", "Robert Builder"
    alice.email = "alice@wonderland.example"
    carol.status = "active"
    coder.add_group("infra", [carol])
    ml.name, ml.member_ids = "ml-team", []
    del coder.groups[gpu.id]
    del coder.users[dave.id]

    preview = await sync("--dry-run")
    assert "~ user bob: renamed to robert" in preview.stdout
    assert "~ group ml: renamed to ml-team" in preview.stdout
    assert _groups(engine)["ml"] == ["alice", "bob"]  # a dry run writes nothing

    await sync()

    after = _users(engine)
    assert after["robert"] == ("Robert Builder", "bob@example.com", False, bob.id)
    assert "bob" not in after
    assert after["alice"][1] == "alice@wonderland.example"
    assert after["carol"][2] is False
    # dave left Coder: kept with his history, without memberships
    assert "dave" in after
    assert _groups(engine) == {"ml-team": [], "research/gpu": [], "infra": ["carol"]}
    with engine.connect() as conn:
        assert conn.execute(select(messages.c.id)).all() != []
    assert (await sync()).stdout.strip() == "nothing to change"


async def test_policy_limits_apply_to_synced_groups_without_touching_members(
        coder: FakeCoder, engine: Engine, ledger_url: str, tmp_path: Path) -> None:
    sync = Sync(coder, ledger_url)
    alice = coder.add_user("alice", "Alice Liddell")
    coder.add_group("ml", [alice])
    await sync()
    policy = tmp_path / "policy.yaml"
    policy.write_text("limits: {enabled: true, default_limit_usd: 50}\n"
                      "groups:\n  - {name: ml, limit_usd: 200, members: [bob]}\n"
                      "users:\n  - {username: alice, name: Somebody Else}\n")

    applied = await agentmeter(sync.env, "apply", "-f", str(policy))

    assert "group ml: limit none -> $200.00" in applied.stdout
    assert "member" not in applied.stdout and "name/email" not in applied.stdout
    assert _groups(engine) == {"ml": ["alice"]}
    assert _users(engine)["alice"][0] == "Alice Liddell"  # Coder wins on names
    with engine.connect() as conn:
        alice_id = conn.execute(select(users.c.id).where(users.c.username == "alice")).scalar()
        limit = effective_limit(conn, int(alice_id))
    assert (limit.limit_micros, limit.source) == (200_000_000, LimitSource.GROUP)
    assert (await sync()).stdout.strip() == "nothing to change"


async def test_every_page_of_users_is_read(coder: FakeCoder, engine: Engine,
                                           ledger_url: str) -> None:
    sync = Sync(coder, ledger_url)
    for i in range(250):
        coder.add_user(f"user{i:03d}")

    await sync()

    assert len(_users(engine)) == 251
    assert coder.calls["users"] == 3  # pages of 100


async def test_coder_refusing_or_missing_is_one_line_and_writes_nothing(
        coder: FakeCoder, engine: Engine, ledger_url: str) -> None:
    sync = Sync(coder, ledger_url)
    sync.env["AGENTMETER_CODER_TOKEN"] = "0123456789-abcdefghijklmnopqrstuv"
    refused = await sync(ok=False)
    assert "401" in refused.stderr

    del sync.env["AGENTMETER_CODER_TOKEN"]
    unset = await sync(ok=False)
    assert "coder.token" in unset.stderr

    sync.env["AGENTMETER_CODER_TOKEN"] = "x"
    await coder.close()
    down = await sync(ok=False)
    assert "Cannot connect" in down.stderr or "ClientConnectorError" in down.stderr
    assert _users(engine) == {}


async def test_a_group_made_again_under_its_name_keeps_its_limit(
        coder: FakeCoder, engine: Engine, ledger_url: str, tmp_path: Path) -> None:
    sync = Sync(coder, ledger_url)
    alice = coder.add_user("alice")
    bob = coder.add_user("bob")
    old = coder.add_group("ml", [alice])
    await sync()
    policy = tmp_path / "policy.yaml"
    policy.write_text("limits: {enabled: true}\ngroups:\n  - {name: ml, limit_usd: 200}\n")
    await agentmeter(sync.env, "apply", "-f", str(policy))
    del coder.groups[old.id]
    new = coder.add_group("ml", [bob])

    changed = await sync()

    assert f"group ml: linked to Coder group {new.id}" in changed.stdout
    assert _groups(engine) == {"ml": ["bob"]}
    with engine.connect() as conn:
        bob_id = conn.execute(select(users.c.id).where(users.c.username == "bob")).scalar()
        assert effective_limit(conn, int(bob_id)).limit_micros == 200_000_000


def test_a_sync_while_another_holds_the_lock_is_skipped(pg_url: str) -> None:
    from sqlalchemy import text

    from coder.client import User
    from coder.sync import SYNC_LOCK_KEY, Directory, write_directory

    directory = Directory((User("5d0c2b1e-0000-4000-8000-000000000001", "alice", "Alice",
                                "alice@example.com", "active"),), (), ())
    engine = create_sync_engine(DatabaseSettings(url=pg_url))
    try:
        with engine.connect() as other:  # another replica, mid-sync
            other.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SYNC_LOCK_KEY})
            assert write_directory(engine, directory, dry_run=False) is None
            other.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SYNC_LOCK_KEY})
        assert write_directory(engine, directory, dry_run=False) == [
            "user alice: created from Coder"]
        assert set(_users(engine)) == {"alice"}
    finally:
        engine.dispose()
