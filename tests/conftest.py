"""Shared fixtures: fresh migrated ledgers on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import PgLedger, SqliteTemplate, pg_available
from tests.support.requirements import missing


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    return SqliteTemplate(tmp_path_factory.mktemp("ledger-template"))


@pytest.fixture(scope="session")
def _pg_ledger() -> Iterator[PgLedger | str]:
    reason = pg_available()
    if reason is not None:
        yield reason
        return
    ledger = PgLedger()
    yield ledger
    ledger.close()


@pytest.fixture
def sqlite_url(_sqlite_template: SqliteTemplate, tmp_path: Path) -> str:
    """A fresh, migrated SQLite ledger (operator-style URL)."""
    return _sqlite_template.create(tmp_path / "ledger.db")


@pytest.fixture
def pg_url(_pg_ledger: PgLedger | str) -> str:
    """A migrated, empty PostgreSQL ledger on the shared server (emptied before each test)."""
    if isinstance(_pg_ledger, str):
        missing(_pg_ledger)
        raise AssertionError("unreachable")
    return _pg_ledger.fresh()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest) -> str:
    """The same test on both backends."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url
