"""Message retention: pruning removes raw messages and nothing any report, limit or counter
reads; a pruned record can never be counted again; recording goes on while months are pruned."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select, text

from exporter.app import build_registry, exporter_running
from exporter.settings import ExporterSettings
from ledger import metric_names as names
from ledger.engine import create_sync_engine
from ledger.partitions import attached_partitions, month_of, partition_name
from ledger.prune import MAINTENANCE_LOCK_KEY, maintain, plan_prune
from ledger.reports import cost_table, user_detail
from ledger.retention import retention_edge, retention_state, save_retention_state
from ledger.schema import chat_daily_usage, daily_usage, messages, period_spend, usage_totals
from ledger.settings import DatabaseSettings, LedgerSettings
from ledger.spend import limit_status
from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord, record_usage_batch
from ledger.users import get_user
from limiter.recording.recorder import from_entry, to_entry
from limiter.recording.spool import Spool
from tests.support.ledger_seed import seed_policy

NOW = datetime.now(UTC).replace(microsecond=0)
RETENTION = LedgerSettings(message_retention_days=60, prune_batch_rows=3)
USERS = ("alice", "bob", "carol", "dave", "erin")
# Days before NOW: on both sides of the retention edge, across several months.
AGES = (200, 130, 95, 75, 61, 59, 30, 1)
ROLLUPS = (daily_usage, usage_totals, period_spend, chat_daily_usage)


def _usage_records(engine: Engine) -> list[UsageRecord]:
    with engine.connect() as conn:
        ids = {name: get_user(conn, name).id for name in USERS}
    records = []
    for age in AGES:
        at = NOW - timedelta(days=age, hours=age % 7)
        records += [
            UsageRecord(uuid.uuid4().hex, ids["alice"], "claude-sonnet-4-5", "anthropic",
                        TokenUsage(input=1000 + age, output=100, cache_read=age), at,
                        chat="a1" if age > 60 else "a2"),
            UsageRecord(uuid.uuid4().hex, ids["bob"], "gpt-5", "openai",
                        TokenUsage(input=50_000, output=age * 10), at + timedelta(minutes=5)),
            UsageRecord(uuid.uuid4().hex, ids["carol"], "mystery-model", "openai",
                        TokenUsage(input=7, output=age), at, chat=f"c{age}"),
        ]
    return records


def _seeded(url: str) -> Iterator[tuple[Engine, list[UsageRecord]]]:
    engine = create_sync_engine(DatabaseSettings(url=url))
    seed_policy(engine)
    records = _usage_records(engine)
    with engine.begin() as conn:
        assert all(r.inserted for r in record_usage_batch(conn, records))
    yield engine, records
    engine.dispose()


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[tuple[Engine, list[UsageRecord]]]:
    yield from _seeded(ledger_url)


@pytest.fixture
def pg_ledger(pg_url: str) -> Iterator[tuple[Engine, list[UsageRecord]]]:
    yield from _seeded(pg_url)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The ledger collector's samples, as a scrape at NOW sees them."""
    registry, close = build_registry(ExporterSettings(), DatabaseSettings(url=url),
                                     clock=lambda: NOW)
    try:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in registry.collect() for s in family.samples
                if not s.name.startswith("agentmeter_ledger_")
                and s.name != names.COLLECTOR_DURATION_SECONDS}
    finally:
        close()


def _answers(engine: Engine) -> tuple[Any, ...]:
    """Everything an operator reads: cost tables, the user detail, limits and /metrics."""
    edge = retention_edge(NOW, RETENTION.message_retention_days)
    with engine.connect() as conn:
        year = [cost_table(conn, NOW - timedelta(days=365), NOW + timedelta(days=1), page=page,
                           per_page=2) for page in (1, 2)]
        around_edge = cost_table(conn, edge - timedelta(days=20), edge + timedelta(days=20))
        searched = cost_table(conn, NOW - timedelta(days=365), NOW, search="liddell")
        details = [user_detail(conn, name, edge - timedelta(days=80), NOW, NOW)
                   for name in ("alice", "carol")]
        limits = [limit_status(conn, get_user(conn, name).id, NOW) for name in USERS]
    return year, around_edge, searched, details, limits, _scrape(str(engine.url))


