"""Coder tokens as keys: `TokenResolver` against a fake Coder over real HTTP and a real ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import select

from coder.client import CoderClient
from coder.settings import CoderSettings
from coder.tokens import Outcome, TokenResolver
from ledger.engine import create_async_engine
from ledger.schema import users
from ledger.settings import DatabaseSettings
from tests.support.fake_coder import FakeCoder, mint_token
from tests.support.tls import self_signed, server_context

CACHE_SECONDS = 60.0
GRACE_SECONDS = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    coder: FakeCoder
    resolver: TokenResolver
    clock: Clock
    ledger_url: str


async def _harness(coder: FakeCoder, ledger_url: str,
                   **overrides: object) -> AsyncIterator[Harness]:
    settings = replace(CoderSettings(url=coder.base_url, token_cache_seconds=CACHE_SECONDS,
                                     outage_grace_seconds=GRACE_SECONDS), **overrides)
    client = CoderClient(settings)
    engine = create_async_engine(DatabaseSettings(url=ledger_url))
    clock = Clock()
    try:
        yield Harness(coder, TokenResolver(settings, client, engine, clock=clock), clock,
                      ledger_url)
    finally:
        await client.close()
        await engine.dispose()


@pytest.fixture
async def h(coder: FakeCoder, ledger_url: str) -> AsyncIterator[Harness]:
    async for harness in _harness(coder, ledger_url):
        yield harness


def _ledger_users(url: str) -> list[tuple[str, str, str, str | None, bool]]:
    from ledger.engine import create_sync_engine

    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.connect() as conn:
            return [(r.username, r.name, r.email, r.coder_id, bool(r.suspended))
                    for r in conn.execute(select(users).order_by(users.c.username))]
    finally:
        engine.dispose()


async def test_a_token_is_its_owner_created_in_the_ledger_on_first_sight(h: Harness) -> None:
    alice = h.coder.add_user("alice", "Alice Liddell", "alice@example.com")
    token = h.coder.token_for(alice)

    first = await h.resolver.check(token)
    second = await h.resolver.check(token)

    assert first.outcome is Outcome.ACCEPTED and first.http_status == 200
    assert first.identity is not None and first.identity.username == "alice"
    assert second == first
    assert h.coder.calls["me"] == 1  # the second answer came from the cache
    assert _ledger_users(h.ledger_url) == [
        ("alice", "Alice Liddell", "alice@example.com", alice.id, False)]


async def test_a_rename_in_coder_is_the_same_ledger_user(h: Harness) -> None:
    bob = h.coder.add_user("bob")
    before = await h.resolver.check(h.coder.token_for(bob))
    bob.username, bob.name = "robert", "Robert Tables"
    after = await h.resolver.check(h.coder.token_for(bob))

    assert before.identity is not None and after.identity is not None
    assert after.identity.user_id == before.identity.user_id
    assert _ledger_users(h.ledger_url) == [
        ("robert", "Robert Tables", "bob@example.com", bob.id, False)]


async def test_a_revoked_token_is_refused_once_its_cache_period_ends(h: Harness) -> None:
    carol = h.coder.add_user("carol")
    token = h.coder.token_for(carol)
    assert (await h.resolver.check(token)).outcome is Outcome.ACCEPTED

    del h.coder.tokens[token]
    h.clock.now += CACHE_SECONDS - 1
    assert (await h.resolver.check(token)).outcome is Outcome.ACCEPTED
    h.clock.now += 1
    refused = await h.resolver.check(token)

    assert refused.outcome is Outcome.REFUSED and refused.http_status == 401
    assert refused.identity is None


async def test_a_token_that_expires_mid_test_is_refused(h: Harness) -> None:
    dave = h.coder.add_user("dave")
    token = h.coder.token_for(dave, lifetime_seconds=0.3)
    assert (await h.resolver.check(token)).accepted

    await asyncio.sleep(0.35)
    h.clock.now += CACHE_SECONDS

    assert (await h.resolver.check(token)).outcome is Outcome.REFUSED


async def test_a_suspended_users_token_is_refused_as_suspended(h: Harness) -> None:
    erin = h.coder.add_user("erin", status="suspended")

    check = await h.resolver.check(h.coder.token_for(erin))

    assert check.outcome is Outcome.SUSPENDED and check.http_status == 403
    assert "suspended" in check.message


async def test_strings_not_shaped_like_coder_tokens_never_reach_coder(h: Harness) -> None:
    for credential in ("sk-ant-api03-" + "x" * 90, "sk-proj-abcdefghij", "am-0123456789",
                       mint_token() + "x", "short-token", ""):
        check = await h.resolver.check(credential)
        assert check.outcome is Outcome.REFUSED and check.http_status == 401

    assert h.coder.calls.get("me", 0) == 0


async def test_while_coder_is_down_cached_tokens_work_until_the_grace_ends(
        h: Harness) -> None:
    frank = h.coder.add_user("frank")
    known = h.coder.token_for(frank)
    never_seen = h.coder.token_for(frank)
    assert (await h.resolver.check(known)).outcome is Outcome.ACCEPTED

    await h.coder.close()
    h.clock.now += CACHE_SECONDS + 1
    stale = await h.resolver.check(known)
    new = await h.resolver.check(never_seen)
    h.clock.now += GRACE_SECONDS
    expired = await h.resolver.check(known)

    assert stale.outcome is Outcome.ACCEPTED_STALE and stale.identity is not None
    assert stale.identity.username == "frank"
    assert new.outcome is Outcome.UNAVAILABLE and new.http_status == 503
    assert expired.outcome is Outcome.UNAVAILABLE
    assert h.resolver.outcomes[Outcome.UNAVAILABLE] == 2

    await h.coder.start()  # back on the same port: answers resume after the retry pause
    h.clock.now += 2
    assert (await h.resolver.check(known)).outcome is Outcome.ACCEPTED


async def test_a_burst_of_unknown_tokens_makes_a_bounded_number_of_calls(
        coder: FakeCoder, ledger_url: str) -> None:
    async for h in _harness(coder, ledger_url, max_lookups_in_flight=4):
        coder.me_delay = 0.05
        repeated = [mint_token() for _ in range(5)]
        checks = await asyncio.gather(*(h.resolver.check(repeated[i % 5])
                                        for i in range(200)))
        assert {c.outcome for c in checks} == {Outcome.REFUSED}
        assert coder.calls["me"] == 5  # one call per token, shared by its 40 requests

        again = await asyncio.gather(*(h.resolver.check(t) for t in repeated))
        assert {c.outcome for c in again} == {Outcome.REFUSED}
        assert coder.calls["me"] == 5  # refusals are remembered

        distinct = await asyncio.gather(*(h.resolver.check(mint_token()) for _ in range(40)))
        assert {c.outcome for c in distinct} == {Outcome.REFUSED}
        assert coder.max_in_flight <= 4


async def test_coder_answering_errors_is_unavailable_not_a_refusal(h: Harness) -> None:
    gina = h.coder.add_user("gina")
    token = h.coder.token_for(gina)
    h.coder.me_status = 502

    check = await h.resolver.check(token)

    assert check.outcome is Outcome.UNAVAILABLE and check.http_status == 503
    h.coder.me_status = None
    h.clock.now += 2  # past the pause after a failure
    assert (await h.resolver.check(token)).outcome is Outcome.ACCEPTED


async def test_a_username_coder_gave_to_someone_else_moves_the_old_row_aside(
        h: Harness) -> None:
    first = h.coder.add_user("hank")
    before = await h.resolver.check(h.coder.token_for(first))
    del h.coder.users[first.id]  # hank is deleted in Coder and the name given to a newcomer
    newcomer = h.coder.add_user("hank", "Hank Newcomer")

    check = await h.resolver.check(h.coder.token_for(newcomer))

    assert check.accepted and check.identity is not None and before.identity is not None
    assert check.identity.user_id != before.identity.user_id  # never the old one's spend
    assert sorted(u[0] for u in _ledger_users(h.ledger_url)) == [
        "hank", f"hank~{first.id[:8]}"]


async def test_coder_over_tls_is_trusted_through_ca_file_only(
        ledger_url: str, tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    coder = FakeCoder(tls=server_context(key, cert))
    await coder.start()
    try:
        ivy = coder.add_user("ivy")
        token = coder.token_for(ivy)
        async for trusted in _harness(coder, ledger_url, ca_file=str(cert)):
            assert (await trusted.resolver.check(token)).outcome is Outcome.ACCEPTED
        async for untrusted in _harness(coder, ledger_url):  # the system's roots only
            assert (await untrusted.resolver.check(token)).outcome is Outcome.UNAVAILABLE
    finally:
        await coder.close()


def test_an_unreadable_ca_file_is_a_setting_error(tmp_path: Path) -> None:
    missing_file = tmp_path / "nowhere.pem"
    with pytest.raises(ValueError, match=r"coder\.ca_file .*nowhere\.pem: No such file"):
        CoderClient(CoderSettings(url="https://coder.example.com", ca_file=str(missing_file)))
