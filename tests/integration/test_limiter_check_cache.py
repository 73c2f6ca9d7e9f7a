"""Key checks answered from memory (limiter.admission.check_cache) on the real PostgreSQL ledger.

Every change another process makes (usage recorded, limits applied, a key revoked) reaches the
gateway through the ledger's notifications; these tests make the change the way that process
would, wait until the gateway has heard everything committed so far (`LedgerListener.caught_up`,
one round trip on the listening connection), and then check what a client gets. Where a check
went is read from `agentmeter_limiter_key_checks_total{source}`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from ledger.engine import create_sync_engine, libpq_url
from ledger.keys import create_key, hash_key, revoke_keys
from ledger.limit_store import set_user_override
from ledger.notify import CHANNEL, LedgerReset, SpendChanged, parse_change
from ledger.periods import Period
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord, record_usage
from ledger.users import get_user
from limiter.admission.ledger_listener import APPLICATION_NAME as LISTEN_NAME
from limiter.http.app_keys import CHECK_CACHE
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import (
    MovableClock,
    apply,
    bearer,
    gateway_app,
    heard,
    limiter_settings,
    metric,
    openai_request,
    policy,
    query,
    seed_ledger,
    settled,
)

pytestmark = [pytest.mark.postgres]

CHAT = "/v1/chat/completions"
NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
# 1,000 micros a month; the fake's default answer costs 30 (12 input, 9 output tokens).
LIMITED = policy(limits={"default_limit_usd": "0.001"})


@dataclass
class Gateway:
    """A started gateway on the seeded ledger, hearing the ledger's notifications."""

    client: Any
    registry: CollectorRegistry
    keys: dict[str, str]
    url: str

    @property
    def cache(self) -> Any:
        return self.client.app[CHECK_CACHE]

    def checks(self, source: str) -> float:
        return metric(self.registry, "agentmeter_limiter_key_checks_total", source=source)

    async def post(self, user: str = "alice") -> Any:
        return await self.client.post(CHAT, json=openai_request(),
                                      headers=bearer(self.keys[user]))

    async def answered(self) -> None:
        """One request of alice's answered and in the ledger (30 micros; one ledger check)."""
        assert (await self.post()).status == 200
        await settled(self.client.app)

    def remembered(self, user: str = "alice") -> Any:
        """The cache's answer for the key (None: the next check asks the ledger)."""
        return self.cache.get(hash_key(self.keys[user]), NOW)


async def start(aiohttp_client: Any, url: str, tmp_path: Path, upstream: FakeUpstream,
                **changes: Any) -> Gateway:
    keys = seed_ledger(url, LIMITED)
    registry = CollectorRegistry()
    app = gateway_app(url, limiter_settings(tmp_path, upstream.base_url, **changes),
                      clock=MovableClock(NOW), registry=registry)
    client = await aiohttp_client(app)
    if changes.get("check_cache_seconds", 1) > 0:
        await until(lambda: app[CHECK_CACHE].active)  # LISTEN is in place
    return Gateway(client, registry, keys, url)


@pytest.fixture
async def gateway(aiohttp_client: Any, pg_url: str, tmp_path: Path,
                  upstream: FakeUpstream) -> Gateway:
    return await start(aiohttp_client, pg_url, tmp_path, upstream)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait for what the gateway hears from the ledger (notifications are asynchronous)."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.002)


def record_elsewhere(url: str, username: str, usage: TokenUsage) -> None:
    """Usage recorded by another limiter process (its own connection and transaction)."""
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            user = get_user(conn, username)
            record_usage(conn, UsageRecord(id=str(uuid.uuid4()), user_id=user.id,
                                           model="gpt-test", provider="openai", usage=usage,
                                           created_at=NOW))
    finally:
        engine.dispose()


def in_ledger(url: str, fn: Callable[..., Any], *args: Any) -> Any:
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            return fn(conn, *args)
    finally:
        engine.dispose()


