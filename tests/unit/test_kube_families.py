"""What one scrape publishes from given pods, nodes and usage (no API server involved)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter.exposition import render
from exporter.kubernetes.families import Scope, build_families
from exporter.kubernetes.metrics_poller import Usage, parse_node_metrics, parse_pod_metrics
from exporter.kubernetes.records import CODER_LABELS, NodeRecord, PodRecord, parse_node, parse_pod
from exporter.kubernetes.selector import LabelSelector
from ledger import metric_names as names
from tests.support.fake_kube_api import container, node, pod, workspace_pod

SELECTOR = LabelSelector("com.coder.resource=true")
KEEP = CODER_LABELS | SELECTOR.keys


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def scrape(pods: list[dict[str, Any]], nodes: list[dict[str, Any]], *, usage: Usage | None = None,
           namespace: str | None = None, max_pods: int = 100,
           max_nodes: int = 100) -> CollectorRegistry:
    records: list[PodRecord] = [parse_pod(p, KEEP) for p in pods]
    node_records: list[NodeRecord] = [parse_node(n) for n in nodes]
    scope = Scope(SELECTOR, namespace, max_pods, max_nodes)
    registry = CollectorRegistry()
    registry.register(_Families(build_families(records, node_records, usage or Usage(), scope)))
    return registry


def requests_ratio(registry: CollectorRegistry, node_name: str, resource: str) -> float | None:
    return registry.get_sample_value(names.NODE_RESOURCE_REQUESTS_RATIO,
                                     {"node": node_name, "resource": resource})


def limits_ratio(registry: CollectorRegistry, node_name: str, resource: str) -> float | None:
    return registry.get_sample_value(names.NODE_RESOURCE_LIMITS_RATIO,
                                     {"node": node_name, "resource": resource})


def small(name: str, phase: str = "Running", node_name: str | None = "node-a",
          **resources: Any) -> dict[str, Any]:
    return pod(name, namespace="team", node=node_name, phase=phase,
               containers=[container("main", **resources)])


def test_provision_ratios_count_only_non_terminated_pods_on_the_node() -> None:
    cpu_1: dict[str, Any] = {"requests": {"cpu": "1", "memory": "1Gi"},
                             "limits": {"cpu": "2", "memory": "2Gi"}}
    registry = scrape(
        [small("running", **cpu_1), small("pending", "Pending", **cpu_1),
         small("done", "Succeeded", **cpu_1), small("crashed", "Failed", **cpu_1),
         small("unscheduled", "Pending", None, **cpu_1),
         small("elsewhere", node_name="node-b", **cpu_1)],
        [node("node-a", cpu="4", memory="8Gi"), node("node-b", cpu="8", memory="8Gi"),
         node("node-c", cpu="8", memory="8Gi")])
    assert requests_ratio(registry, "node-a", "cpu") == pytest.approx(2 / 4)
    assert requests_ratio(registry, "node-a", "memory") == pytest.approx(2 / 8)
    assert limits_ratio(registry, "node-a", "cpu") == pytest.approx(4 / 4)
    assert limits_ratio(registry, "node-a", "memory") == pytest.approx(4 / 8)
    assert requests_ratio(registry, "node-b", "cpu") == pytest.approx(1 / 8)
    # A node with no pods is provisioned at 0, not absent.
    assert requests_ratio(registry, "node-c", "cpu") == 0.0
    assert limits_ratio(registry, "node-c", "memory") == 0.0


def test_ratios_follow_the_scheduler_for_init_containers_sidecars_and_overhead() -> None:
    spec = pod("app", namespace="team", containers=[
        container("main", requests={"cpu": "500m"}, limits={"cpu": "1"}),
        container("helper", requests={"cpu": "250m"}),  # no limit: not in the limits sum
    ], init_containers=[
        container("migrate", requests={"cpu": "2"}, limits={"cpu": "3"}),
        container("proxy", requests={"cpu": "100m"}, limits={"cpu": "200m"},
                  restartPolicy="Always"),
    ], overhead={"cpu": "50m"})
    registry = scrape([spec], [node("node-a", cpu="10")])
    # Requests: max(0.75 + 0.1 sidecar, 2 migrate alone) + 0.05 overhead.
    assert requests_ratio(registry, "node-a", "cpu") == pytest.approx(2.05 / 10)
    # Limits: max(1 + 0.2, 3) + 0.05.
    assert limits_ratio(registry, "node-a", "cpu") == pytest.approx(3.05 / 10)


def test_node_capacity_and_allocatable_in_cores_and_bytes() -> None:
    registry = scrape([], [node("node-a", cpu="4", memory="16Gi", allocatable_cpu="3800m",
                                allocatable_memory="15564Mi")])
    value = registry.get_sample_value
    assert value(names.NODE_CAPACITY, {"node": "node-a", "resource": "cpu", "unit": "core"}) == 4
    assert value(names.NODE_ALLOCATABLE,
                 {"node": "node-a", "resource": "cpu", "unit": "core"}) == pytest.approx(3.8)
    assert value(names.NODE_CAPACITY,
                 {"node": "node-a", "resource": "memory", "unit": "byte"}) == 16 * 2**30
    assert value(names.NODE_ALLOCATABLE,
                 {"node": "node-a", "resource": "memory", "unit": "byte"}) == 15564 * 2**20


def test_workspace_series_cover_running_workspace_pods_of_the_namespace_only() -> None:
    pods = [workspace_pod("alice", "dev"),
            workspace_pod("bob", "old", phase="Succeeded"),
            workspace_pod("carol", "elsewhere", namespace="other"),
            pod("not-a-workspace", namespace="coder")]
    registry = scrape(pods, [], namespace="coder")
    infos = [s for f in registry.collect() if f.name == names.WORKSPACE_INFO for s in f.samples]
    assert [s.labels["pod"] for s in infos] == ["coder-alice-dev"]
    assert infos[0].labels == {
        "namespace": "coder", "pod": "coder-alice-dev", "username": "alice", "workspace": "dev",
        "workspace_id": pods[0]["metadata"]["labels"]["com.coder.workspace.id"],
        "node": "node-a"}


def test_container_requests_and_limits_per_resource_and_unit() -> None:
    registry = scrape([workspace_pod("alice", "dev", containers=[
        container("dev", requests={"cpu": "250m", "memory": "512Mi"}, limits={"cpu": "2"})])], [])
    labels = {"namespace": "coder", "pod": "coder-alice-dev", "container": "dev"}
    value = registry.get_sample_value
    assert value(names.WORKSPACE_RESOURCE_REQUEST,
                 {**labels, "resource": "cpu", "unit": "core"}) == 0.25
    assert value(names.WORKSPACE_RESOURCE_REQUEST,
                 {**labels, "resource": "memory", "unit": "byte"}) == 512 * 2**20
    assert value(names.WORKSPACE_RESOURCE_LIMIT, {**labels, "resource": "cpu", "unit": "core"}) == 2
    # No memory limit set: no series (absent is not 0, which would mean "limited to nothing").
    assert value(names.WORKSPACE_RESOURCE_LIMIT,
                 {**labels, "resource": "memory", "unit": "byte"}) is None


def test_caps_cut_series_in_a_stable_order_and_say_how_many() -> None:
    sized = container("dev", requests={"cpu": "1", "memory": "1Gi"},
                      limits={"cpu": "2", "memory": "2Gi"})
    pods = [workspace_pod(user, "ws", containers=[sized]) for user in ("carol", "alice", "bob")]
    nodes = [node("node-b"), node("node-a")]
    registry = scrape(pods, nodes, max_pods=2, max_nodes=1)
    kept = {s.labels["pod"] for f in registry.collect() if f.name == names.WORKSPACE_INFO
            for s in f.samples}
    assert kept == {"coder-alice-ws", "coder-bob-ws"}
    node_names = {s.labels["node"] for f in registry.collect() if f.name == names.NODE_CAPACITY
                  for s in f.samples}
    assert node_names == {"node-a"}
    # carol: info + cpu/memory request + cpu/memory limit = 5; node-b: 2 capacity,
    # 2 allocatable, 4 ratios = 8.
    assert registry.get_sample_value(names.SERIES_DROPPED, {"collector": "kubernetes"}) == 13


def test_nothing_cut_is_exported_as_zero() -> None:
    registry = scrape([], [])
    assert registry.get_sample_value(names.SERIES_DROPPED, {"collector": "kubernetes"}) == 0


def test_usage_series_from_metrics_api_lists() -> None:
    pod_metrics = {"kind": "PodMetricsList", "items": [
        {"metadata": {"name": "coder-alice-dev", "namespace": "coder"},
         "containers": [{"name": "dev", "usage": {"cpu": "12345678n", "memory": "100Ki"}}]}]}
    node_metrics = {"kind": "NodeMetricsList", "items": [
        {"metadata": {"name": "node-a"}, "usage": {"cpu": "1500m", "memory": "8Gi"}}]}
    usage = Usage(parse_pod_metrics(pod_metrics), parse_node_metrics(node_metrics), taken_at=1.0)
    registry = scrape([workspace_pod("alice", "dev")], [node("node-a")], usage=usage)
    labels = {"namespace": "coder", "pod": "coder-alice-dev", "container": "dev"}
    value = registry.get_sample_value
    assert value(names.WORKSPACE_CPU_USAGE_CORES, labels) == pytest.approx(0.012345678)
    assert value(names.WORKSPACE_MEMORY_WORKING_SET_BYTES, labels) == 102400
    assert value(names.NODE_CPU_USAGE_CORES, {"node": "node-a"}) == 1.5
    assert value(names.NODE_MEMORY_WORKING_SET_BYTES, {"node": "node-a"}) == 8 * 2**30


def test_without_metrics_api_the_usage_families_are_absent() -> None:
    registry = scrape([workspace_pod("alice", "dev")], [node("node-a")])
    published = {f.name for f in registry.collect()}
    assert names.WORKSPACE_INFO in published
    assert not published & {names.WORKSPACE_CPU_USAGE_CORES,
                            names.WORKSPACE_MEMORY_WORKING_SET_BYTES,
                            names.NODE_CPU_USAGE_CORES, names.NODE_MEMORY_WORKING_SET_BYTES}


def test_a_malformed_quantity_leaves_out_that_value_only() -> None:
    registry = scrape([workspace_pod("alice", "dev", containers=[
        container("dev", requests={"cpu": "lots", "memory": "1Gi"})])], [])
    labels = {"namespace": "coder", "pod": "coder-alice-dev", "container": "dev"}
    assert registry.get_sample_value(names.WORKSPACE_RESOURCE_REQUEST,
                                     {**labels, "resource": "cpu", "unit": "core"}) is None
    assert registry.get_sample_value(names.WORKSPACE_RESOURCE_REQUEST,
                                     {**labels, "resource": "memory", "unit": "byte"}) == 2**30


ODD = ['quote " inside', "back\\slash", "new\nline", "emoji 🚀🧪", "x" * 1024, "tab\tand\r"]


def _expositions(registry: CollectorRegistry) -> list[tuple[str, Any]]:
    """prometheus-client's own text, and the exporter's text and OpenMetrics renderings."""
    text, _ = render(registry, "text/plain")
    openmetrics, _ = render(registry, "application/openmetrics-text; version=1.0.0")
    return [
        ("generate_latest", text_string_to_metric_families(generate_latest(registry).decode())),
        ("render text", text_string_to_metric_families(text.decode())),
        ("render openmetrics", openmetrics_families(openmetrics.decode())),
    ]


@pytest.mark.parametrize("odd", ODD)
def test_odd_label_values_keep_the_exposition_valid(odd: str) -> None:
    spec = workspace_pod("alice", "dev", labels={"com.coder.user.username": odd,
                                                 "com.coder.workspace.name": odd},
                         containers=[container(odd, requests={"cpu": "1"})])
    registry = scrape([spec], [node("node-a")])
    for how, families in _expositions(registry):
        parsed = {f.name: f for f in families}
        info = parsed[names.WORKSPACE_INFO].samples
        assert [(s.labels["username"], s.labels["workspace"], s.value) for s in info] == [
            (odd, odd, 1.0)], how
        requests = parsed[names.WORKSPACE_RESOURCE_REQUEST].samples
        assert [(s.labels["container"], s.value) for s in requests] == [(odd, 1.0)], how
