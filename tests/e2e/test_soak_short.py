"""Issue 8's soak run, short: the same scenario as `bench/soak.py` at a lower rate, shorter.

About a minute of load from 200 users with limits through two limiters on one PostgreSQL, with
a 7 s database outage, two SIGKILLs of a limiter (one while its spool holds records), provider
failures and client aborts; then every client answer is held against the ledger. The scenario
and its checks live in tests/support/soak.py and tests/support/soak_report.py.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.soak import run_soak, short_plan
from tests.support.soak_report import SoakReport

pytestmark = [pytest.mark.postgres, pytest.mark.prometheus, pytest.mark.slow]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> SoakReport:
    """One run for every check below (it has its own event loop: it outlives a test's)."""
    result = asyncio.run(run_soak(short_plan(), tmp_path_factory.mktemp("soak")))
    print("\n".join(result.lines()))
    return result


def test_every_answered_request_has_exactly_one_record(report: SoakReport) -> None:
    assert report.expected_records > 0
    assert report.recorded >= report.expected_records
    assert report.lost == [] and report.lost_at_kill == [], report.lines()
    assert report.doubled == []
    assert report.unattributed_records == 0


def test_failed_and_refused_requests_are_not_charged(report: SoakReport) -> None:
    statuses = report.statuses()
    # Every fault was met: provider 500 (relayed), refused connection (502), hang (504), and
    # the tight users' limits (409).
    for status in ("409", "500", "502", "504"):
        assert statuses[status] > 0, statuses
    assert report.unexpected == []


def test_cut_and_aborted_streams_are_partial_and_close_the_upstream(report: SoakReport) -> None:
    outcomes = report.outcomes()
    assert outcomes["aborted"] > 0 and outcomes["cut"] > 0, outcomes
    assert report.wrong_partial == []
    assert report.overcharged == []
    delays = report.abort_close_seconds()
    assert delays and max(delays) < 1.0


def test_requests_are_served_while_postgresql_is_down(report: SoakReport) -> None:
    during = report.during_outage()
    served = sum(n for status, n in during.items() if status.startswith("2"))
    assert served > 0.8 * sum(during.values()), during


def test_outage_alerts_fire_and_resolve(report: SoakReport) -> None:
    for alert in ("AgentmeterLimiterFailingOpen", "AgentmeterUsageSpoolBacklog"):
        assert alert in report.alerts_fired, report.alerts_fired
        assert alert in report.alerts_resolved, report.alerts_resolved


def test_a_killed_limiter_replays_its_spool(report: SoakReport) -> None:
    # The first kill hit a limiter holding spooled records; all of them reached the ledger
    # (the run waited for every spool to drain, and no record is missing).
    assert report.kills[0].spooled_lines > 0
    assert report.lost == []


def test_limiter_memory_stays_flat(report: SoakReport) -> None:
    assert report.rss_growth("limiter 0") < 0.10, report.rss
