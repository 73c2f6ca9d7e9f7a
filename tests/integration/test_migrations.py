"""Tables come only from the migrations, and the migrations match ledger/schema.py."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from ledger.engine import create_sync_engine
from ledger.migrate import current_revision, head_revision, upgrade
from ledger.schema import metadata
from ledger.settings import DatabaseSettings


def test_migrated_schema_equals_the_table_definitions(ledger_url: str) -> None:
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
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
