"""Failure episodes shared by the watch threads and the metrics poller.

A background loop that fails must neither hammer the API server (it waits `ledger.backoff`'s
delays) nor flood the log (one warning when an episode starts, one line when it ends), and the
collector must know for how long a source has been failing to decide when its cached data stops
being trustworthy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class FailureEpisode:
    """Whether a source is failing, since when, and why; logs only the edges."""

    def __init__(self, source: str, logger: logging.Logger,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._logger = logger
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._since: float | None = None
        self.attempts = 0
        self.last_error: str | None = None

    def failed(self, error: BaseException) -> None:
        description = describe(error)
        with self._lock:
            self.attempts += 1
            self.last_error = f"{self._source}: {description}"
            starting = self._since is None
            if starting:
                self._since = self._monotonic()
        if starting:
            self._logger.warning("kubernetes %s failing, retrying with back-off: %s",
                                 self._source, description)

    def succeeded(self) -> None:
        with self._lock:
            ending = self._since is not None
            self._since = None
            self.attempts = 0
        if ending:
            self._logger.info("kubernetes %s recovered", self._source)

    def failing_for(self) -> float:
        """Seconds since the current episode started; 0 when not failing."""
        with self._lock:
            return 0.0 if self._since is None else self._monotonic() - self._since


def describe(error: BaseException) -> str:
    """A one-line description: API errors by status and reason, never the whole response body."""
    status = getattr(error, "status", None)
    reason = getattr(error, "reason", None)
    if isinstance(status, int) and status:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(error).__name__}: {error}".splitlines()[0]
