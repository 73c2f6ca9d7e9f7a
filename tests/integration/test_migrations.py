"""Tables come only from the migrations, and the migrations match ledger/schema.py."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from ledger.engine import create_sync_engine
from ledger.migrate import alembic_config, current_revision, head_revision, upgrade
from ledger.partitions import schema_comparison_options
from ledger.schema import metadata
from ledger.settings import DatabaseSettings
from tests.support.databases import create_database, drop_database, pg_database_url


@pytest.fixture
def empty_url(ledger_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database on the test's backend for a migration to start from (a scratch
    PostgreSQL database, dropped afterwards, or a SQLite file)."""
    if not ledger_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path}/migrating.db"
        return
    name = create_database("am_migrate")
    try:
        yield pg_database_url(name)
    finally:
        drop_database(name)


def _migrate(url: str, direction: str, revision: str) -> None:
    """Alembic's `upgrade` or `downgrade` to `revision` alone (`ledger.migrate.upgrade` also
    makes the coming months' partitions)."""
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            getattr(command, direction)(cfg, revision)
    finally:
        engine.dispose()


def test_migrated_schema_equals_the_table_definitions(ledger_url: str) -> None:
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts=schema_comparison_options(conn.dialect.name))
        diff = compare_metadata(context, metadata)
        assert diff == []
        assert current_revision(conn) == head_revision()
    engine.dispose()


def test_upgrade_creates_the_ledger_and_is_repeatable(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    upgrade(url)
    upgrade(url)
    engine = create_sync_engine(DatabaseSettings(url=url))
    assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_period_rollup_migration_backfills_existing_usage(empty_url: str) -> None:
    """A ledger at 0001 with usage gets its period rows and last days from the daily rollup."""
    from datetime import UTC, date, datetime

    from sqlalchemy import select, text

    from ledger.schema import period_spend, usage_totals

    url = empty_url
    upgrade(url, "0001")
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        now = datetime(2026, 11, 1, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users (id, username, name, email, created_at) "
                              "VALUES (1, 'u', '', '', :t)"), {"t": now})
            conn.execute(text("INSERT INTO models (id, name, provider, enabled, declared, "
                              "created_at) VALUES (1, 'm', 'openai', true, true, :t)"), {"t": now})
            for day, cost in ((date(2026, 10, 31), 5), (date(2026, 11, 1), 7),
                              (date(2026, 11, 2), 11)):
                conn.execute(text("INSERT INTO daily_usage (user_id, day, model_id, messages, "
                                  "cost_micros) VALUES (1, :d, 1, 1, :c)"), {"d": day, "c": cost})
            conn.execute(text("INSERT INTO usage_totals (user_id, model_id, messages, cost_micros)"
                              " VALUES (1, 1, 3, 23)"))
        upgrade(url)
        with engine.connect() as conn:
            rows = {(r.period, str(r.period_start)): r.cost_micros
                    for r in conn.execute(select(period_spend))}
            assert rows[("month", "2026-10-01")] == 5 and rows[("month", "2026-11-01")] == 18
            # 2026-10-26 is the Monday of Oct 31 and Nov 1; Nov 2 starts a new week.
            assert rows[("week", "2026-10-26")] == 12 and rows[("week", "2026-11-02")] == 11
            assert rows[("day", "2026-11-02")] == 11
            assert str(conn.execute(select(usage_totals.c.last_day)).scalar_one()) == "2026-11-02"
    finally:
        engine.dispose()


