"""The durable local spool for usage records the ledger could not take (database unreachable).

No usage record may be lost, so each record is written and fsync'ed before the caller moves on;
the replayer (`limiter.recording.recorder`) sends the spool to the ledger when it is back and at
start-up.
"""

from __future__ import annotations

from limiter.recording.record_files import Entry, RecordFiles


class Spool(RecordFiles):
    """Records waiting for the ledger, each on disk before `append` returns."""

    def append(self, entry: Entry) -> None:
        """Write one record durably (blocking: call it from a thread)."""
        self.append_many([entry])

    def append_many(self, entries: list[Entry]) -> None:
        """Write records durably with one fsync (blocking: call it from a thread)."""
        self.append_unsynced(entries)
        self.sync()
