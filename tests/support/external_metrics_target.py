"""Sample coderd, cAdvisor and node-exporter metrics, served over real HTTP for Prometheus.

The Compute and Control plane dashboards read metrics agentmeter does not publish. To prove
those panels too, this serves series with the names and labels the real components use, one
path per component (`/coderd`, `/cadvisor`, `/node-exporter`). Counters grow with wall time so
rate() and histogram_quantile() have something to compute, and the cAdvisor series carry the
namespace and pod of the workspaces the exporter reports, so the joins with
agentmeter_workspace_info find them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from tests.support.local_server import ThreadedServer


@dataclass(frozen=True)
class WorkspacePod:
    namespace: str
    pod: str
    container: str = "dev"
    throttled_share: float = 0.25  # share of CFS periods throttled


class _Growing(Collector):
    """A collector whose counters are functions of the seconds since it was created."""

    def __init__(self, build: Callable[[float], Iterable[Metric]]) -> None:
        self._start = time.monotonic()
        self._build = build

    def collect(self) -> Iterable[Metric]:
        return self._build(time.monotonic() - self._start)


def _coderd(elapsed: float) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "coderd_api_requests_processed", "The number of API requests processed.",
        labels=["code", "method", "path"])
    for code, per_second in (("200", 20.0), ("404", 1.0), ("500", 0.2)):
        requests.add_metric([code, "GET", "/api/v2/workspaces"], 100 + per_second * elapsed)
    yield requests
    latency = HistogramMetricFamily(
        "coderd_api_request_latencies_seconds", "Latency distribution of requests in seconds.",
        labels=["method", "path"])
    count = 100 + 20.0 * elapsed
    bounds = (0.005, 0.05, 0.25, 1.0, 5.0)
    shares = (0.2, 0.6, 0.9, 0.99, 1.0)
    buckets = [(str(b), count * s) for b, s in zip(bounds, shares, strict=True)]
    latency.add_metric(["GET", "/api/v2/workspaces"], [*buckets, ("+Inf", count)],
                       sum_value=count * 0.08)
    yield latency


def _cadvisor(pods: Sequence[WorkspacePod]) -> Callable[[float], Iterator[Metric]]:
    def build(elapsed: float) -> Iterator[Metric]:
        periods = CounterMetricFamily(
            "container_cpu_cfs_periods", "Number of elapsed enforcement period intervals.",
            labels=["namespace", "pod", "container"])
        throttled = CounterMetricFamily(
            "container_cpu_cfs_throttled_periods", "Number of throttled period intervals.",
            labels=["namespace", "pod", "container"])
        for pod in pods:
            elapsed_periods = 1000 + 10.0 * elapsed  # 100 ms CFS periods
            labels = [pod.namespace, pod.pod, pod.container]
            periods.add_metric(labels, elapsed_periods)
            throttled.add_metric(labels, elapsed_periods * pod.throttled_share)
        yield periods
        yield throttled
    return build


def _node_exporter(elapsed: float) -> Iterator[Metric]:
    # One host per target: Prometheus' own `instance` label tells the hosts apart.
    cpu = CounterMetricFamily("node_cpu_seconds", "Seconds the CPUs spent in each mode.",
                              labels=["cpu", "mode"])
    for core in ("0", "1"):
        cpu.add_metric([core, "idle"], 5000 + 0.7 * elapsed)
        cpu.add_metric([core, "user"], 2000 + 0.3 * elapsed)
    yield cpu


def external_registries(pods: Sequence[WorkspacePod]) -> dict[str, CollectorRegistry]:
    """URL path -> registry of one external component."""
    sources: dict[str, Callable[[float], Iterable[Metric]]] = {
        "/coderd": _coderd,
        "/cadvisor": _cadvisor(pods),
        "/node-exporter": _node_exporter,
    }
    registries = {}
    for path, build in sources.items():
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Growing(build))
        registries[path] = registry
    return registries


@contextmanager
def serve_metrics(registries: Mapping[str, CollectorRegistry]) -> Iterator[ThreadedServer]:
    """Serve each registry's exposition at its path on 127.0.0.1 (a free port); scrape the
    server's `address`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            registry = registries.get(self.path.split("?", 1)[0])
            if registry is None:
                self.send_error(404)
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # Prometheus scrapes every second; keep the test output readable.

    with ThreadedServer(Handler, "metrics-target") as server:
        yield server
