"""Recording each answered request in the ledger, or in the spool when the ledger is away.

No usage record is ever lost: a record the ledger cannot take right now is fsync'ed to the
local spool, and a background task replays the spool (at start-up and every few seconds while
it is not empty). Replays are idempotent because every record carries the uuid generated when
its request arrived.

A process can also die (SIGKILL, OOM) between answering a request and committing its record.
So the proxy appends each record to a journal (the `journal` spool) before the answer's last
byte leaves (`journal`: one write to the page cache, which a killed process cannot lose); the
ledger writer thread fsyncs it with the batch and empties it once everything in it has reached
the ledger or the spool, and a successor replays what a dead process left there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.reservations import release
from ledger.settings import DatabaseSettings
from ledger.tokens import TOKEN_KINDS, TokenUsage
from ledger.usage import UsageRecord, record_usage_batch, refused_count
from limiter.database import DATABASE_ERRORS, in_transaction
from limiter.recording.journal import Journal
from limiter.recording.record_files import Entry
from limiter.recording.spool import Spool
from limiter.recording.writer import LedgerWriter, Pending

log = logging.getLogger("agentmeter.limiter")

T = TypeVar("T")

DEFAULT_REPLAY_INTERVAL_SECONDS = 5.0
# A write may take longer than a read (rollups); a record that times out is spooled and its
# replay is harmless even if the first attempt did commit.
WRITE_TIMEOUT_FACTOR = 5


def to_entry(record: UsageRecord) -> Entry:
    return {
        "id": record.id,
        "user_id": record.user_id,
        "model": record.model,
        "provider": record.provider,
        "usage": {kind.value: count for kind, count in record.usage.items()},
        "created_at": record.created_at.isoformat(),
        "chat": record.chat,
        "partial": record.partial,
        "reservation_id": record.reservation_id,
        "service_tier": record.service_tier,
        "batch": record.batch,
        "speed": record.speed,
        "web_searches": record.web_searches,
        "response_id": record.response_id,
    }


def from_entry(entry: Entry) -> UsageRecord:
    usage: dict[str, Any] = entry.get("usage") or {}
    return UsageRecord(
        id=str(entry["id"]),
        user_id=int(entry["user_id"]),
        model=str(entry["model"]),
        provider=str(entry["provider"]),
        usage=TokenUsage(**{k.value: int(usage.get(k.value, 0)) for k in TOKEN_KINDS}),
        created_at=datetime.fromisoformat(entry["created_at"]),
        chat=entry.get("chat"),
        partial=bool(entry.get("partial", False)),
        reservation_id=entry.get("reservation_id"),
        # Entries written before the ledger priced variants and fees have none of these.
        service_tier=entry.get("service_tier"),
        batch=bool(entry.get("batch", False)),
        speed=entry.get("speed"),
        web_searches=int(entry.get("web_searches", 0)),
        response_id=entry.get("response_id"),
    )


def _record_all(conn: Connection, records: list[UsageRecord]) -> int:
    """Record a replayed batch; how many of it the ledger refused (older than it keeps)."""
    return refused_count(record_usage_batch(conn, records))


class Recorder:
    def __init__(self, engine: AsyncEngine, spool: Spool, database: DatabaseSettings,
                 replay_interval_s: float = DEFAULT_REPLAY_INTERVAL_SECONDS,
                 *, writer_engine: Engine, linger_s: float,
                 journal: Journal | None = None,
                 on_refused: Callable[[int], None] = lambda _n: None) -> None:
        self._engine = engine
        self.spool = spool
        self.journal = journal
        self._timeout = database.connect_timeout_seconds * WRITE_TIMEOUT_FACTOR
        self._interval = replay_interval_s
        self._inflight: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        # Records handed to the writer and not yet in the ledger or the spool.
        self._unwritten = 0
        self._drained: list[asyncio.Future[None]] = []
        self._loop = asyncio.get_running_loop()
        self._on_refused = on_refused
        self._writer = LedgerWriter(writer_engine, spool, journal, self._written,
                                    linger_s=linger_s, on_refused=on_refused)
        self._writer.start()

    def spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run `work` as a task that `idle()` (and so shutdown) waits for.

        The proxy runs forward-and-record this way: if aiohttp cancels a handler whose client
        left, the task still sees the answer through and records what it cost.
        """
        task = asyncio.create_task(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return task

    def journal_now(self, record: UsageRecord) -> Entry | None:
        """Append the record to the journal before its answer is finished (see the module doc).

        Returns the entry to hand to `record` (None when there is no journal or the write
        failed: the writer thread then journals it itself).
        """
        if self.journal is None:
            return None
        entry = to_entry(record)
        try:
            self.journal.append_unsynced([entry])
        except OSError:
            log.exception("could not write a usage record to the journal",
                          extra={"record_id": record.id})
            return None
        return entry

    def record(self, record: UsageRecord, journaled: Entry | None = None) -> None:
        """Hand the record to the ledger writer thread, which commits it (ledger or spool).

        `journaled` is the entry `journal_now` wrote for it, if any. The writer commits the
        records gathered within the linger in one transaction; `idle()` waits for it. Nothing
        waits per record: an answered request's task ends here.
        """
        self._unwritten += 1
        self._writer.submit(Pending(record, journaled or to_entry(record),
                                    journaled is not None))

    def _written(self, batch: list[Pending]) -> None:
        """From the writer thread: wake the event loop once for the whole batch."""
        self._loop.call_soon_threadsafe(self._settle, len(batch))

    def _settle(self, count: int) -> None:
        self._unwritten -= count
        if not self._unwritten:
            for waiter in self._drained:
                if not waiter.done():
                    waiter.set_result(None)
            self._drained.clear()

    def close(self) -> None:
        """Commit what was handed over, then stop the writer thread."""
        self._writer.stop()

    async def release(self, reservation_id: str | None) -> None:
        """Give back a strict-mode hold for a request that ended without usage."""
        if reservation_id is None:
            return
        try:
            await in_transaction(self._engine, self._timeout, release, reservation_id)
        except DATABASE_ERRORS:
            log.warning("could not release a reservation; it expires on its own")

    def wake(self) -> None:
        """Try a replay now instead of at the next interval."""
        self._wake.set()

    async def idle(self) -> None:
        """Wait until every record already handed over is in the ledger or the spool."""
        while self._inflight or self._unwritten:
            if self._inflight:
                await asyncio.gather(*list(self._inflight), return_exceptions=True)
                continue
            drained = self._loop.create_future()
            self._drained.append(drained)
            await drained

    async def _write(self, entries: list[Entry]) -> None:
        records = []
        for entry in entries:
            try:
                records.append(from_entry(entry))
            except (KeyError, TypeError, ValueError):
                log.error("dropping a malformed spool entry", extra={"entry_id": entry.get("id")})
        refused = await in_transaction(self._engine, self._timeout, _record_all, records)
        if refused:
            self._on_refused(refused)

    async def replay(self) -> int:
        """Replay the spool now; raises a database error if the ledger is still away."""
        replayed = await self.spool.replay(self._write)
        if replayed:
            log.info("replayed %d spooled usage records into the ledger", replayed)
        return replayed

    async def replay_journals(self) -> int:
        """Replay what dead processes left in the journal (never this process's own file)."""
        if self.journal is None:
            return 0
        replayed = await self.journal.replay(self._write, own=False)
        if replayed:
            log.warning("replayed %d usage records from the journal of a process that ended "
                        "without committing them", replayed)
        return replayed

    async def run_replayer(self) -> None:
        """Background loop: replay at start-up, then whenever records wait in the spool."""
        while True:
            self._wake.clear()
            try:
                await self.replay_journals()
            except DATABASE_ERRORS as exc:
                log.debug("journal replay postponed, ledger still unreachable: %s",
                          type(exc).__name__)
            if self.spool.pending:
                try:
                    await self.replay()
                except DATABASE_ERRORS as exc:
                    log.debug("spool replay postponed, ledger still unreachable: %s",
                              type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
