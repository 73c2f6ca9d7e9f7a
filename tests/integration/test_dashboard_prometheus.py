"""Every PromQL panel, variables filled in, run against a real Prometheus: no error, and data.

The fast, deterministic companion of tests/e2e/test_dashboard_live.py (which runs the real
limiter and exporter). Here Prometheus scrapes stand-ins for the two processes —
prometheus-client registries holding every name of agentmeter's exposition with the label sets
of the metric contract (DESIGN.md), values chosen so every panel has something to show (a node
and a workspace under-used, users near and over their limit, an unpriced model) — next to the
sample coderd, cAdvisor and node-exporter target. It proves the queries parse, the joins match
and the label names are the contract's, in about twenty seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dashboards.external_metrics import EXTERNAL_METRICS
from ledger import metric_names as m
from ledger.metric_names import exposed_names
from ledger.tokens import TOKEN_KINDS
from tests.support.dashboard_queries import (
    PanelQuery,
    Prometheus,
    ScrapeJob,
    all_queries,
    metric_names,
    prometheus_server,
    substitute,
)
from tests.support.external_metrics_target import (
    WorkspacePod,
    external_registries,
    serve_metrics,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

PROMQL = [q for q in all_queries() if q.datasource_type == "prometheus"]
RANGE_SECONDS = 10
VARIABLES = {"user": "alice", "__rate_interval": "4s", "__range": f"{RANGE_SECONDS}s"}
JOBS = {
    "agentmeter-limiter": "/limiter",
    "agentmeter-exporter": "/exporter",
    "coderd": "/coderd",
    "cadvisor": "/cadvisor",
    "node-exporter": "/node-exporter",
}


# The stand-ins ---------------------------------------------------------------------------------

USERS = {"alice": "Alice Liddell", "bob": "Bob Builder", "carol": "Carol"}
MODELS = ("claude-sonnet-4-5", "mystery-model")
GIB = 1024**3
# (namespace, pod, user, workspace, node, cpu cores used, memory used)
WORKSPACES = [
    ("coder", "ws-alice-main", "alice", "main", "node-a", 1.5, 2 * GIB),
    ("coder", "ws-bob-idle", "bob", "idle", "node-b", 0.01, GIB // 5),
]
SAMPLE_PODS = [WorkspacePod(ns, pod) for ns, pod, *_ in WORKSPACES]
# node -> (cpu cores used, memory used); both have 4 cores and 16 GiB allocatable.
NODES = {"node-a": (3.5, 12 * GIB), "node-b": (0.2, GIB)}


def _gauge(name: str, labels: dict[str, str] | None = None, value: float = 1.0,
           ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, name, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _gauges(name: str, rows: Iterable[tuple[dict[str, str], float]]) -> GaugeMetricFamily:
    rows = list(rows)
    family = GaugeMetricFamily(name, name, labels=list(rows[0][0]))
    for labels, value in rows:
        family.add_metric(list(labels.values()), value)
    return family


def _counter(name: str, rows: Iterable[tuple[dict[str, str], float]]) -> CounterMetricFamily:
    rows = list(rows)
    family = CounterMetricFamily(name, name, labels=list(rows[0][0]))
    for labels, value in rows:
        family.add_metric(list(labels.values()), value)
    return family


def _histogram(name: str, label: str, values: Iterable[str], count: float) -> Metric:
    family = HistogramMetricFamily(name, name, labels=[label])
    for value in values:
        buckets = [("0.01", count * 0.3), ("0.1", count * 0.8), ("1.0", count * 0.95),
                   ("+Inf", count)]
        family.add_metric([value], buckets, sum_value=count * 0.05)
    return family


def _exporter(t: float) -> Iterator[Metric]:
    yield _gauges(m.USER_INFO, (({"user": u, "name": n}, 1) for u, n in USERS.items()))
    yield _gauges(m.USER_SPEND_USD, [({"user": "alice"}, 90), ({"user": "bob"}, 60),
                                     ({"user": "carol"}, 5)])
    yield _gauges(m.USER_LIMIT_USD, [({"user": "alice", "source": "user"}, 100),
                                     ({"user": "bob", "source": "group"}, 50)])
    yield _gauges(m.USER_LIMIT_UTILIZATION_RATIO, [({"user": "alice"}, 0.9),
                                                   ({"user": "bob"}, 1.2)])
    pairs = [(u, model) for u in USERS for model in MODELS]
    yield _counter(m.SPEND_USD, (({"user": u, "model": mo}, 10 + 0.01 * t) for u, mo in pairs))
    yield _counter(m.TOKENS, (({"user": u, "model": mo, "token_type": k.value}, 1000 + 50 * t)
                              for u, mo in pairs for k in TOKEN_KINDS))
    yield _counter(m.MESSAGES, (({"user": u, "model": mo}, 10 + t) for u, mo in pairs))
    yield _counter(m.CHATS, (({"user": u}, 2 + 0.1 * t) for u in USERS))
    yield _gauge(m.LIMITS_ENABLED)
    yield _gauge(m.LIMITS_DEFAULT_USD, value=50)
    yield _gauge(m.LIMITS_PERIOD_END_TIMESTAMP_SECONDS, value=time.time() + 86400)
    yield _gauge(m.LIMITS_INFO, {"period": "month", "group_policy": "lowest"})
    yield _gauge(m.MODELS_WITHOUT_PRICING)
    yield _gauges(m.MODEL_PRICING_MISSING, [
        ({"model": "mystery-model", "token_type": "input", "gap": m.GAP_PRICE}, 1),
        ({"model": "gpt-5", "token_type": "", "gap": "variant"}, 1)])
    yield _gauges(m.MODEL_PRICE_USD_PER_MILLION_TOKENS,
                  [({"model": "claude-sonnet-4-5", "token_type": "input"}, 3)])
    yield _counter(m.UNPRICED_MESSAGES, [
        ({"model": "mystery-model", "gap": m.GAP_PRICE}, 3 + 0.5 * t),
        ({"model": "gpt-5", "gap": "variant"}, 1 + 0.1 * t)])
    yield _counter(m.FEES, [({"user": "alice", "model": "claude-sonnet-4-5",
                              "fee": "web_search"}, 2 + 0.2 * t)])
    yield _counter(m.UNPRICED_TOKENS, [({"model": "mystery-model", "token_type": "input"},
                                        300 + 20 * t)])
    yield _gauge(m.SERIES_DROPPED, {"collector": "ledger"}, 0)
    yield _gauge(m.LEDGER_MESSAGE_RETENTION_SECONDS, value=400 * 86400)
    yield _gauge(m.LEDGER_MESSAGES_OLDEST_TIMESTAMP_SECONDS, value=time.time() - 420 * 86400)
    yield _gauge(m.LEDGER_PRUNE_LAST_SUCCESS_TIMESTAMP_SECONDS, value=time.time() - 600)
    yield _gauge(m.LEDGER_PRUNE_LAST_REMOVED_MESSAGES, value=9_000_000)
    yield _gauges(m.WORKSPACE_INFO, (
        ({"namespace": ns, "pod": pod, "username": user, "workspace": ws,
          "workspace_id": f"id-{pod}", "node": node}, 1)
        for ns, pod, user, ws, node, *_ in WORKSPACES))
    for name, cpu, memory in ((m.WORKSPACE_RESOURCE_LIMIT, 2, 4 * GIB),
                              (m.WORKSPACE_RESOURCE_REQUEST, 1, 2 * GIB)):
        yield _gauges(name, (
            ({"namespace": ns, "pod": pod, "container": "dev", "resource": r, "unit": u}, v)
            for ns, pod, *_ in WORKSPACES
            for r, u, v in (("cpu", "core", cpu), ("memory", "byte", memory))))
    yield _gauges(m.WORKSPACE_CPU_USAGE_CORES, (
        ({"namespace": ns, "pod": pod, "container": "dev"}, cpu)
        for ns, pod, _, _, _, cpu, _ in WORKSPACES))
    yield _gauges(m.WORKSPACE_MEMORY_WORKING_SET_BYTES, (
        ({"namespace": ns, "pod": pod, "container": "dev"}, mem)
        for ns, pod, *_, mem in WORKSPACES))
    for name in (m.NODE_ALLOCATABLE, m.NODE_CAPACITY):
        yield _gauges(name, (({"node": n, "resource": r, "unit": u}, v) for n in NODES
                             for r, u, v in (("cpu", "core", 4), ("memory", "byte", 16 * GIB))))
    for name, ratio in ((m.NODE_RESOURCE_LIMITS_RATIO, 1.25),
                        (m.NODE_RESOURCE_REQUESTS_RATIO, 0.6)):
        yield _gauges(name, (({"node": n, "resource": r}, ratio) for n in NODES
                             for r in ("cpu", "memory")))
    yield _gauges(m.NODE_CPU_USAGE_CORES, (({"node": n}, v[0]) for n, v in NODES.items()))
    yield _gauges(m.NODE_MEMORY_WORKING_SET_BYTES,
                  (({"node": n}, v[1]) for n, v in NODES.items()))
    yield _gauge(m.CODER_SYNC_SUCCESS)
    yield _gauge(m.CODER_SYNC_LAST_SUCCESS_TIMESTAMP_SECONDS, value=time.time() - 30)
    yield _gauge(m.CODER_SYNC_DURATION_SECONDS, value=0.4)
    yield _counter(m.CODER_SYNC_CHANGES, [({}, 3 + 0.01 * t)])
    yield from _self_health("exporter", t)


def _self_health(component: str, t: float) -> Iterator[Metric]:
    yield _gauges(m.COLLECTOR_SUCCESS, [({"collector": component}, 1)])
    yield _gauges(m.COLLECTOR_DURATION_SECONDS, [({"collector": component}, 0.01)])
    yield _counter(m.LOG_EVENTS, (({"component": component, "level": level}, 5 + rate * t)
                                  for level, rate in (("info", 1.0), ("warning", 0.2),
                                                      ("error", 0.05))))


def _limiter(t: float) -> Iterator[Metric]:
    routes = ("/v1/messages", "/v1/chat/completions")
    yield _counter(m.LIMITER_REQUESTS, (
        ({"route": route, "code": code, "provider": provider}, 10 + per_s * t)
        for route, provider in zip(routes, ("anthropic", "openai"), strict=True)
        for code, per_s in (("200", 5.0), ("409", 0.5), ("502", 0.1))))
    count = 100 + 5 * t
    yield _histogram(m.LIMITER_REQUEST_DURATION_SECONDS, "route", routes, count)
    yield _histogram(m.LIMITER_OVERHEAD_SECONDS, "route", routes, count)
    yield _histogram(m.LIMITER_UPSTREAM_DURATION_SECONDS, "provider", ("anthropic",), count)
    yield _histogram(m.LIMITER_TIME_TO_FIRST_TOKEN_SECONDS, "provider", ("anthropic",), count)
    yield _counter(m.LIMITER_BLOCKED, [({"user": "bob"}, 3 + 0.5 * t)])
    yield _counter(m.LIMITER_FAIL_OPEN, [({"reason": "database_unavailable"}, 1 + 0.1 * t)])
    yield _gauge(m.LIMITER_SPOOL_PENDING, value=0)
    yield _counter(m.LIMITER_KEY_CHECKS, [({"source": "cache"}, 90 * t), ({"source": "ledger"}, t)])
    yield _counter(m.CODER_TOKEN_LOOKUPS, [({"outcome": "accepted"}, 20 + t),
                                           ({"outcome": "unavailable"}, 0)])
    yield _histogram(m.LIMITER_UPSTREAM_CONNECTION_WAIT_SECONDS, "provider", ("anthropic",), t)
    yield _counter(m.LIMITER_CLIENT_TIMEOUTS, [({"phase": "body"}, 0.01 * t)])
    yield _gauge(m.LIMITER_BUFFERED_BODY_BYTES, value=65536)
    yield _counter(m.LIMITER_RECORDS_REFUSED, [({}, 0)])
    yield from _self_health("limiter", t)


class _Sample(Collector):
    def __init__(self, build: Callable[[float], Iterable[Metric]]) -> None:
        self._start = time.monotonic()
        self._build = build

    def collect(self) -> Iterable[Metric]:
        return self._build(time.monotonic() - self._start)


def sample_registries() -> dict[str, CollectorRegistry]:
    """Stand-ins for the limiter's and the exporter's /metrics."""
    registries = {}
    for path, build in (("/limiter", _limiter), ("/exporter", _exporter)):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Sample(build))
        registries[path] = registry
    return registries


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Prometheus]:
    registries = {**external_registries(SAMPLE_PODS), **sample_registries()}
    with serve_metrics(registries) as target, prometheus_server(
            [ScrapeJob(job, target.address, path) for job, path in JOBS.items()]) as server:
        # Enough scrapes of every job for rates over the range and the rate interval.
        server.wait_for_series(
            f"count(count_over_time(up[1m]) >= {RANGE_SECONDS + 2}) == {len(JOBS)}")
        yield server


def test_every_job_is_up(prometheus: Prometheus) -> None:
    result = prometheus.api("query", query="up")["data"]["result"]
    assert {r["metric"]["job"]: r["value"][1] for r in result} == dict.fromkeys(JOBS, "1")


def test_the_stand_ins_serve_every_name_the_dashboards_use(prometheus: Prometheus) -> None:
    served = set(prometheus.api("label/__name__/values")["data"])
    used = {name for q in PROMQL for name in metric_names(q.text)}
    assert used <= served
    assert exposed_names() <= served, "the stand-in misses part of agentmeter's exposition"
    assert set(EXTERNAL_METRICS) <= served


def _has_number(result: list[dict[str, Any]]) -> bool:
    values = [v for series in result
              for v in ([series["value"]] if "value" in series else series["values"])]
    return any(not math.isnan(float(value)) for _, value in values)


@pytest.mark.parametrize("query", PROMQL, ids=lambda q: f"{q.dashboard}:{q.panel_id}{q.ref_id}")
def test_panel_query_returns_data(prometheus: Prometheus, query: PanelQuery) -> None:
    expr = substitute(query.text, VARIABLES)
    answer = prometheus.query(expr, query.instant, RANGE_SECONDS)
    assert answer["status"] == "success", f"{query.where}: {answer}"
    result = answer["data"]["result"]
    assert result, f"{query.where} returned no data: {expr}"
    assert _has_number(result), f"{query.where} returned only NaN: {expr}"


def test_the_user_variable_query_lists_the_seeded_users(prometheus: Prometheus) -> None:
    answer = prometheus.api("label/user/values",
                            **{"match[]": 'agentmeter_user_info{job="agentmeter-exporter"}'})
    assert answer["data"] == ["alice", "bob", "carol"]
