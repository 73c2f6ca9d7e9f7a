"""The driver-level key check (limiter.admission.key_check) answers exactly what the
ledger's check_key answers, and a connection that breaks under it is dropped, not reused."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from ledger.engine import create_sync_engine, libpq_url
from ledger.keys import revoke_keys
from ledger.settings import DatabaseSettings
from ledger.spend import check_key
from limiter.admission.key_check import KeyChecker
from tests.support.gateway import keys_locked, policy, seed_ledger

NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


def reference(url: str, secret: str) -> object:
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.connect() as conn:
            return check_key(conn, secret, NOW)
    finally:
        engine.dispose()


def terminate_other_backends(url: str) -> None:
    """What a database restart or an administrator does to the checker's connections."""
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def backends(url: str) -> int:
    """Connections to the test database, other than the one asking."""
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND pid <> pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


async def settled_backends(url: str, expected: int) -> int:
    """`backends`, given up to 2 s to reach `expected` (a closed connection's server process
    leaves pg_stat_activity shortly after the client has gone)."""
    for _ in range(40):
        count = backends(url)
        if count == expected:
            break
        await asyncio.sleep(0.05)
    return count


@contextlib.asynccontextmanager
async def open_checker(url: str, **settings: Any) -> AsyncIterator[KeyChecker]:
    checker = KeyChecker(DatabaseSettings(url=url, **settings))
    try:
        yield checker
    finally:
        await checker.close()


async def test_same_answer_as_the_ledger_for_known_revoked_and_unknown_keys(
        pg_url: str) -> None:
    document = policy(users=[{"username": "alice", "limit_usd": "2.5"}, {"username": "bob"}])
    keys = seed_ledger(pg_url, document)
    async with open_checker(pg_url) as checker:
        found = await checker.check(keys["alice"], NOW)
        assert found is not None
        assert found == reference(pg_url, keys["alice"])
        owner, status = found
        assert (owner.username, status.limit_micros, status.spent_micros) == \
            ("alice", 2_500_000, 0)
        assert await checker.check(keys["bob"], NOW) == reference(pg_url, keys["bob"])
        assert await checker.check("am-not-a-key", NOW) is None

        engine = create_sync_engine(DatabaseSettings(url=pg_url))
        try:
            with engine.begin() as conn:
                revoke_keys(conn, "bob")
        finally:
            engine.dispose()
        assert await checker.check(keys["bob"], NOW) is None  # revoked: at once, no cache


@pytest.mark.parametrize("loop_saw_it", [False, True], ids=["at-once", "while-idle"])
async def test_a_connection_the_server_closed_is_replaced(pg_url: str,
                                                          loop_saw_it: bool) -> None:
    """Closed under a check sent at once, that check fails (fail-open territory); closed while
    idle, the event loop sees it and the next check goes out on a new connection."""
    keys = seed_ledger(pg_url)
    async with open_checker(pg_url, pool_size=1) as checker:
        assert await checker.check(keys["alice"], NOW) is not None
        terminate_other_backends(pg_url)
        if loop_saw_it:
            await asyncio.sleep(0.3)
        else:
            with pytest.raises(psycopg.OperationalError):
                await checker.check(keys["alice"], NOW)
        found = await checker.check(keys["alice"], NOW)
        assert found is not None and found[0].username == "alice"


def test_libpq_url_drops_the_sqlalchemy_driver_and_keeps_credentials() -> None:
    assert libpq_url("postgresql+psycopg://u:p%40ss@db:5432/ledger?sslmode=require") == \
        "postgresql://u:p%40ss@db:5432/ledger?sslmode=require"
    assert libpq_url("postgres://u@db/ledger") == "postgresql://u@db/ledger"


async def test_the_pool_holds_at_most_pool_size_connections_and_serves_every_check(
        pg_url: str) -> None:
    keys = seed_ledger(pg_url)
    async with open_checker(pg_url, pool_size=2) as checker:
        async with asyncio.timeout(10):
            found = await asyncio.gather(*(checker.check(keys["alice"], NOW)
                                           for _ in range(20)))
        assert {owner.username for owner, _ in filter(None, found)} == {"alice"}
        assert len(found) == 20 and None not in found
        assert backends(pg_url) == 2
    assert await settled_backends(pg_url, 0) == 0


async def test_a_started_check_left_unawaited_or_cancelled_gives_its_connection_back(
        pg_url: str) -> None:
    keys = seed_ledger(pg_url)
    async with open_checker(pg_url, pool_size=1) as checker:
        assert await checker.check(keys["alice"], NOW) is not None
        left = checker.start(keys["alice"], NOW)  # sent at once, never awaited
        assert inspect.iscoroutine(left)
        left.close()
        async with asyncio.timeout(5):  # would wait forever for a leaked connection
            assert await checker.check(keys["bob"], NOW) is not None

        cancelled = asyncio.ensure_future(checker.start(keys["alice"], NOW))
        await asyncio.sleep(0)
        cancelled.cancel()  # mid-statement: that connection is closed, not reused
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        async with asyncio.timeout(5):
            found = await checker.check(keys["bob"], NOW)
        assert found is not None and found[0].username == "bob"
        assert await settled_backends(pg_url, 1) == 1


async def test_closing_the_checker_fails_a_check_in_flight(pg_url: str) -> None:
    keys = seed_ledger(pg_url)
    checker = KeyChecker(DatabaseSettings(url=pg_url, pool_size=1))
    assert await checker.check(keys["alice"], NOW) is not None
    in_flight = asyncio.ensure_future(checker.start(keys["alice"], NOW))
    await asyncio.sleep(0)
    await checker.close()
    with pytest.raises(psycopg.OperationalError):
        async with asyncio.timeout(5):
            await in_flight
    assert await settled_backends(pg_url, 0) == 0


@pytest.mark.parametrize("idle_connection", [True, False], ids=["idle", "opened"])
async def test_a_check_that_outlasts_its_time_fails_with_timeout_and_its_connection_goes(
        pg_url: str, idle_connection: bool) -> None:
    """Sent on an idle connection or on one opened for it, the check gives up after
    `timeout_s`; the connection, mid-statement, is closed, and the next check gets an answer."""
    keys = seed_ledger(pg_url)
    async with open_checker(pg_url, pool_size=1) as checker:
        if idle_connection:
            assert await checker.check(keys["alice"], NOW) is not None
        with keys_locked(pg_url):
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await checker.check(keys["alice"], NOW, timeout_s=0.3)
            waited = loop.time() - started
            assert 0.3 <= waited < 2.0
        # The abandoned connection's server process ends once the lock is gone: not kept.
        assert await settled_backends(pg_url, 0) == 0
        async with asyncio.timeout(5):
            found = await checker.check(keys["bob"], NOW, timeout_s=5)
        assert found is not None and found[0].username == "bob"
