"""The one place that knows SQLite and PostgreSQL spell upserts and row locks differently."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def upsert(conn: Connection, table: Table) -> Any:
    """An INSERT that supports on_conflict_do_update / on_conflict_do_nothing on both backends."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"
