"""The key check cache: what it answers, and when it refuses to answer from memory."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from ledger.keys import KeyOwner
from ledger.limits import LimitSource
from ledger.notify import LedgerReset, SpendChanged, parse_change
from ledger.periods import Period
from ledger.spend import LimitStatus
from limiter.admission.check_cache import CheckCache

MAX_KEYS = 50
NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
MARCH = date(2026, 3, 1)
OWNER = KeyOwner(user_id=7, username="alice", key_id="key_1")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def status(spent: int, limit: int | None = 1000) -> LimitStatus:
    return LimitStatus(user_id=7, username="alice", period=Period.MONTH, limit_micros=limit,
                       limit_source=LimitSource.DEFAULT, spent_micros=spent,
                       period_start=datetime(2026, 3, 1, tzinfo=UTC),
                       period_end=datetime(2026, 4, 1, tzinfo=UTC))


def spend(cost: int, user_id: int = 7, period: Period = Period.MONTH,
          start: date = MARCH) -> SpendChanged:
    return SpendChanged(user_id=user_id, period=period, period_start=start, cost_micros=cost)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> CheckCache:
    cache = CheckCache(10.0, clock, max_keys=MAX_KEYS)
    cache.listening(True)
    return cache


def test_a_remembered_answer_is_given_back_with_the_spend_heard_since(cache: CheckCache) -> None:
    cache.remember("h", OWNER, status(100), cache.generation)
    assert cache.get("h", NOW) == (OWNER, status(100))
    cache.apply(spend(400))
    assert cache.get("h", NOW) == (OWNER, status(400))
    found = cache.get("h", NOW)
    assert found is not None and found[1].blocked is False
    cache.apply(spend(1000))
    found = cache.get("h", NOW)
    assert found is not None and found[1].blocked is True


def test_other_users_and_other_periods_do_not_touch_the_answer(cache: CheckCache) -> None:
    cache.remember("h", OWNER, status(100), cache.generation)
    cache.apply(spend(900, user_id=8))
    cache.apply(spend(900, period=Period.DAY, start=date(2026, 3, 14)))
    cache.apply(spend(900, start=date(2026, 2, 1)))
    assert cache.get("h", NOW) == (OWNER, status(100))


def test_spend_only_grows_whatever_order_answers_and_notifications_arrive_in(
        cache: CheckCache) -> None:
    # A notification for a commit the check's answer did not see yet, read before the answer.
    sent = cache.generation
    cache.apply(spend(500))
    assert cache.remember("h", OWNER, status(300), sent) == status(500)
    assert cache.get("h", NOW) == (OWNER, status(500))
    # A notification older than what the answer read changes nothing.
    cache.apply(spend(200))
    assert cache.get("h", NOW) == (OWNER, status(500))


def test_an_answer_sent_before_a_reset_is_used_once_but_not_remembered(
        cache: CheckCache) -> None:
    sent = cache.generation
    cache.apply(LedgerReset())
    assert cache.remember("h", OWNER, status(100), sent) == status(100)
    assert cache.get("h", NOW) is None


def test_a_reset_forgets_answers_and_spend(cache: CheckCache) -> None:
    cache.remember("h", OWNER, status(100), cache.generation)
    cache.apply(spend(700))
    cache.reset()
    assert cache.get("h", NOW) is None
    # Spend heard before the reset no longer raises a fresh answer.
    assert cache.remember("h", OWNER, status(50), cache.generation) == status(50)


def test_nothing_is_remembered_or_answered_without_the_notifications() -> None:
    cache = CheckCache(10.0)
    assert cache.active is False
    assert cache.remember("h", OWNER, status(100), cache.generation) == status(100)
    assert cache.get("h", NOW) is None
    cache.listening(True)
    cache.remember("h", OWNER, status(100), cache.generation)
    assert cache.get("h", NOW) is not None
    cache.listening(False)  # the connection was lost: whatever came meanwhile went unheard
    assert cache.active is False
    cache.listening(True)
    assert cache.get("h", NOW) is None


def test_an_answer_expires_after_max_age(cache: CheckCache, clock: Clock) -> None:
    cache.remember("h", OWNER, status(100), cache.generation)
    clock.now += 9.9
    assert cache.get("h", NOW) is not None
    clock.now += 0.1
    assert cache.get("h", NOW) is None


def test_an_answer_is_not_used_outside_its_period(cache: CheckCache) -> None:
    cache.remember("h", OWNER, status(100), cache.generation)
    assert cache.get("h", datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)) is not None
    assert cache.get("h", datetime(2026, 4, 1, tzinfo=UTC)) is None  # the new month


def test_the_cache_stays_bounded(cache: CheckCache, clock: Clock) -> None:
    for n in range(MAX_KEYS):
        cache.remember(f"h{n}", OWNER, status(1), cache.generation)
    clock.now += 11  # all expired: the next answer sweeps them
    cache.remember("new", OWNER, status(1), cache.generation)
    assert cache.get("h0", NOW) is None
    assert cache.get("new", NOW) is not None
    for n in range(MAX_KEYS):  # none expired: all go
        cache.remember(f"k{n}", OWNER, status(1), cache.generation)
    assert cache.get("new", NOW) is None
    assert cache.get(f"k{MAX_KEYS - 1}", NOW) is not None


def test_ledger_notifications_are_read_exactly() -> None:
    assert parse_change("s 7 month 2026-03-01 1234") == spend(1234)
    assert parse_change("s 12 day 2026-03-14 0") == SpendChanged(12, Period.DAY,
                                                               date(2026, 3, 14), 0)
    assert parse_change("r") == LedgerReset()
    for bad in ("", "x", "r 1", "s 7 month 2026-03-01", "s 7 year 2026-03-01 1",
                "s seven month 2026-03-01 1", "s 7 month 03/01/2026 1"):
        with pytest.raises(ValueError):
            parse_change(bad)


def test_spend_rows_of_many_users_stay_bounded(cache: CheckCache) -> None:
    cache.remember("h", OWNER, status(1), cache.generation)
    for user in range(3 * MAX_KEYS):
        cache.apply(spend(1, user_id=1000 + user, start=MARCH - timedelta(days=1)))
    assert cache.get("h", NOW) is None  # reset once full: anything current is read again
