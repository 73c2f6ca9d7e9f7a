"""Coder identity of users and groups

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-06

Users and groups remember Coder's id (users synced from Coder or met through a Coder token,
groups synced from Coder), so a rename in Coder is the same row; users carry Coder's suspension.
On PostgreSQL a change of `suspended` is announced like any other UPDATE of `users` (the
statement trigger of migration 0003 covers every column), so key-check caches drop it at once.
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('coder_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('suspended', sa.Boolean(), server_default='0',
                                      nullable=False))
        batch_op.create_index('ix_users_coder_id', ['coder_id'], unique=True)
    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('coder_id', sa.String(length=36), nullable=True))
        batch_op.create_index('ix_groups_coder_id', ['coder_id'], unique=True)


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+ has it): batch mode would recreate the
    # tables, and dropping `groups` or `users` fails while rows of other tables refer to them.
    op.drop_index('ix_groups_coder_id', table_name='groups')
    op.drop_column('groups', 'coder_id')
    op.drop_index('ix_users_coder_id', table_name='users')
    op.drop_column('users', 'suspended')
    op.drop_column('users', 'coder_id')
