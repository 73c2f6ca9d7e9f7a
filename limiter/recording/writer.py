"""One thread that makes answered requests' records durable and commits them in groups.

Recording used to run on the event loop through the async engine: about 2 ms of CPU for a
one-record transaction on the 2-core benchmark machine, spent between the requests that were
waiting for the loop. Here a dedicated thread owns a synchronous engine: it fsyncs the journal
once for every record waiting, commits them all in one transaction (`record_usage_batch`), spools
them if the ledger is away, and only then tells the event loop they are safe. Its SQL runs while
the event loop serves requests (the driver releases the GIL while it waits on the network).

`linger_s` lets a batch gather records for a moment when few are waiting: an idle gateway still
commits each answer within that time, a busy one pays one commit for many answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from ledger.usage import UsageRecord, record_usage_batch, refused_count
from limiter.database import DATABASE_ERRORS
from limiter.recording.journal import Journal
from limiter.recording.record_files import Entry
from limiter.recording.spool import Spool

log = logging.getLogger("agentmeter.limiter")

# Records per transaction at most (a backlog after an outage is written in several).
MAX_BATCH = 256


@dataclass(slots=True)
class Pending:
    record: UsageRecord
    entry: Entry
    # Already appended to the journal (unsynced) before the answer's last byte was sent.
    journaled: bool


class LedgerWriter:
    """`on_written(batch)` is called from the writer thread once per batch, when every record
    of it is in the ledger or the spool (one wake-up of the event loop per batch)."""

    def __init__(self, engine: Engine, spool: Spool, journal: Journal | None,
                 on_written: Callable[[list[Pending]], None], linger_s: float = 0.0,
                 max_batch: int = MAX_BATCH,
                 on_refused: Callable[[int], None] = lambda _n: None) -> None:
        self._engine = engine
        self._on_written = on_written
        # Called from the writer thread with how many of a committed batch the ledger refused.
        self._on_refused = on_refused
        self._spool = spool
        self._journal = journal
        self._linger = linger_s
        self._max_batch = max_batch
        self._queue: list[Pending] = []
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="agentmeter-ledger-writer",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, pending: Pending) -> None:
        with self._wakeup:
            self._queue.append(pending)
            # Wake the writer only when it waits for work or a batch is full; a lingering
            # writer is not woken (and made to fight for the GIL) for every record.
            if len(self._queue) == 1 or len(self._queue) >= self._max_batch:
                self._wakeup.notify()

    def stop(self, timeout_s: float | None = None) -> None:
        """Write everything submitted so far, then end the thread."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        self._thread.join(timeout_s)

    def _next_batch(self) -> list[Pending] | None:
        with self._wakeup:
            while not self._queue and not self._stopping:
                self._wakeup.wait()
            if not self._queue:
                return None  # stopping, and nothing left
            if self._linger and len(self._queue) < self._max_batch and not self._stopping:
                deadline = time.monotonic() + self._linger
                while len(self._queue) < self._max_batch and not self._stopping:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wakeup.wait(left)
            batch = self._queue[:self._max_batch]
            del self._queue[:self._max_batch]
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._write(batch)
            except Exception:  # never let the thread die with records in hand
                log.exception("the ledger writer failed on %d usage records", len(batch))
            self._on_written(batch)

    def _write(self, batch: list[Pending]) -> None:
        in_journal = self._make_durable(batch)
        records = [pending.record for pending in batch]
        try:
            with self._engine.begin() as conn:
                refused = refused_count(record_usage_batch(conn, records))
            if refused:
                self._on_refused(refused)
        except DATABASE_ERRORS as exc:
            log.warning("ledger unreachable, spooling %d usage records: %s", len(records),
                        type(exc).__name__, extra={"record_id": records[0].id})
            if not self._to_spool(batch):
                return  # only the journal holds them now: it must keep them
        except Exception:
            # Not a database outage (a bug): keep the records rather than lose them.
            log.exception("recording failed, spooling %d usage records", len(records))
            if not self._to_spool(batch):
                return
        if self._journal is not None and in_journal:
            self._journal.settle(in_journal)

    def _make_durable(self, batch: list[Pending]) -> int:
        """fsync the journal for the whole batch; returns how many of it the journal holds."""
        journal = self._journal
        if journal is None:
            return 0
        earlier = sum(1 for pending in batch if pending.journaled)
        fresh = [pending.entry for pending in batch if not pending.journaled]
        if fresh:
            try:
                journal.append_unsynced(fresh)
            except OSError:
                log.exception("could not write %d usage records to the journal", len(fresh))
                fresh = []
        try:
            journal.sync()
        except OSError:
            log.exception("could not fsync the journal; a machine crash could lose records")
        return earlier + len(fresh)

    def _to_spool(self, batch: list[Pending]) -> bool:
        try:
            self._spool.append_many([pending.entry for pending in batch])
        except OSError:
            log.exception("could not spool %d usage records; they stay in the journal",
                          len(batch))
            return False
        return True
