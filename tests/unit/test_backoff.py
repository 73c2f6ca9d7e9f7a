"""The one back-off (ledger.backoff): doubling from the first delay, capped, spread by jitter."""

from __future__ import annotations

import pytest

from ledger.backoff import Backoff


def test_without_jitter_the_delay_doubles_from_the_first_up_to_the_cap() -> None:
    backoff = Backoff(initial_seconds=0.5, max_seconds=5.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.delay(0) == 0.5  # attempt numbers start at 1; less is the first


@pytest.mark.parametrize("attempt, base", [(1, 0.5), (3, 2.0), (40, 30.0)])
def test_jitter_spreads_each_delay_within_its_bounds(attempt: int, base: float) -> None:
    delays = {Backoff().delay(attempt) for _ in range(200)}
    assert all(base * 0.8 <= delay <= base * 1.2 for delay in delays)
    assert max(delays) - min(delays) > base * 0.2  # spread, not one value for every process

