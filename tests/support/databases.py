"""Fresh, migrated ledgers for tests: a SQLite file or a PostgreSQL database of its own.

Each PostgreSQL test database is cloned from a template migrated once per test session, so a
fresh ledger costs one CREATE DATABASE rather than a full migration.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import psycopg

from ledger.migrate import upgrade

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


class PgTemplates:
    """One migrated template per test session; fresh databases are cloned from it."""

    def __init__(self) -> None:
        self.template = f"am_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with _admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.template}"')
        upgrade(pg_database_url(self.template))

    def create(self) -> str:
        name = f"am_test_{uuid.uuid4().hex[:12]}"
        with _admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    @staticmethod
    def drop(name: str) -> None:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self.drop(self.template)


class SqliteTemplate:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "template.db"
        upgrade(f"sqlite:///{self.path}")

    def create(self, target: Path) -> str:
        shutil.copyfile(self.path, target)
        return f"sqlite:///{target}"