def test_change_notification_triggers_come_and_go_with_their_migration(empty_url: str) -> None:
    """PostgreSQL gets the triggers behind the limiter's check cache (ledger.notify); a
    downgrade removes them and its functions; SQLite has none either way."""
    from sqlalchemy import text


    url = empty_url
    postgres = url.startswith("postgresql")

    def triggers() -> set[str]:
        if not postgres:
            return set()
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(text(
                "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'agentmeter%' UNION "
                "SELECT proname FROM pg_proc WHERE proname LIKE 'agentmeter%'"))}

    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        upgrade(url)
        expected = {f"agentmeter_{table}_changed" for table in (
            "limit_config", "user_limits", "group_limits", "group_members", "users",
            "api_keys", "period_spend")} | {"agentmeter_spend_changed",
                                            "agentmeter_notify_spend", "agentmeter_notify_reset"}
        assert triggers() == (expected if postgres else set())
        _migrate(url, "downgrade", "0002")
        assert triggers() == set()
        upgrade(url)
        assert triggers() == (expected if postgres else set())
    finally:
        engine.dispose()


def test_partitioning_converts_a_ledger_in_place_with_its_messages(empty_url: str) -> None:
    """Messages in three months survive 0006 both ways with the same rows and report answers;
    on PostgreSQL each lands in its month's partition, and a record replayed after the
    conversion stays one row, counted once."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import func, select, text

    from ledger.partitions import attached_partitions, month_of, partition_name
    from ledger.reports import cost_table, user_detail
    from ledger.schema import messages, usage_totals
    from ledger.tokens import TokenUsage
    from ledger.usage import UsageRecord, record_usage_batch
    from ledger.users import get_user
    from tests.support.ledger_seed import seed_policy

    url = empty_url
    postgres = url.startswith("postgresql")
    now = datetime.now(UTC).replace(microsecond=0)
    engine = create_sync_engine(DatabaseSettings(url=url))

    def rows() -> list[tuple[object, ...]]:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(select(messages).order_by(messages.c.id))]

    def answers() -> tuple[object, ...]:
        with engine.connect() as conn:
            return (cost_table(conn, now - timedelta(days=100), now),
                    user_detail(conn, "alice", now - timedelta(days=100), now, now))

    def relkind() -> str:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT relkind FROM pg_class "
                                         "WHERE oid = to_regclass('messages')")).scalar())

    def foreign_keys() -> set[str]:
        with engine.connect() as conn:
            return set(conn.execute(text(
                "SELECT conname FROM pg_constraint WHERE contype = 'f' "
                "AND conrelid = to_regclass('messages')")).scalars())

    try:
        upgrade(url)
        seed_policy(engine)
        with engine.connect() as conn:
            alice = get_user(conn, "alice").id
        months = [now - timedelta(days=days) for days in (70, 40, 5)]
        records = [UsageRecord(uuid.uuid4().hex, alice, "gpt-5", "openai",
                               TokenUsage(input=1000 * n, output=n), at + timedelta(hours=n),
                               chat=f"chat-{n % 2}")
                   for at in months for n in range(1, 4)]
        with engine.begin() as conn:
            record_usage_batch(conn, records)
        before_rows, before_answers = rows(), answers()

        _migrate(url, "downgrade", "0005")  # the revision before 0006
        if postgres:
            assert relkind() == "r"
            # One table again: the keys of ledger/schema.py are back.
            assert foreign_keys() == {"fk_messages_user_id_users", "fk_messages_chat_id_chats",
                                      "fk_messages_model_id_models"}
        assert rows() == before_rows
        _migrate(url, "upgrade", "head")

        assert rows() == before_rows and answers() == before_answers
        if postgres:
            assert relkind() == "p"
            assert foreign_keys() == set()  # dropping a month must not lock users and models
            with engine.connect() as conn:
                partitions = {p.name for p in attached_partitions(conn)}
                for at in months:
                    held = conn.execute(text(
                        f'SELECT count(*) FROM "{partition_name(month_of(at))}"')).scalar()
                    expected = sum(1 for r in records if month_of(r.created_at) == month_of(at))
                    assert held == expected
            assert {partition_name(month_of(at)) for at in months} <= partitions
            assert partition_name(month_of(now + timedelta(days=62))) in partitions
        with engine.begin() as conn:
            [again] = record_usage_batch(conn, [records[0]])
        assert not again.inserted and not again.refused
        assert rows() == before_rows
        with engine.connect() as conn:
            assert conn.execute(select(func.sum(usage_totals.c.messages))).scalar() == 9
    finally:
        engine.dispose()


def test_cost_table_indexes_replace_the_narrower_ones_and_go_back(empty_url: str) -> None:
    """0008 widens period_spend's and chat_daily_usage's indexes on a ledger with usage (the
    cost table answers the same), and its downgrade restores the 0007 ones."""
    from datetime import UTC, datetime

    from ledger.reports import cost_table
    from ledger.tokens import TokenUsage
    from tests.support.ledger_seed import record, seed_policy

    url = empty_url

    def indexes() -> dict[str | None, list[str | None]]:
        found = {}
        for table in ("period_spend", "chat_daily_usage"):
            for index in inspect(engine).get_indexes(table):
                found[index["name"]] = index["column_names"]
        return found

    def table() -> list[tuple[str, int, int]]:
        with engine.connect() as conn:
            page = cost_table(conn, datetime(2026, 10, 1, tzinfo=UTC),
                              datetime(2026, 12, 1, tzinfo=UTC))
        return [(row.username, row.totals.cost_micros, row.totals.chats) for row in page.rows]

    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        upgrade(url, "0007")
        seed_policy(engine)
        for day, chat in ((31, "c1"), (1, "c1"), (2, "c2")):
            at = datetime(2026, 10 if day == 31 else 11, day, 12, tzinfo=UTC)
            record(engine, "alice", "claude-sonnet-4-5", TokenUsage(input=1000), at, chat=chat)
        old = {"ix_period_spend_period_period_start": ["period", "period_start"],
               "ix_chat_daily_usage_user_id_day": ["user_id", "day"]}
        assert indexes() == old
        upgrade(url)
        assert indexes() == {
            "ix_period_spend_period_period_start_user_id_cost_micros":
                ["period", "period_start", "user_id", "cost_micros"],
            "ix_chat_daily_usage_user_id_day_chat_id": ["user_id", "day", "chat_id"]}
        assert table() == [("alice", 9000, 2)]
        _migrate(url, "downgrade", "0007")
        assert indexes() == old
    finally:
        engine.dispose()


def test_model_price_columns_go_and_come_back_without_touching_usage(empty_url: str) -> None:
    """0009 drops models.has_pricing and models.price_* from a ledger whose models have usage
    (rows that reference them, foreign keys on), prices and reports unchanged; its downgrade
    adds the columns back."""
    from datetime import UTC, datetime

    from ledger.catalog import all_models
    from ledger.reports import user_detail
    from ledger.tokens import TokenUsage
    from tests.support.ledger_seed import record, seed_policy

    url = empty_url
    price_columns = {"has_pricing", "price_input", "price_output", "price_cache_read",
                     "price_cache_write", "price_cache_write_1h"}
    at = datetime(2026, 11, 2, 12, tzinfo=UTC)

    def columns() -> set[str]:
        return {column["name"] for column in inspect(engine).get_columns("models")}

    def answers() -> tuple[object, ...]:
        with engine.connect() as conn:
            detail = user_detail(conn, "alice", datetime(2026, 11, 1, tzinfo=UTC),
                                 datetime(2026, 12, 1, tzinfo=UTC), at)
            models = all_models(conn, at)
        return (detail.summary, [(m.model, m.totals) for m in detail.models],
                {model.name: model.prices for model in models})

    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        upgrade(url, "0008")
        seed_policy(engine)
        record(engine, "alice", "claude-sonnet-4-5", TokenUsage(input=1000, output=10), at)
        record(engine, "alice", "mystery-model", TokenUsage(input=7), at)
        assert price_columns <= columns()
        before = answers()
        assert before[2]["claude-sonnet-4-5"] is not None and before[0].cost_micros > 0
        upgrade(url)
        assert not price_columns & columns()
        assert answers() == before
        record(engine, "alice", "claude-sonnet-4-5", TokenUsage(input=1), at)
        _migrate(url, "downgrade", "0008")
        assert price_columns <= columns()
    finally:
        engine.dispose()
