"""drop models.has_pricing and models.price_*: a model's prices live in model_prices only

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

Since price history (0004) a model's prices are its versions in `model_prices`, and since the
catalog takes them from the version in effect at each moment nothing reads or writes the
columns `models` kept from before. Dropping them leaves one home for a model's prices, so an
operator reading the database cannot take stale columns for the prices in effect. No data is
lost: 0004 copied them into `model_prices`. The downgrade adds the columns back empty (the
code of 0008 does not read them either).
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

PRICE_COLUMNS = ('price_input', 'price_output', 'price_cache_read', 'price_cache_write',
                 'price_cache_write_1h')


def upgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN on both backends (SQLite >= 3.35): recreating `models`
    # in batch mode would need foreign keys switched off for every table that references it.
    for column in ('has_pricing', *PRICE_COLUMNS):
        op.drop_column('models', column)


def downgrade() -> None:
    op.add_column('models', sa.Column('has_pricing', sa.Boolean(), server_default='0',
                                      nullable=False))
    for column in PRICE_COLUMNS:
        op.add_column('models', sa.Column(column, sa.BigInteger(), nullable=True))