def _rollups(engine: Engine) -> list[list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return [sorted(tuple(row) for row in conn.execute(select(table))) for table in ROLLUPS]


def _message_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(messages.c.id)).scalars())


def test_reports_limits_and_exporter_answer_the_same_after_pruning(
        ledger: tuple[Engine, list[UsageRecord]]) -> None:
    engine, records = ledger
    before = _answers(engine)
    with engine.connect() as conn:
        planned = plan_prune(conn, RETENTION.message_retention_days, NOW)

    pruned = maintain(engine, RETENTION, NOW)

    assert pruned is not None and pruned.kept_since is not None
    assert _answers(engine) == before
    edge = retention_edge(NOW, RETENTION.message_retention_days)
    gone = sorted(r.id for r in records if r.created_at < pruned.kept_since)
    assert pruned.messages == planned.messages == len(gone) > 0
    assert set(_message_ids(engine)) == {r.id for r in records} - set(gone)
    # The 200- and 130-day-old messages go on both backends; PostgreSQL keeps whole months.
    assert {r.id for r in records if r.created_at < NOW - timedelta(days=99)} <= set(gone)
    if engine.dialect.name == "sqlite":
        assert pruned.kept_since == edge
    else:
        assert pruned.kept_since == datetime.combine(month_of(edge), datetime.min.time(), UTC)
    assert (pruned.first, pruned.last) == (min(r.created_at for r in records if r.id in gone),
                                           max(r.created_at for r in records if r.id in gone))
    with engine.connect() as conn:
        state = retention_state(conn)
    assert (state.kept_since, state.pruned_at, state.pruned_messages) == \
        (pruned.kept_since, NOW, len(gone))
    assert state.oldest_message_at == min(r.created_at for r in records if r.id not in gone)


def test_pruned_records_replayed_or_reimported_add_nothing(
        ledger: tuple[Engine, list[UsageRecord]], tmp_path: Path) -> None:
    engine, records = ledger
    pruned = maintain(engine, RETENTION, NOW)
    assert pruned is not None and pruned.kept_since is not None
    old = [r for r in records if r.created_at < pruned.kept_since]
    kept = [r for r in records if r.created_at >= pruned.kept_since]
    rollups, ids = _rollups(engine), _message_ids(engine)

    # A spool replay: the records as the limiter spooled them, read back and written again.
    spool = Spool(tmp_path / "spool")
    spool.open()
    spool.append_many([to_entry(r) for r in [*old, *kept]])
    results = []

    async def write(entries: list[dict[str, Any]]) -> None:
        with engine.begin() as conn:
            results.extend(record_usage_batch(conn, [from_entry(e) for e in entries]))

    assert asyncio.run(spool.replay(write)) == len(records)
    assert [r.refused for r in results] == [True] * len(old) + [False] * len(kept)
    assert not any(r.inserted for r in results)

    # A re-import: the same usage under new ids (an importer that cannot know the old ones).
    with engine.begin() as conn:
        again = record_usage_batch(conn, [UsageRecord(uuid.uuid4().hex, r.user_id, r.model,
                                                      r.provider, r.usage, r.created_at,
                                                      r.chat) for r in old])
    assert all(r.refused and not r.inserted for r in again)
    assert _rollups(engine) == rollups
    assert _message_ids(engine) == ids


def test_prune_is_idempotent_and_dry_run_changes_nothing(
        ledger: tuple[Engine, list[UsageRecord]]) -> None:
    engine, _ = ledger
    ids = _message_ids(engine)
    with engine.connect() as conn:
        plan = plan_prune(conn, RETENTION.message_retention_days, NOW)
    assert plan.messages > 0 and _message_ids(engine) == ids
    first = maintain(engine, RETENTION, NOW)
    second = maintain(engine, RETENTION, NOW)
    assert first is not None and first.messages == plan.messages
    assert second is not None and (second.messages, second.kept_since) == (0, None)
    with engine.connect() as conn:
        state = retention_state(conn)
    # The last prune removed nothing; how far back messages go is unchanged.
    assert (state.pruned_messages, state.kept_since) == (0, first.kept_since)


