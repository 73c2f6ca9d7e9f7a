"""The ledger writer thread: what it gathers into one commit, and where records go when the
ledger cannot take them (a real ledger, a real spool and journal on disk)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from ledger.engine import create_sync_engine
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord
from limiter.recording.journal import Journal
from limiter.recording.recorder import to_entry
from limiter.recording.spool import Spool
from limiter.recording.writer import LedgerWriter, Pending
from tests.support.gateway import message_count, query, seed_ledger

AT = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


class Batches:
    """What the writer reports, batch by batch (called from its thread)."""

    def __init__(self, expected_records: int) -> None:
        self.sizes: list[int] = []
        self.ids: list[str] = []
        self._expected = expected_records
        self.all_written = threading.Event()

    def __call__(self, batch: list[Pending]) -> None:
        self.sizes.append(len(batch))
        self.ids += [pending.record.id for pending in batch]
        if len(self.ids) >= self._expected:
            self.all_written.set()


def records(url: str, count: int) -> list[UsageRecord]:
    alice = int(query(url, "SELECT id FROM users WHERE username = 'alice'")[0][0])
    return [UsageRecord(id=str(uuid.uuid4()), user_id=alice, model="gpt-test",
                        provider="openai", usage=TokenUsage(input=10, output=n),
                        created_at=AT) for n in range(count)]


def spools(tmp_path: Path) -> tuple[Spool, Journal]:
    spool, journal = Spool(tmp_path / "spool"), Journal(tmp_path / "spool" / "journal")
    spool.open()
    journal.open()
    return spool, journal


def lines(directory: Path) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in directory.glob("*.jsonl"))


def test_records_arriving_within_the_linger_are_committed_together(
        ledger_url: str, tmp_path: Path) -> None:
    seed_ledger(ledger_url)
    batch = records(ledger_url, 7)
    spool, journal = spools(tmp_path)
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    written = Batches(len(batch))
    writer = LedgerWriter(engine, spool, journal, written, linger_s=0.5, max_batch=4)
    writer.start()
    try:
        # Three were journaled by the proxy already, four are journaled by the writer.
        for n, record in enumerate(batch):
            entry = to_entry(record)
            if n < 3:
                journal.append_unsynced([entry])
            writer.submit(Pending(record, entry, journaled=n < 3))
        assert written.all_written.wait(10)
    finally:
        writer.stop(10)
        engine.dispose()
    assert written.sizes == [4, 3]  # a full batch at once, the rest after the linger
    assert sorted(written.ids) == sorted(r.id for r in batch)
    assert message_count(ledger_url) == 7
    assert lines(tmp_path / "spool" / "journal") == 0  # all settled: the journal is emptied
    assert lines(tmp_path / "spool") == 0
    journal.close()
    spool.close()


def test_records_the_ledger_refuses_go_to_the_spool_and_leave_the_journal(
        sqlite_url: str, tmp_path: Path) -> None:
    seed_ledger(sqlite_url)
    batch = records(sqlite_url, 3)
    spool, journal = spools(tmp_path)
    # A ledger that cannot be opened (its directory does not exist): every commit fails.
    engine = create_sync_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/gone/ledger.db"))
    written = Batches(len(batch))
    writer = LedgerWriter(engine, spool, journal, written)
    writer.start()
    try:
        for record in batch:
            writer.submit(Pending(record, to_entry(record), journaled=False))
        assert written.all_written.wait(10)
    finally:
        writer.stop(10)
        engine.dispose()
    assert lines(tmp_path / "spool") == 3 and spool.pending == 3
    assert lines(tmp_path / "spool" / "journal") == 0
    assert message_count(sqlite_url) == 0
    journal.close()
    spool.close()


def test_stop_commits_what_was_submitted(sqlite_url: str, tmp_path: Path) -> None:
    seed_ledger(sqlite_url)
    batch = records(sqlite_url, 5)
    spool, journal = spools(tmp_path)
    engine = create_sync_engine(DatabaseSettings(url=sqlite_url))
    written = Batches(len(batch))
    writer = LedgerWriter(engine, spool, journal, written, linger_s=60.0)
    writer.start()
    for record in batch:
        writer.submit(Pending(record, to_entry(record), journaled=False))
    writer.stop(10)  # does not wait out the minute of linger
    engine.dispose()
    assert written.all_written.is_set()
    assert message_count(sqlite_url) == 5
    journal.close()
    spool.close()
