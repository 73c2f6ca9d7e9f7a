"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('groups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_groups')),
    sa.UniqueConstraint('name', name=op.f('uq_groups_name'))
    )
    op.create_table('limit_config',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('period', sa.String(length=16), server_default='month', nullable=False),
    sa.Column('default_limit_micros', sa.BigInteger(), nullable=True),
    sa.Column('group_policy', sa.String(length=16), server_default='lowest', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("group_policy IN ('lowest', 'highest')", name=op.f('ck_limit_config_group_policy')),
    sa.CheckConstraint("period IN ('day', 'week', 'month')", name=op.f('ck_limit_config_period')),
    sa.CheckConstraint('default_limit_micros IS NULL OR default_limit_micros > 0', name=op.f('ck_limit_config_default')),
    sa.CheckConstraint('id = 1', name=op.f('ck_limit_config_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_limit_config'))
    )
    op.create_table('models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('declared', sa.Boolean(), nullable=False),
    sa.Column('seen_in_traffic', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('max_output_tokens', sa.Integer(), nullable=True),
    sa.Column('has_pricing', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('price_input', sa.BigInteger(), nullable=True),
    sa.Column('price_output', sa.BigInteger(), nullable=True),
    sa.Column('price_cache_read', sa.BigInteger(), nullable=True),
    sa.Column('price_cache_write', sa.BigInteger(), nullable=True),
    sa.Column('price_cache_write_1h', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models')),
    sa.UniqueConstraint('name', name=op.f('uq_models_name'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=1024), nullable=False),
    sa.Column('name', sa.String(length=1024), server_default='', nullable=False),
    sa.Column('email', sa.String(length=1024), server_default='', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_keys_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_user_id'), ['user_id'], unique=False)

    op.create_table('chats',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_chats_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chats')),
    sa.UniqueConstraint('user_id', 'external_id', name=op.f('uq_chats_user_id_external_id'))
    )
    op.create_table('daily_usage',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('messages', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_messages', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cost_micros', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cache_read_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cache_write_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cache_write_1h_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_input_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_output_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_cache_read_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_cache_write_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_cache_write_1h_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_daily_usage_model_id_models')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_daily_usage_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', 'day', 'model_id', name=op.f('pk_daily_usage'))
    )
    with op.batch_alter_table('daily_usage', schema=None) as batch_op:
        batch_op.create_index('ix_daily_usage_day', ['day'], unique=False)

    op.create_table('group_limits',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('limit_micros', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('limit_micros > 0', name=op.f('ck_group_limits_positive')),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_group_limits_group_id_groups')),
    sa.PrimaryKeyConstraint('group_id', name=op.f('pk_group_limits'))
    )
    op.create_table('group_members',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_group_members_group_id_groups')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_group_members_user_id_users')),
    sa.PrimaryKeyConstraint('group_id', 'user_id', name=op.f('pk_group_members'))
    )
    with op.batch_alter_table('group_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_group_members_user_id'), ['user_id'], unique=False)

    op.create_table('model_aliases',
    sa.Column('alias', sa.String(length=255), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_aliases_model_id_models')),
    sa.PrimaryKeyConstraint('alias', name=op.f('pk_model_aliases'))
    )
    with op.batch_alter_table('model_aliases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_aliases_model_id'), ['model_id'], unique=False)

    op.create_table('reservations',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_reservations_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reservations'))
    )
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reservations_user_id'), ['user_id'], unique=False)

    op.create_table('usage_totals',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('messages', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_messages', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cost_micros', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cache_read_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cache_write_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cache_write_1h_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_input_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_output_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_cache_read_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_cache_write_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_cache_write_1h_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_usage_totals_model_id_models')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_usage_totals_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', 'model_id', name=op.f('pk_usage_totals'))
    )
    op.create_table('user_limits',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('limit_micros', sa.BigInteger(), nullable=True),
    sa.CheckConstraint('limit_micros IS NULL OR limit_micros > 0', name=op.f('ck_user_limits_positive')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_limits_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_user_limits'))
    )
    op.create_table('chat_daily_usage',
    sa.Column('chat_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('messages', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_messages', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cost_micros', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cache_read_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cache_write_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cache_write_1h_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['chat_id'], ['chats.id'], name=op.f('fk_chat_daily_usage_chat_id_chats')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_chat_daily_usage_user_id_users')),
    sa.PrimaryKeyConstraint('chat_id', 'day', name=op.f('pk_chat_daily_usage'))
    )
    with op.batch_alter_table('chat_daily_usage', schema=None) as batch_op:
        batch_op.create_index('ix_chat_daily_usage_user_id_day', ['user_id', 'day'], unique=False)

    op.create_table('messages',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('chat_id', sa.Integer(), nullable=True),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cache_read_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cache_write_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cache_write_1h_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unpriced_tokens', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cost_micros', sa.BigInteger(), nullable=True),
    sa.Column('partial', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['chat_id'], ['chats.id'], name=op.f('fk_messages_chat_id_chats')),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_messages_model_id_models')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_messages_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_messages_chat_id'), ['chat_id'], unique=False)
        batch_op.create_index('ix_messages_user_id_created_at', ['user_id', 'created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_user_id_created_at')
        batch_op.drop_index(batch_op.f('ix_messages_chat_id'))

    op.drop_table('messages')
    with op.batch_alter_table('chat_daily_usage', schema=None) as batch_op:
        batch_op.drop_index('ix_chat_daily_usage_user_id_day')

    op.drop_table('chat_daily_usage')
    op.drop_table('user_limits')
    op.drop_table('usage_totals')
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reservations_user_id'))

    op.drop_table('reservations')
    with op.batch_alter_table('model_aliases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_aliases_model_id'))

    op.drop_table('model_aliases')
    with op.batch_alter_table('group_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_group_members_user_id'))

    op.drop_table('group_members')
    op.drop_table('group_limits')
    with op.batch_alter_table('daily_usage', schema=None) as batch_op:
        batch_op.drop_index('ix_daily_usage_day')

    op.drop_table('daily_usage')
    op.drop_table('chats')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_user_id'))

    op.drop_table('api_keys')
    op.drop_table('users')
    op.drop_table('models')
    op.drop_table('limit_config')
    op.drop_table('groups')
