"""What a PostgreSQL ledger announces when it changes (triggers of migration 0003).

Each committed change is one notification on `CHANNEL`, delivered in commit order to every
connection that LISTENs:

- `s USER_ID PERIOD PERIOD_START COST_MICROS`: a user's spend row of one period (day, week,
  month starting on PERIOD_START, YYYY-MM-DD) now holds COST_MICROS. Spend only grows, so the
  largest value heard for a row is its newest.
- `r`: something a key check reads other than spend changed (the limit configuration, an
  override, a group, a membership, a user, a key) or spend rows were removed: whatever was
  learnt from the ledger before may be wrong.

SQLite ledgers announce nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ledger.periods import Period

CHANNEL = "agentmeter_ledger"


@dataclass(frozen=True, slots=True)
class SpendChanged:
    user_id: int
    period: Period
    period_start: date
    cost_micros: int


@dataclass(frozen=True, slots=True)
class LedgerReset:
    pass


LedgerChange = SpendChanged | LedgerReset


def parse_change(payload: str) -> LedgerChange:
    """The change a notification announces; ValueError for a payload this version cannot read
    (the caller should then assume anything may have changed)."""
    kind, _, rest = payload.partition(" ")
    if kind == "r" and not rest:
        return LedgerReset()
    if kind == "s":
        user_id, period, start, cost = rest.split(" ")
        return SpendChanged(int(user_id), Period(period), date.fromisoformat(start), int(cost))
    raise ValueError(f"unknown ledger notification {payload[:40]!r}")
