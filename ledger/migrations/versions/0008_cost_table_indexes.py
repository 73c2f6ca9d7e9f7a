"""indexes the cost table reads whole: period spend by period, chats by user and day

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

The cost table ranks every user by spend over the range from `period_spend` (whole months,
weeks and days: ledger.periods.covering_periods) and counts chats only for the page's users.
Both reads become index-only: `period_spend`'s (period, period_start) index gains user_id and
cost_micros, and `chat_daily_usage`'s (user_id, day) index gains chat_id. On a ledger of
3M messages over 400 days that took the year's cost table from about 2.4 s to about 0.1 s (see
the README). No data changes; the indexes build from the rollups already there (seconds per
million rows; the tables are locked against writes while they build).
"""

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

SPEND_OLD, SPEND_NEW = ("ix_period_spend_period_period_start",
                        "ix_period_spend_period_period_start_user_id_cost_micros")
CHATS_OLD, CHATS_NEW = ("ix_chat_daily_usage_user_id_day",
                        "ix_chat_daily_usage_user_id_day_chat_id")


def upgrade() -> None:
    with op.batch_alter_table('period_spend', schema=None) as batch_op:
        batch_op.create_index(SPEND_NEW, ['period', 'period_start', 'user_id', 'cost_micros'],
                              unique=False)
        batch_op.drop_index(SPEND_OLD)
    with op.batch_alter_table('chat_daily_usage', schema=None) as batch_op:
        batch_op.create_index(CHATS_NEW, ['user_id', 'day', 'chat_id'], unique=False)
        batch_op.drop_index(CHATS_OLD)


def downgrade() -> None:
    with op.batch_alter_table('chat_daily_usage', schema=None) as batch_op:
        batch_op.create_index(CHATS_OLD, ['user_id', 'day'], unique=False)
        batch_op.drop_index(CHATS_NEW)
    with op.batch_alter_table('period_spend', schema=None) as batch_op:
        batch_op.create_index(SPEND_OLD, ['period', 'period_start'], unique=False)
        batch_op.drop_index(SPEND_NEW)
