"""Alembic environment: runs on the connection or URL handed over by ledger.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from ledger.partitions import schema_comparison_options
from ledger.schema import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata,
                          render_as_batch=True,
                          **schema_comparison_options(connection.dialect.name))
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True,
                          **schema_comparison_options(conn.dialect.name))
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