async def test_checks_after_the_first_are_answered_from_memory(gateway: Gateway) -> None:
    for _ in range(3):
        assert (await gateway.post()).status == 200
    assert (gateway.checks("ledger"), gateway.checks("cache")) == (1, 2)
    await settled(gateway.client.app)
    # The gateway's own records come back as notifications: memory holds the ledger's total.
    assert gateway.remembered()[1].spent_micros == 90
    status = await (await gateway.client.get(
        "/api/v1/usage/status", headers=bearer(gateway.keys["alice"]))).json()
    assert status["current_spend_micros"] == 90


async def test_spend_recorded_by_another_process_refuses_without_asking_the_ledger(
        gateway: Gateway) -> None:
    await gateway.answered()
    await asyncio.to_thread(record_elsewhere, gateway.url, "alice", TokenUsage(input=970))
    await heard(gateway.client.app)
    assert gateway.remembered()[1].spent_micros == 1000
    refused = await gateway.post()
    assert refused.status == 409
    body = await refused.json()
    assert (body["spent_micros"], body["limit_micros"]) == (1000, 1000)
    assert (gateway.checks("ledger"), gateway.checks("cache")) == (1, 1)
    spent = query(gateway.url, "SELECT cost_micros FROM period_spend WHERE period = 'month'")
    assert [row.cost_micros for row in spent] == [1000]
    assert (await gateway.post("bob")).status == 200  # Bob's spend is his own


async def test_caught_up_applies_every_change_committed_before_it(gateway: Gateway) -> None:
    await gateway.answered()
    assert gateway.remembered()[1].spent_micros == 30
    # Committed while the event loop is held up: the notification waits on the socket.
    record_elsewhere(gateway.url, "alice", TokenUsage(input=500))
    record_elsewhere(gateway.url, "alice", TokenUsage(input=400))
    assert gateway.remembered()[1].spent_micros == 30
    await heard(gateway.client.app)
    assert gateway.remembered()[1].spent_micros == 930
    # Callers at the same time wait for a round trip sent after they asked.
    record_elsewhere(gateway.url, "alice", TokenUsage(input=50))
    await asyncio.gather(*(heard(gateway.client.app) for _ in range(3)))
    assert gateway.remembered()[1].spent_micros == 980


async def test_a_key_revoked_elsewhere_is_refused_once_heard(gateway: Gateway) -> None:
    await gateway.answered()
    assert gateway.remembered() is not None
    assert await asyncio.to_thread(in_ledger, gateway.url, revoke_keys, "alice") == 1
    await heard(gateway.client.app)
    assert gateway.remembered() is None
    assert (await gateway.post()).status == 401
    assert gateway.checks("ledger") == 2


async def test_limits_changed_elsewhere_apply_once_heard(gateway: Gateway) -> None:
    await gateway.answered()
    # `agentmeter apply` run by an operator: a default limit below what alice has spent.
    await asyncio.to_thread(apply, gateway.url,
                            policy(limits={"default_limit_usd": "0.00001"}))
    await heard(gateway.client.app)
    assert (await gateway.post()).status == 409
    # An override set elsewhere frees her again.
    await asyncio.to_thread(in_ledger, gateway.url, set_user_override, "alice", None, True)
    await heard(gateway.client.app)
    assert (await gateway.post()).status == 200


async def test_a_limit_changed_through_this_gateway_applies_to_the_next_request(
        gateway: Gateway) -> None:
    await gateway.answered()
    put = await gateway.client.put("/api/v1/limits/users/alice", json={"limit_micros": 10},
                                   headers=bearer("admin-token-xyz"))
    assert put.status == 200
    # No waiting: the gateway forgets its own cached checks when it changes a limit.
    assert (await gateway.post()).status == 409


