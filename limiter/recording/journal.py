"""The write-ahead journal: every answer's usage record, written before its last byte is sent.

The journal takes each record into the kernel's page cache (no fsync: cheap enough for the event
loop), so a limiter killed after answering cannot lose it; the writer fsyncs a batch before it
commits it and `settle`s it once it is in the ledger or the spool, which empties the file. A
dead process's journal is replayed by its successor.
"""

from __future__ import annotations

from limiter.recording.record_files import RecordFiles


class Journal(RecordFiles):
    """Records on their way to the ledger (see the module doc)."""

    def settle(self, count: int) -> None:
        """Journal use: `count` records appended earlier are now in the ledger (or the spool).

        Once every record in the current file is, the file is emptied: what a crash leaves in
        a journal is only what had not reached the ledger yet. (Not fsync'ed: a lost truncation
        only means records are replayed again, which the ledger ignores.)
        """
        with self._lock:
            self._settled += count
            if self._file is not None and self._settled >= self._written:
                self._file.truncate(0)  # opened for appending: the next write starts at 0
                self._pending = max(0, self._pending - self._written)
                self._written = self._settled = 0
