"""Shared fixtures: fresh migrated ledgers on SQLite and on the real PostgreSQL, and test
clients that serve the limiter as it is served in production."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from limiter.http.app_keys import SETTINGS
from tests.support.databases import PgLedger, SqliteTemplate, pg_available
from tests.support.gateway import GatewayTestServer
from tests.support.requirements import missing


@pytest.fixture
def aiohttp_client(aiohttp_client: Any) -> Any:
    """pytest-aiohttp's client factory, with limiter apps served through `gateway_runner`
    exactly as `agentmeter limiter` serves them."""

    async def go(param: Any, *, server_kwargs: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> Any:
        if isinstance(param, web.Application) and SETTINGS in param:
            param = GatewayTestServer(param, **(server_kwargs or {}))
            return await aiohttp_client(param, **kwargs)
        return await aiohttp_client(param, server_kwargs=server_kwargs, **kwargs)

    return go


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
