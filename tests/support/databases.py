"""Fresh, migrated ledgers for tests: a SQLite file or a PostgreSQL database.

PostgreSQL: each test process migrates one database of its own once, and every test starts
from it emptied with TRUNCATE (milliseconds, where CREATE/DROP DATABASE costs a second).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import psycopg

from ledger.migrate import upgrade
from ledger.schema import metadata

PG_ADMIN_URL = os.environ.get("AGENTMETER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pg_database_url(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def _admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


def pg_available() -> str | None:
    """None when the server answers, else the reason it does not."""
    try:
        with _admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_ADMIN_URL}: {exc}".strip()
    return None


def create_database(prefix: str = "am_test") -> str:
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PgLedger:
    """One migrated database per test process, emptied before each test."""

    def __init__(self) -> None:
        self.name = create_database()
        self.url = pg_database_url(self.name)
        upgrade(self.url)
        tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
        self._truncate = f"TRUNCATE {tables} RESTART IDENTITY CASCADE"

    def fresh(self) -> str:
        with psycopg.connect(self.url, autocommit=True) as conn:
            # Connections a previous test left open (a server it started) must not hold locks.
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            conn.execute(self._truncate)
        return self.url

    def close(self) -> None:
        drop_database(self.name)


class SqliteTemplate:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "template.db"
        upgrade(f"sqlite:///{self.path}")

    def create(self, target: Path) -> str:
        shutil.copyfile(self.path, target)
        return f"sqlite:///{target}"