def test_a_month_an_interrupted_prune_detached_goes_at_the_next_one(
        pg_ledger: tuple[Engine, list[UsageRecord]]) -> None:
    engine, records = pg_ledger
    with engine.connect() as conn:
        plan = plan_prune(conn, RETENTION.message_retention_days, NOW)
        oldest = attached_partitions(conn)[0]
    # What a prune that stopped after its detach leaves: kept_since moved, a month detached.
    with engine.begin() as conn:
        save_retention_state(conn, kept_since=oldest.end)
        conn.execute(text(f'ALTER TABLE messages DETACH PARTITION "{oldest.name}"'))
    assert oldest.end < NOW - timedelta(days=RETENTION.message_retention_days)

    pruned = maintain(engine, RETENTION, NOW)

    assert pruned is not None and pruned.kept_since is not None
    gone = {r.id for r in records if r.created_at < pruned.kept_since}
    assert pruned.messages == plan.messages == len(gone)
    assert set(_message_ids(engine)) == {r.id for r in records} - gone
    with engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass(:name)"),
                            {"name": oldest.name}).scalar() is None
        assert retention_state(conn).pruned_messages == len(gone)


def test_without_retention_maintenance_keeps_every_message(
        ledger: tuple[Engine, list[UsageRecord]]) -> None:
    engine, records = ledger
    assert maintain(engine, LedgerSettings(), NOW) is not None
    assert len(_message_ids(engine)) == len(records)
    with engine.connect() as conn:
        state = retention_state(conn)
    assert (state.kept_since, state.pruned_at) == (None, None)
    assert state.oldest_message_at == min(r.created_at for r in records)


def test_one_process_maintains_at_a_time(pg_url: str) -> None:
    import psycopg

    engine = create_sync_engine(DatabaseSettings(url=pg_url))
    try:
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (MAINTENANCE_LOCK_KEY,))
            assert maintain(engine, RETENTION, NOW) is None
            other.execute("SELECT pg_advisory_unlock(%s)", (MAINTENANCE_LOCK_KEY,))
            assert maintain(engine, RETENTION, NOW) is not None
    finally:
        engine.dispose()


def test_a_month_without_partition_gets_one_when_a_record_needs_it(pg_url: str) -> None:
    engine = create_sync_engine(DatabaseSettings(url=pg_url))
    try:
        seed_policy(engine)
        long_ago = datetime(2019, 3, 10, 8, tzinfo=UTC)
        with engine.begin() as conn:
            user = get_user(conn, "alice").id
            [result] = record_usage_batch(conn, [UsageRecord(
                "imported-1", user, "gpt-5", "openai", TokenUsage(input=10), long_ago)])
        assert result.inserted
        with engine.connect() as conn:
            assert partition_name(month_of(long_ago)) in {p.name for p in
                                                          attached_partitions(conn)}
            row = conn.execute(text(f'SELECT id FROM "{partition_name(month_of(long_ago))}"'))
            assert row.scalars().all() == ["imported-1"]
    finally:
        engine.dispose()


def test_concurrent_recording_during_a_prune_loses_and_doubles_nothing(pg_url: str) -> None:
    engine = create_sync_engine(DatabaseSettings(url=pg_url, pool_size=8))
    try:
        seed_policy(engine)
        with engine.connect() as conn:
            user = get_user(conn, "bob").id
        old_month = NOW - timedelta(days=150)

        def batch(at: datetime, size: int) -> list[UsageRecord]:
            return [UsageRecord(uuid.uuid4().hex, user, "gpt-5", "openai",
                                TokenUsage(input=100, output=10), at) for _ in range(size)]

        with engine.begin() as conn:
            for _ in range(20):
                record_usage_batch(conn, batch(old_month, 500))
        written: list[set[str]] = [set() for _ in range(4)]
        committed_at: list[float] = []
        errors: list[BaseException] = []
        start = threading.Barrier(5)

        def writer(mine: set[str]) -> None:
            try:
                start.wait()
                previous: list[UsageRecord] = []
                for round_ in range(150):
                    records = batch(NOW, 4)
                    # Every third round repeats the previous batch, as a replay would.
                    sent = records + (previous if round_ % 3 == 0 else [])
                    with engine.begin() as conn:
                        record_usage_batch(conn, sent)
                    committed_at.append(time.perf_counter())
                    mine.update(r.id for r in records)
                    previous = records
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(mine,)) for mine in written]
        for thread in threads:
            thread.start()
        start.wait()
        pruning_started = time.perf_counter()
        pruned = maintain(engine, RETENTION, NOW)
        pruning_ended = time.perf_counter()
        for thread in threads:
            thread.join()

        assert errors == []
        # Recording went on while the month was pruned (it did not wait for the prune).
        assert any(pruning_started < at < pruning_ended for at in committed_at)
        assert pruned is not None and pruned.messages == 10_000
        recorded = set().union(*written)
        assert len(recorded) == 4 * 150 * 4
        with engine.connect() as conn:
            counts = dict(conn.execute(select(messages.c.id, func.count())
                                       .group_by(messages.c.id)).all())
            totals = conn.execute(select(usage_totals.c.messages)
                                  .where(usage_totals.c.user_id == user)).scalar_one()
        assert set(counts) == recorded and set(counts.values()) == {1}
        # The lifetime counter holds the pruned month and every new record exactly once.
        assert totals == 10_000 + len(recorded)
    finally:
        engine.dispose()


