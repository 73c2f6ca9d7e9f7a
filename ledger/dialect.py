"""The one place that knows SQLite and PostgreSQL spell upserts and row locks differently."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def upsert_for(dialect_name: str, table: Table) -> Any:
    """An INSERT with on_conflict_do_update / on_conflict_do_nothing for the given backend."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def upsert(conn: Connection, table: Table) -> Any:
    return upsert_for(conn.dialect.name, table)


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"
