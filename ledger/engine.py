"""Engines for the ledger: operator-style URLs in, the right sync or async driver out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from ledger.settings import DatabaseSettings

_SYNC_DRIVERS = {"sqlite": "sqlite+pysqlite", "postgresql": "postgresql+psycopg"}
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _backend(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in _SYNC_DRIVERS:
        raise ValueError(f"unsupported database URL scheme {backend!r}: use sqlite:/// or "
                         "postgresql://")
    return backend


def _with_driver(url: str, drivers: dict[str, str]) -> str:
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername=drivers[_backend(url)]).render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    return _with_driver(url, _SYNC_DRIVERS)


def async_url(url: str) -> str:
    return _with_driver(url, _ASYNC_DRIVERS)


def libpq_url(url: str) -> str:
    """A PostgreSQL ledger URL as libpq (psycopg itself) reads it, password kept."""
    return _with_driver(url, {"postgresql": "postgresql"})


def is_sqlite(url: str) -> bool:
    return _backend(url) == "sqlite"


def application_name_args(url: str, application_name: str | None) -> dict[str, Any]:
    """Connection arguments naming the client in PostgreSQL's `pg_stat_activity`, so that an
    operator can tell agentmeter's connections (and which part holds them) apart.

    Empty for SQLite, for no name, and when the URL names the client itself (the operator's
    choice wins).
    """
    if application_name is None or is_sqlite(url):
        return {}
    if "application_name" in make_url(url).query:
        return {}
    return {"application_name": application_name}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; the busy timeout makes concurrent writers wait.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _engine_kwargs(settings: DatabaseSettings, application_name: str | None) -> dict[str, Any]:
    if is_sqlite(settings.url):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    # No overflow: under a burst, callers queue for a pooled connection instead of opening
    # and closing extra ones (each costs a backend fork on the server and a TLS/auth handshake).
    return {
        "pool_size": settings.pool_size,
        "max_overflow": 0,
        "pool_recycle": 1800,
        "connect_args": {"connect_timeout": max(1, round(settings.connect_timeout_seconds)),
                         **application_name_args(settings.url, application_name)},
    }


def create_sync_engine(settings: DatabaseSettings,
                       statement_timeout_s: float | None = None,
                       application_name: str | None = None) -> Engine:
    """A sync engine; `statement_timeout_s` bounds each statement on PostgreSQL (a thread
    has no event loop to time it out); `application_name` names its connections there."""
    kwargs = _engine_kwargs(settings, application_name)
    if statement_timeout_s is not None and not is_sqlite(settings.url):
        kwargs["connect_args"]["options"] = \
            f"-c statement_timeout={max(1, round(statement_timeout_s * 1000))}"
    engine = create_engine(sync_url(settings.url), **kwargs)
    if is_sqlite(settings.url):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def create_async_engine(settings: DatabaseSettings,
                        application_name: str | None = None) -> AsyncEngine:
    engine = _create_async_engine(async_url(settings.url),
                                  **_engine_kwargs(settings, application_name))
    if is_sqlite(settings.url):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def from_db(moment: datetime) -> datetime:
    """SQLite hands back naive timestamps; everything the ledger stores is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