async def test_exporter_prunes_in_the_background_and_reports_it(
        ledger: tuple[Engine, list[UsageRecord]]) -> None:
    import aiohttp

    engine, records = ledger
    url = str(engine.url.render_as_string(hide_password=False))
    async with exporter_running(ExporterSettings(), DatabaseSettings(url=url),
                                listen="127.0.0.1:0", ledger=RETENTION,
                                clock=lambda: NOW) as where, aiohttp.ClientSession() as http:
        for _ in range(100):
            async with http.get(f"{where.url}/metrics") as response:
                body = await response.text()
            samples = {s.name: s.value for f in text_string_to_metric_families(body)
                       for s in f.samples}
            if names.LEDGER_PRUNE_LAST_SUCCESS_TIMESTAMP_SECONDS in samples:
                break
            await asyncio.sleep(0.1)
    with engine.connect() as conn:
        state = retention_state(conn)
    assert state.kept_since is not None
    gone = [r for r in records if r.created_at < state.kept_since]
    assert samples[names.LEDGER_MESSAGE_RETENTION_SECONDS] == 60 * 86_400
    assert samples[names.LEDGER_PRUNE_LAST_SUCCESS_TIMESTAMP_SECONDS] == NOW.timestamp()
    assert samples[names.LEDGER_PRUNE_LAST_REMOVED_MESSAGES] == len(gone) > 0
    oldest = min(r.created_at for r in records if r.created_at >= state.kept_since)
    assert samples[names.LEDGER_MESSAGES_OLDEST_TIMESTAMP_SECONDS] == oldest.timestamp()
    assert samples["agentmeter_collector_success"] == 1
    assert len(_message_ids(engine)) == len(records) - len(gone)


def test_an_empty_ledger_reports_retention_without_timestamps(ledger_url: str) -> None:
    registry, close = build_registry(ExporterSettings(), DatabaseSettings(url=ledger_url))
    try:
        assert registry.get_sample_value(names.LEDGER_MESSAGE_RETENTION_SECONDS) == 0
        for absent in (names.LEDGER_MESSAGES_OLDEST_TIMESTAMP_SECONDS,
                       names.LEDGER_PRUNE_LAST_SUCCESS_TIMESTAMP_SECONDS,
                       names.LEDGER_PRUNE_LAST_REMOVED_MESSAGES):
            assert registry.get_sample_value(absent) is None
        assert registry.get_sample_value(names.COLLECTOR_SUCCESS,
                                         {"collector": "retention"}) == 1
    finally:
        close()



async def test_a_failed_maintenance_round_is_logged_and_tried_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A ledger without tables (never migrated): each round fails, is logged, and the task
    keeps going."""
    from exporter.ledger_maintenance import run_maintenance

    engine = create_sync_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/empty.db"))
    settings = LedgerSettings(message_retention_days=30, maintenance_interval_seconds=0.05)
    with caplog.at_level(logging.WARNING, logger="agentmeter.exporter"):
        task = asyncio.create_task(run_maintenance(engine, settings, lambda: NOW))
        for _ in range(100):
            if len(caplog.records) >= 2:
                break
            await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    engine.dispose()
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) >= 2
    assert all(m.startswith("ledger maintenance failed (no such table") for m in failures)
