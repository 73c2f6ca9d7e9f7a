"""price history: price versions, what priced each message, fees and pricing gaps

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

KINDS = ('input', 'output', 'cache_read', 'cache_write', 'cache_write_1h')
ROLLUP_COLUMNS = ('web_searches', 'unpriced_web_searches', 'variant_gap_messages',
                  'tier_gap_messages', 'fee_gap_messages')
MESSAGE_COLUMNS = ('price_id', 'service_tier', 'batch', 'speed', 'tier_start', 'web_searches',
                   'pricing_gaps')


def _counter(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), server_default='0', nullable=False)


def upgrade() -> None:
    op.create_table('model_prices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('source_detail', sa.String(length=1024), server_default='', nullable=False),
    sa.Column('prices', sa.JSON(), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("source IN ('catalog', 'policy')", name=op.f('ck_model_prices_source')),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_prices_model_id_models')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_prices'))
    )
    op.create_index('ix_model_prices_model_id_effective_from', 'model_prices',
                    ['model_id', 'effective_from'], unique=False)
    op.create_table('daily_price_usage',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('price_id', sa.Integer(), nullable=False),
    _counter('messages'),
    _counter('cost_micros'),
    _counter('web_searches'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_daily_price_usage_model_id_models')),
    sa.ForeignKeyConstraint(['price_id'], ['model_prices.id'], name=op.f('fk_daily_price_usage_price_id_model_prices')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_daily_price_usage_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', 'day', 'model_id', 'price_id', name=op.f('pk_daily_price_usage'))
    )
    # Plain ADD COLUMN (no batch copy): works on SQLite and on a partitioned messages table.
    op.add_column('messages', sa.Column('price_id', sa.Integer(), nullable=True))
    op.add_column('messages', sa.Column('service_tier', sa.String(length=32), nullable=True))
    op.add_column('messages', sa.Column('batch', sa.Boolean(), server_default='0', nullable=False))
    op.add_column('messages', sa.Column('speed', sa.String(length=32), nullable=True))
    op.add_column('messages', _counter('tier_start'))
    op.add_column('messages', _counter('web_searches'))
    op.add_column('messages', sa.Column('pricing_gaps', sa.String(length=32), nullable=True))
    for table in ('daily_usage', 'usage_totals'):
        for name in ROLLUP_COLUMNS:
            op.add_column(table, _counter(name))
    _backfill()


def _backfill() -> None:
    """Today's prices become each priced model's first version; the usage they priced is
    attributed to it in the per-price rollup (messages keep price_id NULL: rewriting every
    row of a large ledger is not a migration's job)."""
    conn = op.get_bind()
    now = datetime.now(UTC)
    rows = conn.execute(sa.text(
        "SELECT id, created_at, " + ", ".join(f"price_{k}" for k in KINDS)
        + " FROM models WHERE has_pricing")).all()
    prices = sa.table('model_prices', sa.column('model_id'), sa.column('effective_from'),
                      sa.column('source'), sa.column('source_detail'),
                      sa.column('prices', sa.JSON()), sa.column('recorded_at'))
    for row in rows:
        rates = {kind: [value] for kind, value in zip(KINDS, row[2:]) if value is not None}
        created = row.created_at
        if isinstance(created, str):
            created = datetime.fromisoformat(created)
        conn.execute(prices.insert().values(
            model_id=row.id, effective_from=created, source='policy',
            source_detail='prices before price history (migration 0004)',
            prices={'rates': rates, 'thresholds': [], 'variants': [], 'fees': {}},
            recorded_at=now))
    conn.execute(sa.text(
        "INSERT INTO daily_price_usage (user_id, day, model_id, price_id, messages, cost_micros,"
        " web_searches) SELECT d.user_id, d.day, d.model_id, p.id, d.messages - d.unpriced_messages,"
        " d.cost_micros, 0 FROM daily_usage d JOIN model_prices p ON p.model_id = d.model_id"
        " WHERE d.messages > d.unpriced_messages"))


def downgrade() -> None:
    for table in ('daily_usage', 'usage_totals'):
        with op.batch_alter_table(table) as batch_op:
            for name in ROLLUP_COLUMNS:
                batch_op.drop_column(name)
    with op.batch_alter_table('messages') as batch_op:
        for name in MESSAGE_COLUMNS:
            batch_op.drop_column(name)
    op.drop_table('daily_price_usage')
    op.drop_index('ix_model_prices_model_id_effective_from', table_name='model_prices')
    op.drop_table('model_prices')
