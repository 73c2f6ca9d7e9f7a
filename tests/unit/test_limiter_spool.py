"""The durable spool: one fsync'ed JSON line per record, removed only after a full replay."""

from __future__ import annotations

import json
import tracemalloc
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord
from limiter.recording.record_files import REPLAY_BATCH, Entry
from limiter.recording.recorder import from_entry, to_entry
from limiter.recording.spool import Spool


def entry(n: int) -> Entry:
    return {"id": f"rec-{n}", "n": n}


def lines(directory: Path) -> list[dict[str, object]]:
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]


async def test_append_writes_one_line_per_record_and_counts_pending(tmp_path: Path) -> None:
    seen: list[int] = []
    spool = Spool(tmp_path / "spool", on_pending=seen.append)
    spool.open()
    for n in range(3):
        spool.append(entry(n))
    assert lines(tmp_path / "spool") == [entry(0), entry(1), entry(2)]
    assert spool.pending == 3 and seen == [0, 1, 2, 3]
    spool.close()
    # A new process finds what the old one left.
    again = Spool(tmp_path / "spool")
    again.open()
    assert again.pending == 3


async def test_replay_sends_everything_then_removes_the_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    for n in range(5):
        spool.append(entry(n))
    received: list[Entry] = []

    async def write(batch: list[Entry]) -> None:
        received.extend(batch)

    assert await spool.replay(write) == 5
    assert received == [entry(n) for n in range(5)]
    assert list(tmp_path.glob("*.jsonl")) == [] and spool.pending == 0
    # New records after a replay go to a new file and replay too.
    spool.append(entry(9))
    assert await spool.replay(write) == 1
    assert received[-1] == entry(9)


async def test_failed_replay_keeps_every_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    for n in range(3):
        spool.append(entry(n))

    async def down(batch: list[Entry]) -> None:
        raise ConnectionRefusedError("ledger down")

    with pytest.raises(ConnectionRefusedError):
        await spool.replay(down)
    assert spool.pending == 3
    assert lines(tmp_path) == [entry(0), entry(1), entry(2)]


async def test_a_backlog_is_replayed_without_being_read_whole(tmp_path: Path) -> None:
    """An hour-long outage leaves a large spool: the replay holds one batch at a time (reading
    it whole once left a limiter's memory 10 MiB higher after every outage)."""
    spool = Spool(tmp_path)
    spool.open()
    padding = "x" * 1000
    spool.append_many([{"id": f"rec-{n}", "pad": padding} for n in range(20 * REPLAY_BATCH)])
    backlog_bytes = sum(path.stat().st_size for path in tmp_path.glob("*.jsonl"))
    sizes: list[int] = []

    async def write(batch: list[Entry]) -> None:
        sizes.append(len(batch))

    tracemalloc.start()
    try:
        assert await spool.replay(write) == 20 * REPLAY_BATCH
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sizes == [REPLAY_BATCH] * 20
    assert peak < backlog_bytes / 3, (peak, backlog_bytes)
    assert list(tmp_path.glob("*.jsonl")) == [] and spool.pending == 0


async def test_a_replay_failing_midway_keeps_the_whole_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append_many([entry(n) for n in range(2 * REPLAY_BATCH + 1)])
    sent: list[Entry] = []

    async def fails_second(batch: list[Entry]) -> None:
        if sent:
            raise ConnectionRefusedError("ledger went away again")
        sent.extend(batch)

    with pytest.raises(ConnectionRefusedError):
        await spool.replay(fails_second)
    assert len(sent) == REPLAY_BATCH
    assert spool.pending == 2 * REPLAY_BATCH + 1
    assert lines(tmp_path) == [entry(n) for n in range(2 * REPLAY_BATCH + 1)]
    # The next replay sends everything again (the ledger ignores ids it already has).
    again: list[Entry] = []

    async def write(batch: list[Entry]) -> None:
        again.extend(batch)

    assert await spool.replay(write) == 2 * REPLAY_BATCH + 1
    assert again == [entry(n) for n in range(2 * REPLAY_BATCH + 1)] and spool.pending == 0


async def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(entry(1))
    spool.close()
    path = next(tmp_path.glob("*.jsonl"))
    with path.open("ab") as handle:
        handle.write(b'{"id": "rec-2", "n"')  # a crash in the middle of an append
    received: list[Entry] = []

    async def write(batch: list[Entry]) -> None:
        received.extend(batch)

    reopened = Spool(tmp_path)
    reopened.open()
    await reopened.replay(write)
    assert received == [entry(1)]
    assert list(tmp_path.glob("*.jsonl")) == []


async def test_a_file_another_process_is_writing_is_left_alone(tmp_path: Path) -> None:
    writer = Spool(tmp_path)  # stands for a second limiter sharing the directory
    writer.open()
    writer.append(entry(1))
    replayer = Spool(tmp_path)
    replayer.open()
    received: list[Entry] = []

    async def write(batch: list[Entry]) -> None:
        received.extend(batch)

    assert await replayer.replay(write) == 0  # locked by its writer
    writer.close()
    assert await replayer.replay(write) == 1
    assert received == [entry(1)]


def test_usage_records_round_trip_through_the_spool_format() -> None:
    record = UsageRecord(id=str(uuid.uuid4()), user_id=7, model="claude-test",
                         provider="anthropic",
                         usage=TokenUsage(input=1, output=2, cache_read=3, cache_write=4,
                                          cache_write_1h=5),
                         created_at=datetime(2026, 3, 14, 12, 30, 1, 5, tzinfo=UTC),
                         chat="chat-9", partial=True, reservation_id="res-1",
                         service_tier="flex", batch=True, speed="fast", web_searches=3)
    assert from_entry(json.loads(json.dumps(to_entry(record)))) == record


def test_entries_spooled_before_variants_and_fees_still_replay() -> None:
    old = {"id": "r-1", "user_id": 7, "model": "gpt-test", "provider": "openai",
           "usage": {"input": 10, "output": 2}, "created_at": "2026-03-14T12:30:01+00:00",
           "chat": None, "partial": False, "reservation_id": None}
    record = from_entry(old)
    assert (record.service_tier, record.batch, record.speed, record.web_searches) == (
        None, False, None, 0)
    assert record.usage == TokenUsage(input=10, output=2)
