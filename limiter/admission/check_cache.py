"""Key checks answered from memory while the ledger's change notifications are heard.

A key check asks the ledger who owns a key, what limit applies to them and what they have spent
in the current period. On PostgreSQL that round trip is most of what the limiter adds to a
request (0.5-0.6 ms of the added p50 on the 2-core bench machine, more where the database is a
network hop away). This cache remembers each key's answer and keeps the spend in it current
from the ledger's notifications (`ledger.notify`), which every limiter process hears for every
process's records:

- a spend notification carries the row's new total; spend only grows, so the cache keeps the
  largest total heard or read for each (user, period, period start), whatever order a check's
  answer and a notification arrive in;
- a reset notification (limits, overrides, groups, memberships, users or keys changed) forgets
  everything, and so does losing the notifications' connection: until it is back, every check
  goes to the ledger;
- an answer is remembered only if no reset came between sending its check and reading it, so
  an answer read from before a change never outlives the change's notification;
- an answer is used for at most `max_age_s` and never past the end of its period.

What one process records, the others therefore see as soon as PostgreSQL delivers the commit's
notification (well under a millisecond on one host), instead of on a check already in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime
from typing import NamedTuple

from ledger.keys import KeyOwner
from ledger.notify import LedgerChange, SpendChanged
from ledger.periods import Period
from ledger.spend import LimitStatus

# Keys remembered at most; past it, answers older than max_age_s go, then all of them.
MAX_KEYS = 100_000


class _Answer(NamedTuple):
    owner: KeyOwner
    status: LimitStatus
    spend_row: tuple[int, Period, date]
    expires: float  # on the monotonic clock


class CheckCache:
    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS) -> None:
        self._max_age_s = max_age_s
        self._max_keys = max_keys
        self._clock = clock
        self._answers: dict[str, _Answer] = {}
        # The largest spend total seen per (user, period, period start).
        self._spend: dict[tuple[int, Period, date], int] = {}
        self._listening = False
        # Bumped whenever what was learnt before may be wrong.
        self.generation = 0

    @property
    def active(self) -> bool:
        """Answers are remembered and used (the ledger's notifications are being heard)."""
        return self._listening

    def listening(self, on: bool) -> None:
        """The notifications' connection is up (LISTEN done) or lost."""
        self._listening = on
        self.reset()

    def reset(self) -> None:
        self.generation += 1
        self._answers.clear()
        self._spend.clear()

    def get(self, key_hash: str, now: datetime) -> tuple[KeyOwner, LimitStatus] | None:
        """The remembered answer for the key, with the spend as of the last notification; None
        when there is none to use."""
        answer = self._answers.get(key_hash)
        if answer is None:
            return None
        status = answer.status
        if (answer.expires <= self._clock() or now >= status.period_end
                or now < status.period_start):
            del self._answers[key_hash]
            return None
        spent = self._spend.get(answer.spend_row, status.spent_micros)
        if spent != status.spent_micros:
            status = replace(status, spent_micros=spent)
            self._answers[key_hash] = answer._replace(status=status)
        return answer.owner, status

    def remember(self, key_hash: str, owner: KeyOwner, status: LimitStatus,
                 generation: int) -> LimitStatus:
        """Keep a check's answer (sent while `generation` was current); the status to act on,
        with any newer spend already heard of."""
        if generation != self.generation or not self._listening:
            return status
        row = (status.user_id, status.period, status.period_start.date())
        spent = max(self._spend.get(row, 0), status.spent_micros)
        self._spend[row] = spent
        if spent != status.spent_micros:
            status = replace(status, spent_micros=spent)
        if len(self._answers) >= self._max_keys:
            self._evict()
        self._answers[key_hash] = _Answer(owner, status, row, self._clock() + self._max_age_s)
        return status

    def apply(self, change: LedgerChange) -> None:
        if not self._listening:
            return
        if not isinstance(change, SpendChanged):
            self.reset()
            return
        row = (change.user_id, change.period, change.period_start)
        if change.cost_micros > self._spend.get(row, -1):
            self._spend[row] = change.cost_micros
            if len(self._spend) >= 3 * self._max_keys:
                self.reset()  # rows of long-gone periods; anything current is read again

    def _evict(self) -> None:
        now = self._clock()
        for key_hash in [k for k, a in self._answers.items() if a.expires <= now]:
            del self._answers[key_hash]
        if len(self._answers) >= self._max_keys:
            self._answers.clear()
