"""What a soak run proved: every client answer held against the ledger, and the figures it prints.

The rule per request (by its `X-Chat-ID`): an answered request (2xx, whole or cut by the
provider, or aborted by its client) has exactly one record, flagged `partial` unless the answer
was whole; a refused or failed request (409, 5xx) has none. A request whose limiter was killed
under it has no answer to compare with; its record may or may not exist, and is counted apart.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from tests.support.soak_load import Outcome, Result
from tests.support.soak_upstream import Fault

# A lost record is blamed on a kill if its answer completed this shortly before the SIGKILL.
KILL_WINDOW_SECONDS = 1.0
MAX_RSS_GROWTH = 0.10
MAX_UPSTREAM_CLOSE_SECONDS = 1.0
REQUIRED_ALERTS = ("AgentmeterLimiterFailingOpen", "AgentmeterUsageSpoolBacklog")


@dataclass(frozen=True)
class LedgerRow:
    count: int
    partial: int
    max_cost: int | None
    model: str


@dataclass(frozen=True)
class Kill:
    limiter: int
    at: float  # time.monotonic()
    spooled_lines: int  # records in the killed limiter's spool files at the kill


@dataclass
class SoakReport:
    rate: float
    duration: float
    outage: tuple[float, float]  # monotonic start and end of the PostgreSQL outage
    results: list[Result]
    ledger: dict[str, LedgerRow]
    unattributed_records: int
    # model -> the most a record of one answer may cost: the whole answer, its output counted
    # as the larger of the provider's figure and the estimate from the whole text
    full_cost: dict[str, int]
    kills: list[Kill]
    upstream_endings: dict[str, tuple[float, bool]]
    alerts_fired: set[str]
    alerts_resolved: set[str]
    rss: dict[str, tuple[int, int]]  # limiter name -> RSS at start and end
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    lost: list[Result] = field(default_factory=list)
    lost_at_kill: list[Result] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    unexpected: list[Result] = field(default_factory=list)
    wrong_partial: list[Result] = field(default_factory=list)
    overcharged: list[str] = field(default_factory=list)
    in_flight_at_kill: list[Result] = field(default_factory=list)
    expected_records: int = 0

    def __post_init__(self) -> None:
        self._check_records()

    def _killed_just_after(self, result: Result) -> bool:
        return any(k.limiter == result.limiter and 0 <= k.at - result.ended
                   <= KILL_WINDOW_SECONDS for k in self.kills)

    def _finished_before_abort(self, result: Result) -> bool:
        """The provider's stream had ended before the client gave up (a lagging client read
        the first event of an answer already relayed whole): a whole record is right then."""
        ending = self.upstream_endings.get(result.id)
        return (ending is not None and result.aborted_at is not None
                and not ending[1] and ending[0] <= result.aborted_at)

    def _partial_expected(self, result: Result) -> bool:
        if result.outcome is Outcome.ABORTED:
            return not self._finished_before_abort(result)
        return result.outcome is not Outcome.OK

    def _check_records(self) -> None:
        known = set()
        for result in self.results:
            known.add(result.id)
            row = self.ledger.get(result.id)
            count = row.count if row else 0
            if row is not None and count > 1:
                self.doubled.append(result.id)
            if result.outcome in (Outcome.NO_ANSWER, Outcome.TIMEOUT) or (
                    result.outcome is Outcome.CUT and result.fault is not Fault.DROP):
                self.in_flight_at_kill.append(result)
                continue
            answered = result.outcome in (Outcome.OK, Outcome.ABORTED, Outcome.CUT)
            if not answered:
                if count:
                    self.unexpected.append(result)
                continue
            self.expected_records += 1
            if count == 0:
                (self.lost_at_kill if self._killed_just_after(result) else self.lost).append(
                    result)
                continue
            assert row is not None
            if (row.partial == row.count) != self._partial_expected(result):
                self.wrong_partial.append(result)
            if row.partial and (row.max_cost or 0) > self.full_cost[row.model]:
                self.overcharged.append(result.id)
        self.unattributed_records += sum(r.count for key, r in self.ledger.items()
                                         if key not in known)

    # Figures -------------------------------------------------------------------------------

    @property
    def recorded(self) -> int:
        return sum(row.count for row in self.ledger.values())

    def outcomes(self) -> Counter[str]:
        return Counter(r.outcome.value for r in self.results)

    def statuses(self) -> Counter[str]:
        return Counter(str(r.status) if r.status is not None else r.outcome.value
                       for r in self.results)

    def latency_ms(self, stream: bool | None = None) -> tuple[float, float]:
        times = sorted(r.seconds * 1000 for r in self.results if r.outcome is Outcome.OK
                       and (stream is None or r.stream == stream))
        if not times:
            return float("nan"), float("nan")
        return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]

    def during_outage(self) -> Counter[str]:
        start, end = self.outage
        return Counter(str(r.status) if r.status is not None else r.outcome.value
                       for r in self.results if start <= r.started < end)

    def timeline(self, bucket_seconds: float = 5.0) -> list[str]:
        """Per slice of the run (by start time): requests, answers that were whole, p50/max ms."""
        if not self.results:
            return []
        first = min(r.started for r in self.results)
        slices: dict[int, list[Result]] = {}
        for r in self.results:
            slices.setdefault(int((r.started - first) // bucket_seconds), []).append(r)
        lines = []
        for index in sorted(slices):
            chunk = slices[index]
            ok = sorted(r.seconds * 1000 for r in chunk if r.outcome is Outcome.OK)
            p50 = statistics.median(ok) if ok else float("nan")
            lines.append(f"  t+{index * bucket_seconds:5.0f}s  {len(chunk):5d} requests  "
                         f"{len(ok):5d} whole  p50 {p50:7.1f} ms  max "
                         f"{max(ok) if ok else float('nan'):7.1f} ms")
        return lines

    def abort_close_seconds(self) -> list[float]:
        """For each client abort: how long until the provider's stream ended (None: never)."""
        delays = []
        for r in self.results:
            if (r.outcome is Outcome.ABORTED and r.aborted_at is not None
                    and not self._finished_before_abort(r)):
                ended, early = self.upstream_endings.get(r.id, (float("inf"), False))
                delays.append(ended - r.aborted_at if early else float("inf"))
        return delays

    def rss_growth(self, name: str) -> float:
        start, end = self.rss[name]
        return (end - start) / start

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} answered requests have no record "
                         f"(e.g. {self.lost[0]})")
        if self.lost_at_kill:
            found.append(f"{len(self.lost_at_kill)} requests answered within "
                         f"{KILL_WINDOW_SECONDS:.0f}s before a SIGKILL have no record")
        if self.doubled:
            found.append(f"{len(self.doubled)} requests have more than one record")
        if self.unexpected:
            found.append(f"{len(self.unexpected)} refused/failed requests were charged "
                         f"(e.g. {self.unexpected[0]})")
        if self.unattributed_records:
            found.append(f"{self.unattributed_records} records match no request")
        if self.wrong_partial:
            found.append(f"{len(self.wrong_partial)} records have the wrong partial flag "
                         f"(e.g. {self.wrong_partial[0]})")
        if self.overcharged:
            found.append(f"{len(self.overcharged)} partial records cost more than a whole answer")
        served = sum(n for status, n in self.during_outage().items() if status.startswith("2"))
        if not served:
            found.append("no request was served while PostgreSQL was down")
        for alert in REQUIRED_ALERTS:
            if alert not in self.alerts_fired or alert not in self.alerts_resolved:
                found.append(f"{alert} did not fire and resolve "
                             f"(fired: {sorted(self.alerts_fired)}, "
                             f"resolved: {sorted(self.alerts_resolved)})")
        slow = [d for d in self.abort_close_seconds() if d > MAX_UPSTREAM_CLOSE_SECONDS]
        if slow:
            found.append(f"{len(slow)} client aborts did not close the upstream within "
                         f"{MAX_UPSTREAM_CLOSE_SECONDS}s")
        for name in self.rss:
            if self.rss_growth(name) >= MAX_RSS_GROWTH:
                found.append(f"{name} RSS grew {100 * self.rss_growth(name):.1f}%")
        return found

    def lines(self) -> list[str]:
        def counts(counter: Counter[str]) -> str:
            return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items()))

        p50, p99 = self.latency_ms()
        plain, streamed = self.latency_ms(False), self.latency_ms(True)
        delays = sorted(self.abort_close_seconds())
        kill_flight = self.in_flight_at_kill
        at_kill = sum(self.ledger[r.id].count for r in kill_flight if r.id in self.ledger)
        lines = [
            f"soak: {self.duration:.0f} s at {self.rate:.0f} req/s; 2 limiters + 1 exporter on "
            f"one PostgreSQL; Prometheus + Alertmanager",
            f"requests served: {len(self.results)} (not sent, generator saturated: "
            f"{self.skipped})",
            f"outcomes: {counts(self.outcomes())}",
            f"by status: {counts(self.statuses())}",
            f"latency of whole answers: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            f"(plain p50 {plain[0]:.1f} / p99 {plain[1]:.1f}; streams p50 {streamed[0]:.1f} "
            f"/ p99 {streamed[1]:.1f})",
            f"during the {self.outage[1] - self.outage[0]:.0f} s PostgreSQL outage: "
            f"{counts(self.during_outage())}",
            f"records expected {self.expected_records}, recorded {self.recorded - at_kill}"
            f" (lost {len(self.lost)}, lost within {KILL_WINDOW_SECONDS:.0f}s before a SIGKILL "
            f"{len(self.lost_at_kill)}, doubled {len(self.doubled)}, charged without an answer "
            f"{len(self.unexpected)}, unattributed {self.unattributed_records}, wrong partial "
            f"flag {len(self.wrong_partial)}, partial over a whole answer's cost "
            f"{len(self.overcharged)})",
            f"in flight when a limiter was killed (no answer / cut): {len(kill_flight)}, "
            f"of which recorded anyway: {sum(1 for r in kill_flight if r.id in self.ledger)}",
            "kills: " + "; ".join(f"limiter {k.limiter}, {k.spooled_lines} records in its "
                                  f"spool" for k in self.kills),
            f"client aborts: {len(delays)}, upstream closed after p50 "
            f"{1000 * statistics.median(delays) if delays else float('nan'):.0f} ms, max "
            f"{1000 * max(delays) if delays else float('nan'):.0f} ms",
            f"alerts fired: {', '.join(sorted(self.alerts_fired)) or '-'}",
            f"alerts resolved: {', '.join(sorted(self.alerts_resolved)) or '-'}",
        ]
        lines += self.notes
        for name, (start, end) in self.rss.items():
            lines.append(f"{name} RSS: {start / 2**20:.1f} MiB at start, {end / 2**20:.1f} MiB "
                         f"at end ({100 * self.rss_growth(name):+.1f}%)")
        problems = self.problems()
        lines.append("verdict: " + ("all checks passed" if not problems
                                    else "FAILED: " + "; ".join(problems)))
        return lines
