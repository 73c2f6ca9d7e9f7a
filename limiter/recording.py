"""Recording each answered request in the ledger, or in the spool when the ledger is away.

No usage record is ever lost: a record the ledger cannot take right now is fsync'ed to the
local spool before the request is finished, and a background task replays the spool (at
start-up and every few seconds while it is not empty). Replays are idempotent because every
record carries the uuid generated when its request arrived.

A process can also die (SIGKILL, OOM) between answering a request and committing its record;
with a slow ledger that is seconds of answers. So each record is first appended, in groups, to
an fsync'ed journal (the `journal` spool); the journal is emptied whenever everything in it
has reached the ledger or the spool, and a successor replays what a dead process left there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.reservations import release
from ledger.settings import DatabaseSettings
from ledger.tokens import TOKEN_KINDS, TokenUsage
from ledger.usage import UsageRecord, record_usage_batch
from limiter.database import DATABASE_ERRORS, in_transaction
from limiter.spool import Entry, Spool

log = logging.getLogger("agentmeter.limiter")

T = TypeVar("T")

DEFAULT_REPLAY_INTERVAL_SECONDS = 5.0
# A write may take longer than a read (rollups); a record that times out is spooled and its
# replay is harmless even if the first attempt did commit.
WRITE_TIMEOUT_FACTOR = 5
# Records waiting while a batch is written go in the next one (group commit).
MAX_BATCH = 256


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
    )


def _record_all(conn: Connection, records: list[UsageRecord]) -> None:
    record_usage_batch(conn, records)


class Recorder:
    def __init__(self, engine: AsyncEngine, spool: Spool, database: DatabaseSettings,
                 replay_interval_s: float = DEFAULT_REPLAY_INTERVAL_SECONDS,
                 journal: Spool | None = None) -> None:
        self._engine = engine
        self.spool = spool
        self.journal = journal
        self._timeout = database.connect_timeout_seconds * WRITE_TIMEOUT_FACTOR
        self._interval = replay_interval_s
        self._inflight: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        # Handed over, not yet in the journal / in the journal, not yet in the ledger.
        self._queue: list[tuple[UsageRecord, asyncio.Future[None]]] = []
        self._journaled: list[tuple[UsageRecord, asyncio.Future[None], bool]] = []
        self._journaler: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    def spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run `work` as a task that `idle()` (and so shutdown) waits for.

        The proxy runs forward-and-record this way: if aiohttp cancels a handler whose client
        left, the task still sees the answer through and records what it cost.
        """
        task = asyncio.create_task(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return task

    async def record(self, record: UsageRecord) -> None:
        """Write the record (ledger or spool); survives the caller being cancelled.

        Records are written by one writer task, all that are waiting in one transaction: an
        idle gateway writes each alone, a busy one pays one commit for many answers.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((record, done))
        if self._journaler is None or self._journaler.done():
            self._journaler = self.spawn(self._journal_queued())
        await asyncio.shield(done)

    async def _journal_queued(self) -> None:
        """Make waiting records durable (one fsync for all), then hand them to the writer."""
        while self._queue:
            batch, self._queue = self._queue, []
            journaled = False
            if self.journal is not None:
                try:
                    await asyncio.to_thread(self.journal.append_many,
                                            [to_entry(record) for record, _ in batch])
                    journaled = True
                except OSError:
                    log.exception("could not write %d usage records to the journal",
                                  len(batch))
            self._journaled.extend((record, done, journaled) for record, done in batch)
            if self._writer is None or self._writer.done():
                self._writer = self.spawn(self._write_queued())

    async def _write_queued(self) -> None:
        while self._journaled:
            batch = self._journaled[:MAX_BATCH]
            self._journaled = self._journaled[MAX_BATCH:]
            records = [record for record, _, _ in batch]
            try:
                await in_transaction(self._engine, self._timeout, _record_all, records)
            except DATABASE_ERRORS as exc:
                log.warning("ledger unreachable, spooling %d usage records: %s", len(records),
                            type(exc).__name__, extra={"record_id": records[0].id})
                await self._spool(records)
            except Exception:
                # Not a database outage (a bug): keep the records rather than lose them.
                log.exception("recording failed, spooling %d usage records", len(records))
                await self._spool(records)
            settled = sum(1 for _, _, journaled in batch if journaled)
            if self.journal is not None and settled:
                await asyncio.to_thread(self.journal.settle, settled)
            for _, done, _ in batch:
                if not done.done():
                    done.set_result(None)

    async def _spool(self, records: list[UsageRecord]) -> None:
        # Not replayed at once: the loop retries every few seconds rather than on each record.
        await asyncio.to_thread(self.spool.append_many, [to_entry(r) for r in records])

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
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def _write(self, entries: list[Entry]) -> None:
        records = []
        for entry in entries:
            try:
                records.append(from_entry(entry))
            except (KeyError, TypeError, ValueError):
                log.error("dropping a malformed spool entry", extra={"entry_id": entry.get("id")})
        await in_transaction(self._engine, self._timeout, _record_all, records)

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
