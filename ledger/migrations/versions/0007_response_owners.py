"""whose each stored provider answer is

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-06

All users share the gateway's provider key, so the gateway records which user each OpenAI
Responses id belongs to (from the answers it relays) and answers 404 to anyone else who names it.
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'response_owners',
        sa.Column('response_id', sa.String(length=255), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                                name='fk_response_owners_user_id_users'),
        sa.PrimaryKeyConstraint('response_id', name='pk_response_owners'),
    )


def downgrade() -> None:
    op.drop_table('response_owners')
