"""Self-health: every source collector runs on a time budget, and how it went is itself a metric.

A scrape must always answer. A source that raises, hangs or reports itself unhealthy (a broken
Kubernetes watch) is reported with `agentmeter_collector_success{collector} 0` and its families are
left out of that scrape; the other sources are untouched. Each source runs in its own daemon
thread, all of them in parallel, and the scrape waits at most the budget for them: a source that
is still busy from an earlier scrape is not started a second time, so a hung database holds one
thread, not one per scrape.

Failures are logged once per episode (with the traceback), then quietly until the source
recovers, which is logged too: a scrape every 15 s must not flood the log.

Sample::

    agentmeter_collector_success{collector="ledger"} 1.0
    agentmeter_collector_duration_seconds{collector="ledger"} 0.042
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric

from ledger import metric_names

LOGGER = logging.getLogger("agentmeter.exporter")


class Source(Protocol):
    """A collector as prometheus-client knows it; `healthy` and `last_error` are optional."""

    def collect(self) -> Iterable[Metric]: ...


class SourceUnhealthy(Exception):
    """The source answered but says its data cannot be trusted (e.g. its watch is broken)."""


class CollectorTimeout(Exception):
    """The source did not finish within its time budget."""


@dataclass
class _Run:
    """One collection of one source, in its own thread."""

    started: float
    future: Future[list[Metric]] = field(default_factory=Future)


@dataclass
class _SourceState:
    name: str
    source: Source
    running: _Run | None = None
    # Whether the last finished scrape of this source failed: errors are logged on the edge.
    failing: bool = False
    last_success: bool | None = None


@dataclass(frozen=True)
class Outcome:
    collector: str
    success: bool
    duration_seconds: float
    families: list[Metric]
    error: BaseException | None = None


def merge_families(families: Iterable[Metric]) -> list[Metric]:
    """One family per name: several sources may share one (`agentmeter_series_dropped`), and an
    exposition that declares a name twice is rejected by Prometheus."""
    merged: dict[str, Metric] = {}
    for family in families:
        first = merged.get(family.name)
        if first is None:
            merged[family.name] = family
        elif first.type == family.type:
            combined = Metric(first.name, first.documentation, first.type, first.unit)
            combined.samples = [*first.samples, *family.samples]
            merged[family.name] = combined
        else:
            LOGGER.error("metric %s is produced with two types (%s, %s); the second is dropped",
                         family.name, first.type, family.type)
    return list(merged.values())


def _collect_all(source: Source) -> list[Metric]:
    families = list(source.collect())
    if getattr(source, "healthy", True) is False:
        detail = getattr(source, "last_error", None)
        raise SourceUnhealthy(str(detail) if detail else "the source reports itself unhealthy")
    return families


class SelfHealthCollector:
    """Wraps the named sources; register this one object in the registry instead of them."""

    def __init__(
        self,
        sources: Mapping[str, Source],
        *,
        timeout_seconds: float,
        logger: logging.Logger = LOGGER,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"collector timeout must be positive: {timeout_seconds!r}")
        self._states = [_SourceState(name, source) for name, source in sources.items()]
        self._timeout = timeout_seconds
        self._logger = logger
        self._monotonic = monotonic
        # Two scrapes at once (two Prometheus replicas) must not race on the run bookkeeping.
        self._lock = threading.Lock()

    def status(self) -> dict[str, bool | None]:
        """Success of each source at its last scrape (None: not scraped yet), for /healthz."""
        return {state.name: state.last_success for state in self._states}

    def collect(self) -> Iterator[Metric]:
        outcomes = self.run_sources()
        success = GaugeMetricFamily(
            metric_names.COLLECTOR_SUCCESS,
            "Whether the collector produced its metrics on this scrape (1) or failed (0).",
            labels=["collector"],
        )
        duration = GaugeMetricFamily(
            metric_names.COLLECTOR_DURATION_SECONDS,
            "How long the collector took on this scrape, in seconds.",
            labels=["collector"],
        )
        yield from merge_families(family for outcome in outcomes for family in outcome.families)
        for outcome in outcomes:
            success.add_metric([outcome.collector], 1.0 if outcome.success else 0.0)
            duration.add_metric([outcome.collector], outcome.duration_seconds)
        yield success
        yield duration

    def run_sources(self) -> list[Outcome]:
        with self._lock:
            now = self._monotonic()
            runs = [(state, self._start(state, now)) for state in self._states]
            deadline = now + self._timeout
            outcomes = [self._wait(state, run, deadline) for state, run in runs]
            for state, outcome in zip(self._states, outcomes, strict=True):
                self._record(state, outcome)
        return outcomes

    def _start(self, state: _SourceState, now: float) -> _Run:
        if state.running is not None and not state.running.future.done():
            return state.running  # still busy from an earlier scrape: wait on that run instead
        run = _Run(started=now)
        state.running = run

        def work() -> None:
            try:
                run.future.set_result(_collect_all(state.source))
            except BaseException as exc:  # reported as success 0, never raised into the scrape
                run.future.set_exception(exc)

        threading.Thread(target=work, name=f"collector-{state.name}", daemon=True).start()
        return run

    def _wait(self, state: _SourceState, run: _Run, deadline: float) -> Outcome:
        try:
            families = run.future.result(timeout=max(0.0, deadline - self._monotonic()))
        except FutureTimeout:
            elapsed = self._monotonic() - run.started
            error = CollectorTimeout(
                f"still running after {elapsed:.2f}s (budget {self._timeout:g}s)")
            return Outcome(state.name, False, elapsed, [], error)
        except Exception as exc:
            return Outcome(state.name, False, self._monotonic() - run.started, [], exc)
        state.running = None
        return Outcome(state.name, True, self._monotonic() - run.started, families)

    def _record(self, state: _SourceState, outcome: Outcome) -> None:
        state.last_success = outcome.success
        if outcome.success:
            if state.failing:
                self._logger.info("collector %s recovered", state.name,
                                  extra={"collector": state.name})
            state.failing = False
            return
        if state.failing:
            return
        state.failing = True
        error = outcome.error
        expected = isinstance(error, CollectorTimeout | SourceUnhealthy)
        self._logger.error(
            "collector %s failed, its metrics are left out until it recovers: %s: %s",
            state.name, type(error).__name__, error,
            exc_info=None if expected or error is None else error,
            extra={"collector": state.name, "duration_seconds": round(outcome.duration_seconds, 3)},
        )
