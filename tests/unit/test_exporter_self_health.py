"""Self-health: a failing, slow or unhealthy source never breaks the scrape or its neighbours."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.self_health import SelfHealthCollector


class Fine:
    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        family = GaugeMetricFamily("fine_value", "A value.", labels=["kind"])
        family.add_metric(["a"], 7.0)
        yield family


class Switchable:
    """Fails while `broken` is set, like a database that goes away and comes back."""

    def __init__(self) -> None:
        self.broken = True

    def collect(self) -> Iterator[Metric]:
        if self.broken:
            raise ConnectionError("connection refused (127.0.0.1:5432)")
        yield GaugeMetricFamily("switchable_value", "A value.", value=1.0)


class Stuck:
    """Blocks until released, like a query waiting on a hung database."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        self.release.wait(10)
        yield GaugeMetricFamily("stuck_value", "A value.", value=3.0)


class Unhealthy:
    healthy = False
    last_error = "pod watch: 410 Gone"

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("stale_value", "A value.", value=5.0)


def _registry(**sources: object) -> tuple[CollectorRegistry, SelfHealthCollector]:
    registry = CollectorRegistry()
    health = SelfHealthCollector(sources, timeout_seconds=0.3)  # type: ignore[arg-type]
    registry.register(health)
    return registry, health


def _success(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("agentmeter_collector_success", {"collector": name})


def test_failing_source_reports_zero_and_the_others_still_answer() -> None:
    registry, _ = _registry(fine=Fine(), ledger=Switchable())
    text = generate_latest(registry).decode()
    assert registry.get_sample_value("fine_value", {"kind": "a"}) == 7.0
    assert _success(registry, "fine") == 1.0
    assert _success(registry, "ledger") == 0.0
    assert "switchable_value" not in text
    duration = registry.get_sample_value("agentmeter_collector_duration_seconds",
                                         {"collector": "ledger"})
    assert duration is not None and 0 <= duration < 0.3


def test_source_recovers_when_its_backend_is_back() -> None:
    source = Switchable()
    registry, health = _registry(ledger=source)
    assert _success(registry, "ledger") == 0.0
    assert health.status() == {"ledger": False}
    source.broken = False
    assert _success(registry, "ledger") == 1.0
    assert registry.get_sample_value("switchable_value") == 1.0
    assert health.status() == {"ledger": True}


def test_slow_source_is_cut_at_its_budget_and_not_started_twice() -> None:
    stuck, fine = Stuck(), Fine()
    registry, _ = _registry(stuck=stuck, fine=fine)
    try:
        started = time.monotonic()
        assert _success(registry, "stuck") == 0.0
        assert time.monotonic() - started < 2.0
        assert registry.get_sample_value("fine_value", {"kind": "a"}) == 7.0
        assert registry.get_sample_value("stuck_value") is None
        duration = registry.get_sample_value("agentmeter_collector_duration_seconds",
                                             {"collector": "stuck"})
        assert duration is not None and duration >= 0.3
        # Still hung at the next scrape: waited on, not started again.
        assert _success(registry, "stuck") == 0.0
        assert stuck.calls == 1
        stuck.release.set()
        assert _success(registry, "stuck") == 1.0
        assert registry.get_sample_value("stuck_value") == 3.0
    finally:
        stuck.release.set()


def test_unhealthy_source_reports_zero_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    registry, _ = _registry(kubernetes=Unhealthy())
    with caplog.at_level(logging.INFO, logger="agentmeter.exporter"):
        assert _success(registry, "kubernetes") == 0.0
    assert registry.get_sample_value("stale_value") is None
    assert any("pod watch: 410 Gone" in r.getMessage() for r in caplog.records)


def test_error_is_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    source = Switchable()
    registry, _ = _registry(ledger=source)
    with caplog.at_level(logging.INFO, logger="agentmeter.exporter"):
        for _ in range(4):
            generate_latest(registry)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "ledger" in errors[0].getMessage()
        assert "connection refused" in errors[0].getMessage()
        assert errors[0].exc_info is not None
        assert getattr(errors[0], "collector", None) == "ledger"

        source.broken = False
        generate_latest(registry)
        generate_latest(registry)
        recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
        assert len(recovered) == 1

        source.broken = True
        generate_latest(registry)
        generate_latest(registry)
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SelfHealthCollector({}, timeout_seconds=0)


class Dropped:
    def __init__(self, collector: str, count: float) -> None:
        self.collector, self.count = collector, count

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("agentmeter_series_dropped", "Cut.", labels=["collector"])
        family.add_metric([self.collector], self.count)
        yield family


def test_families_shared_by_sources_are_declared_once() -> None:
    registry, _ = _registry(ledger=Dropped("ledger", 0.0), kubernetes=Dropped("kubernetes", 4.0))
    text = generate_latest(registry).decode()
    assert text.count("# TYPE agentmeter_series_dropped gauge") == 1
    assert registry.get_sample_value("agentmeter_series_dropped", {"collector": "ledger"}) == 0.0
    assert registry.get_sample_value("agentmeter_series_dropped",
                                     {"collector": "kubernetes"}) == 4.0
