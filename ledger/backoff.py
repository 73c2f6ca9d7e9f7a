"""How a background loop that fails waits before its next attempt: the one back-off of the
project, for the limiter (the ledger listener) and the exporter (the Kubernetes watches and
metrics poller).

It lives in `ledger` because that is the package both the limiter and the exporter build on
and which imports neither (`agentmeter`, the command line, imports both).

The delay doubles from `initial_seconds` per failed attempt up to `max_seconds`, and is spread
by ±`jitter` so that many processes that lost the same server (every limiter replica when the
database restarts) do not all come back in the same instant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based): the capped doubling, times a
        random factor within 1 ± `jitter`."""
        base = min(self.max_seconds, self.initial_seconds * 2 ** max(0, attempt - 1))
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)
