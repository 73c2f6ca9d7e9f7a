"""The ledger's Coder identities (migration 0005): matched by Coder's id, unique, and a change
of a user's suspension announced to the limiters' check caches on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from ledger.coder_identity import CoderUser, save_coder_user
from ledger.engine import create_sync_engine, libpq_url
from ledger.notify import CHANNEL
from ledger.schema import users
from ledger.settings import DatabaseSettings

ALICE = CoderUser("0b5c3f4e-54d1-4c8e-9b1a-6f0f8d1e2a01", "alice", "Alice Liddell",
                  "alice@example.com", suspended=False)


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    yield engine
    engine.dispose()


def test_saving_the_same_coder_user_twice_changes_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        first = save_coder_user(conn, ALICE)
        again = save_coder_user(conn, ALICE)
    assert first.changes == ("user alice: created from Coder",)
    assert again == type(again)(first.user_id, ())


def test_a_coder_id_belongs_to_one_ledger_user(engine: Engine) -> None:
    with engine.begin() as conn:
        save_coder_user(conn, ALICE)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(users.insert().values(username="mallory", coder_id=ALICE.coder_id,
                                           created_at=datetime.now(UTC)))


def test_a_suspension_is_announced_to_the_check_caches(pg_url: str) -> None:
    engine = create_sync_engine(DatabaseSettings(url=pg_url))
    try:
        with engine.begin() as conn:
            save_coder_user(conn, ALICE)
        with psycopg.connect(libpq_url(pg_url), autocommit=True) as listener:
            listener.execute(f"LISTEN {CHANNEL}")
            with engine.begin() as conn:
                saved = save_coder_user(conn, replace(ALICE, suspended=True))
            heard = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    finally:
        engine.dispose()
    assert saved.changes == ("user alice: suspended",)
    assert heard == ["r"]  # everything learnt about keys may be wrong: re-read
