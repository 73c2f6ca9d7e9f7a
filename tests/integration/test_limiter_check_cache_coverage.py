"""The check cache is only as current as the ledger's change notifications: every table the key
check reads must announce its changes (migration 0003's triggers), or an answer read from it
could outlive a change for up to `check_cache_seconds`."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.sql.util import find_tables

from ledger.spend import check_key_statement
from tests.support.gateway import query


def test_every_table_the_key_check_reads_announces_its_changes(pg_url: str) -> None:
    read = {table.name for table in find_tables(check_key_statement(), check_columns=True,
                                                include_aliases=True, include_joins=True)
            if isinstance(table, Table)}
    assert {"api_keys", "users", "period_spend", "limit_config"} <= read  # the lookup works
    announced = {row.table for row in query(pg_url, """
        SELECT c.relname AS table FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_proc p ON p.oid = t.tgfoid
        WHERE NOT t.tgisinternal AND p.proname LIKE 'agentmeter_notify_%'""")}
    assert read <= announced, f"not announced: {sorted(read - announced)}"
