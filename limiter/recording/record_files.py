"""A directory of usage records as JSON lines, what the spool and the journal have in common.

Each record is one line. A file is only removed after every record in it reached the ledger;
replay is safe to repeat because the ledger ignores a record id it already has.

Several limiter processes may share a directory: each writes its own file and holds an
exclusive `flock` on it while it is open, and a replayer only takes files it can lock, so a file
being written is never replayed (and removed) under its writer. How records are made durable is
the subclasses' business (`limiter.recording.spool`, `limiter.recording.journal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import IO, Any

from limiter import json_codec

log = logging.getLogger("agentmeter.limiter")

SUFFIX = ".jsonl"
# Records sent to the ledger per transaction during replay.
REPLAY_BATCH = 200

Entry = dict[str, Any]


class RecordFiles:
    """One process's file of records in a shared directory, and the replay of all of them."""

    def __init__(self, directory: str | os.PathLike[str],
                 on_pending: Callable[[int], None] | None = None) -> None:
        self.directory = Path(directory)
        self._on_pending = on_pending or (lambda _n: None)
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._pending = 0
        # Records in the file being written (a journal empties it once all are settled).
        self._written = 0
        self._settled = 0
        self._replay_lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    def open(self) -> None:
        """Create the directory and count what earlier runs left behind."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._pending = sum(_count_lines(p) for p in self._files())
        self._on_pending(self._pending)

    def close(self) -> None:
        with self._lock:
            self._close_current()

    def append_unsynced(self, entries: list[Entry]) -> None:
        """Write records to the file without waiting for the disk.

        What is written survives the process being killed (it is in the kernel's page cache);
        `sync` makes it survive the machine too.
        """
        data = b"".join(json_codec.dumps_line(entry) + b"\n" for entry in entries)
        with self._lock:
            if self._file is None:
                self._file = self._new_file()
            self._file.write(data)
            self._file.flush()
            self._pending += len(entries)
            self._written += len(entries)
            pending = self._pending
        self._on_pending(pending)

    def sync(self) -> None:
        """fsync what was written so far (blocking: call it from a thread).

        The lock is not held while the disk works, so appends from the event loop never wait
        for an fsync; the descriptor is duplicated so a concurrent close cannot pull it away.
        """
        with self._lock:
            if self._file is None:
                return
            fd = os.dup(self._file.fileno())
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def replay(self, write: Callable[[list[Entry]], Awaitable[None]], *,
                     own: bool = True) -> int:
        """Send every spooled record to `write`; return how many were replayed.

        Stops at the first failure of `write` (the ledger is still away) and raises it; the
        files not yet confirmed stay on disk for the next attempt. With `own=False` the file
        this process is writing is left alone (a journal replays only dead processes' files).
        """
        async with self._replay_lock:
            if own:
                # Our own file is closed first, so its records become replayable and new
                # records go to a fresh file meanwhile.
                await asyncio.to_thread(self.close)
            done = 0
            for path in self._files():
                handle = _lock_existing(path)
                if handle is None:
                    continue  # another process is writing or replaying it
                lines = 0
                try:
                    # Batch by batch: a backlog of an hour's outage is never held whole.
                    with contextlib.closing(_batches(path, REPLAY_BATCH)) as batches:
                        for entries, batch_lines in batches:
                            if entries:
                                await write(entries)
                            done += len(entries)
                            lines += batch_lines
                    path.unlink()
                finally:
                    handle.close()
                with self._lock:
                    self._pending = max(0, self._pending - lines)
                    pending = self._pending
                self._on_pending(pending)
            return done

    def _files(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(self.directory.glob(f"*{SUFFIX}"))

    def _new_file(self) -> IO[bytes]:
        name = f"spool-{os.getpid()}-{uuid.uuid4().hex}{SUFFIX}"
        handle = open(self.directory / name, "ab")  # noqa: SIM115 - kept open across appends
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        _fsync_dir(self.directory)
        return handle

    def _close_current(self) -> None:
        if self._file is not None:
            self._file.close()  # also releases the flock
            self._file = None
            self._written = self._settled = 0


def _lock_existing(path: Path) -> IO[bytes] | None:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the caller after replay
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    if not path.exists():  # replayed and removed by another process meanwhile
        handle.close()
        return None
    return handle


def _batches(path: Path, size: int) -> Generator[tuple[list[Entry], int], None, None]:
    """The file's records, `size` at a time, each batch with its count of non-empty lines
    (what `pending` counted)."""
    entries: list[Entry] = []
    lines = 0
    with path.open("rb") as records:
        for number, raw in enumerate(records, start=1):
            if not raw.strip():
                continue
            lines += 1
            try:
                entry = json.loads(raw)
            except ValueError:
                # Only a crash in the middle of an append leaves a torn line; it was never
                # acknowledged as spooled, so skipping it loses nothing that was promised.
                log.warning("skipping unreadable spool line", extra={"file": str(path),
                                                                     "line": number})
                continue
            if isinstance(entry, dict):
                entries.append(entry)
                if len(entries) == size:
                    yield entries, lines
                    entries, lines = [], 0
    if entries or lines:
        yield entries, lines


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as records:  # line by line: a spool can outgrow memory
            return sum(1 for line in records if line.strip())
    except FileNotFoundError:
        return 0


def _fsync_dir(directory: Path) -> None:
    """Make the new file's directory entry durable too, not only its contents."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
