"""ledger change notifications for the limiter's check cache

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

PostgreSQL only: every committed change to a user's period spend, and any change to what a key
check reads besides spend (limits, overrides, groups, memberships, users, keys), is announced on
the channel `agentmeter_ledger` (see ledger/notify.py for the payloads). SQLite ledgers have no
notifications and the limiter checks them on every request.
"""

from alembic import op

from ledger.notify import CHANNEL

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# Tables whose rows a key check reads, and the statements that can change what it reads there.
# New users and new keys are not announced: nothing can have been cached for them yet.
RESET_ON = {
    "limit_config": "INSERT OR UPDATE OR DELETE OR TRUNCATE",
    "user_limits": "INSERT OR UPDATE OR DELETE OR TRUNCATE",
    "group_limits": "INSERT OR UPDATE OR DELETE OR TRUNCATE",
    "group_members": "INSERT OR UPDATE OR DELETE OR TRUNCATE",
    "users": "UPDATE OR DELETE OR TRUNCATE",
    "api_keys": "UPDATE OR DELETE OR TRUNCATE",
    # Spend only grows; rows removed (by hand, or a test emptying the ledger) reset everything.
    "period_spend": "DELETE OR TRUNCATE",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"""
        CREATE FUNCTION agentmeter_notify_spend() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', concat_ws(' ', 's', NEW.user_id, NEW.period,
                              to_char(NEW.period_start, 'YYYY-MM-DD'), NEW.cost_micros));
            RETURN NULL;
        END $$""")
    op.execute(f"""
        CREATE FUNCTION agentmeter_notify_reset() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', 'r');
            RETURN NULL;
        END $$""")
    op.execute("CREATE TRIGGER agentmeter_spend_changed AFTER INSERT OR UPDATE ON period_spend "
               "FOR EACH ROW EXECUTE FUNCTION agentmeter_notify_spend()")
    for table, events in RESET_ON.items():
        op.execute(f"CREATE TRIGGER agentmeter_{table}_changed AFTER {events} ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION agentmeter_notify_reset()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in RESET_ON:
        op.execute(f"DROP TRIGGER agentmeter_{table}_changed ON {table}")
    op.execute("DROP TRIGGER agentmeter_spend_changed ON period_spend")
    op.execute("DROP FUNCTION agentmeter_notify_reset()")
    op.execute("DROP FUNCTION agentmeter_notify_spend()")
