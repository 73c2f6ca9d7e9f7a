"""message retention, and messages partitioned by month on PostgreSQL

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-06

Adds `message_retention` (how far raw messages go back, what the last prune did). On
PostgreSQL, `messages` becomes a table partitioned by month of `created_at`, converted in place
with its data: whatever columns, defaults, checks, indexes and foreign keys it has at this point
are carried over (read from the catalog, not written out here), and the primary key becomes
(id, created_at). The copy runs in the migration's transaction, which holds `messages` locked
for its whole length: about 10 s per million messages on a small server (see the README), so
large ledgers convert in a maintenance window. SQLite keeps one table.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from ledger.partitions import PARENT, create_partitions, month_of, months_between, \
    upcoming_months

revision = '0006'
down_revision = '0003'
branch_labels = None
depends_on = None

OLD = "messages_before_partitioning"


def _definitions(conn: sa.Connection, table: str) -> tuple[list[str], list[str]]:
    """The table's secondary index definitions and foreign key clauses, as the catalog has
    them (`ALTER TABLE messages ADD CONSTRAINT ...` and `CREATE INDEX ... ON messages ...`)."""
    indexes = list(conn.execute(sa.text(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = to_regclass(:t) AND NOT i.indisprimary"), {"t": table}).scalars())
    foreign = [f'ALTER TABLE "{PARENT}" ADD CONSTRAINT "{name}" {definition}'
               for name, definition in conn.execute(sa.text(
                   "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                   "WHERE conrelid = to_regclass(:t) AND contype = 'f'"), {"t": table})]
    return indexes, foreign


def _rebuild(partitioned: bool) -> None:
    """Move `messages` into a new table of the other kind, keeping rows, indexes and keys."""
    conn = op.get_bind()
    indexes, foreign = _definitions(conn, PARENT)
    op.execute(f'ALTER TABLE "{PARENT}" RENAME TO "{OLD}"')
    op.execute(f'ALTER TABLE "{OLD}" RENAME CONSTRAINT pk_messages TO pk_{OLD}')
    like = (f'CREATE TABLE "{PARENT}" (LIKE "{OLD}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
            'INCLUDING STORAGE INCLUDING COMMENTS)')
    if partitioned:
        op.execute(like + " PARTITION BY RANGE (created_at)")
        oldest = conn.execute(sa.text(f'SELECT min(created_at) FROM "{OLD}"')).scalar()
        now = datetime.now(UTC)
        first = month_of(oldest) if oldest is not None else month_of(now)
        create_partitions(conn, [*months_between(first, month_of(now)), *upcoming_months(now)])
        primary_key = "(id, created_at)"
    else:
        op.execute(like)
        primary_key = "(id)"
    op.execute(f'INSERT INTO "{PARENT}" SELECT * FROM "{OLD}"')
    op.execute(f'DROP TABLE "{OLD}" CASCADE')
    op.execute(f'ALTER TABLE "{PARENT}" ADD CONSTRAINT pk_messages PRIMARY KEY {primary_key}')
    for statement in (*indexes, *foreign):
        op.execute(statement)
    op.execute(f'ANALYZE "{PARENT}"')


def upgrade() -> None:
    op.create_table(
        "message_retention",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kept_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pruned_messages", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("oldest_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_message_retention_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_retention")),
    )
    if op.get_bind().dialect.name == "postgresql":
        _rebuild(partitioned=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rebuild(partitioned=False)
    op.drop_table("message_retention")
