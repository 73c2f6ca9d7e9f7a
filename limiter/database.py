"""Running ledger functions from the event loop, and what counts as "the database is away".

Ledger functions take a sync `Connection`; the limiter runs them through `run_sync` on one
shared `AsyncEngine`, in a transaction, under a deadline so a hung database turns into a
fail-open (or a 503) instead of a hung request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")

# Failures that mean the ledger cannot be reached or cannot answer right now. Domain errors
# (`ledger.errors.LedgerError`) are not among them: they are the client's problem.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, psycopg.Error, OSError,
                                                   TimeoutError)


async def in_transaction(engine: AsyncEngine, timeout_s: float,
                         fn: Callable[..., T], *args: Any) -> T:
    """`fn(conn, *args)` in one transaction, committed on success, within `timeout_s`."""
    async with asyncio.timeout(timeout_s), engine.begin() as conn:
        return await conn.run_sync(fn, *args)


async def autocommitted(engine: AsyncEngine, timeout_s: float,
                        fn: Callable[..., T], *args: Any) -> T:
    """`fn(conn, *args)` with each statement committed on its own: no BEGIN and COMMIT round
    trips, for the hot path's reads (and idempotent single-statement writes)."""
    async with asyncio.timeout(timeout_s), engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        return await conn.run_sync(fn, *args)


def _ping(conn: Connection) -> None:
    conn.execute(text("SELECT 1"))


async def reachable(engine: AsyncEngine, timeout_s: float) -> bool:
    try:
        await in_transaction(engine, timeout_s, _ping)
    except DATABASE_ERRORS:
        return False
    return True


def is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError)
