"""period spend rollup and last usage day

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections import defaultdict
from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa

from ledger.periods import period_bounds


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('period_spend',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('period', sa.String(length=8), nullable=False),
    sa.Column('period_start', sa.Date(), nullable=False),
    sa.Column('cost_micros', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('messages', sa.BigInteger(), server_default='0', nullable=False),
    sa.CheckConstraint("period IN ('day', 'week', 'month')", name=op.f('ck_period_spend_period')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_period_spend_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', 'period', 'period_start', name=op.f('pk_period_spend'))
    )
    with op.batch_alter_table('period_spend', schema=None) as batch_op:
        batch_op.create_index('ix_period_spend_period_period_start', ['period', 'period_start'], unique=False)

    with op.batch_alter_table('usage_totals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_day', sa.Date(), nullable=True))

    _backfill()


def _backfill() -> None:
    """Existing usage gets its period rows and last day from the daily rollup."""
    conn = op.get_bind()
    conn.execute(sa.text(
        "UPDATE usage_totals SET last_day = (SELECT max(d.day) FROM daily_usage d "
        "WHERE d.user_id = usage_totals.user_id AND d.model_id = usage_totals.model_id)"))
    rows = conn.execute(sa.text(
        "SELECT user_id, day, sum(cost_micros), sum(messages) FROM daily_usage "
        "GROUP BY user_id, day"))
    sums: dict[tuple[int, str, object], list[int]] = defaultdict(lambda: [0, 0])
    for user_id, day, cost, messages in rows:
        if isinstance(day, str):
            day = datetime.fromisoformat(day).date()
        moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for period in ("day", "week", "month"):
            start = period_bounds(period, moment)[0].date()
            total = sums[(user_id, period, start)]
            total[0] += int(cost)
            total[1] += int(messages)
    table = sa.table("period_spend", sa.column("user_id"), sa.column("period"),
                     sa.column("period_start"), sa.column("cost_micros"),
                     sa.column("messages"))
    values = [{"user_id": u, "period": p, "period_start": d, "cost_micros": c, "messages": m}
              for (u, p, d), (c, m) in sums.items()]
    if values:
        op.bulk_insert(table, values)


def downgrade() -> None:
    with op.batch_alter_table('usage_totals', schema=None) as batch_op:
        batch_op.drop_column('last_day')

    with op.batch_alter_table('period_spend', schema=None) as batch_op:
        batch_op.drop_index('ix_period_spend_period_period_start')

    op.drop_table('period_spend')