async def test_without_the_notifications_every_check_asks_the_ledger(gateway: Gateway) -> None:
    """The listening connection is cut (a restart, a network fault): records made meanwhile
    are never heard, so nothing is answered from memory until LISTEN is back, and then
    memory starts empty."""
    await gateway.answered()
    with psycopg.connect(libpq_url(gateway.url), autocommit=True) as admin:
        cut = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND application_name = %s",
                            (LISTEN_NAME,)).fetchall()
    assert len(cut) == 1
    await until(lambda: not gateway.cache.active)
    await asyncio.to_thread(record_elsewhere, gateway.url, "alice", TokenUsage(input=970))
    assert (await gateway.post()).status == 409
    assert gateway.checks("ledger") == 2

    await until(lambda: gateway.cache.active)  # reconnected
    for _ in range(2):
        assert (await gateway.post()).status == 409
    assert (gateway.checks("ledger"), gateway.checks("cache")) == (3, 1)


async def test_a_notification_that_fails_to_apply_restarts_the_listening(
        gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault while applying what was heard must not leave the gateway deaf with answers in
    memory: memory is emptied, and the notifications are listened for again."""
    await gateway.answered()
    assert gateway.remembered() is not None

    def broken(change: Any) -> None:
        monkeypatch.undo()  # once
        raise RuntimeError("a bug in applying a change")

    monkeypatch.setattr(gateway.cache, "apply", broken)
    await asyncio.to_thread(record_elsewhere, gateway.url, "alice", TokenUsage(input=970))
    await until(lambda: not gateway.cache.active)
    assert gateway.remembered() is None
    await until(lambda: gateway.cache.active)
    assert (await gateway.post()).status == 409


async def test_check_cache_seconds_zero_asks_the_ledger_every_time(
        aiohttp_client: Any, pg_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    gateway = await start(aiohttp_client, pg_url, tmp_path, upstream, check_cache_seconds=0)
    for _ in range(3):
        assert (await gateway.post()).status == 200
    assert (gateway.checks("ledger"), gateway.checks("cache")) == (3, 0)
    listening = query(pg_url, "SELECT count(*) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND application_name = :name",
                       name=LISTEN_NAME)
    assert listening[0][0] == 0


def test_the_ledger_announces_spend_and_what_checks_read(pg_url: str) -> None:
    """The triggers of migration 0003, heard by a plain LISTEN: each committed spend row with
    its new total, a reset for changes to limits and keys, nothing for new users and keys."""
    seed_ledger(pg_url, LIMITED, keys_for=())
    with psycopg.connect(libpq_url(pg_url), autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")

        def heard(expected: int, seconds: float = 2.0) -> list[Any]:
            return [parse_change(n.payload)
                    for n in listener.notifies(timeout=seconds, stop_after=expected)]

        record_elsewhere(pg_url, "alice", TokenUsage(input=10, output=5))
        record_elsewhere(pg_url, "alice", TokenUsage(input=3))
        alice = query(pg_url, "SELECT id FROM users WHERE username = 'alice'")[0].id
        changes = heard(6)
        # In commit order, each row with its total after the commit (20, then 20 + 3).
        assert [change.cost_micros for change in changes] == [20, 20, 20, 23, 23, 23]
        starts = {Period.DAY: NOW.date(), Period.WEEK: datetime(2026, 3, 9).date(),
                  Period.MONTH: datetime(2026, 3, 1).date()}
        assert set(changes) == {SpendChanged(alice, period, start, cost)
                                for period, start in starts.items() for cost in (20, 23)}

        in_ledger(pg_url, create_key, "bob")
        assert heard(1, seconds=0.3) == []  # a new key: nothing can be cached for it yet
        in_ledger(pg_url, set_user_override, "alice", 500, False)
        assert heard(1) == [LedgerReset()]
        in_ledger(pg_url, revoke_keys, "bob")
        assert heard(1) == [LedgerReset()]
        with psycopg.connect(libpq_url(pg_url), autocommit=True) as admin:
            admin.execute("DELETE FROM period_spend")
        assert heard(1) == [LedgerReset()]
