"""The Kubernetes collector, with the official client against a local API server: /metrics."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.kubernetes import KubernetesCollector, KubernetesConfigError
from exporter.settings import KubernetesSettings
from ledger import metric_names as names
from tests.integration.conftest import MakeCollector
from tests.support.fake_kube_api import (
    TOKEN,
    FakeKubeApi,
    container,
    node,
    pod,
    wait_until,
    workspace_pod,
)


def registry_of(collector: KubernetesCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def value(source: KubernetesCollector, name: str, **labels: str) -> float | None:
    return registry_of(source).get_sample_value(name, labels)


def test_lists_pods_nodes_and_metrics_through_the_real_client(
        api: FakeKubeApi, make_collector: MakeCollector) -> None:
    api.put_node(node("node-a", cpu="4", memory="16Gi", allocatable_cpu="3800m"))
    alice = api.put_pod(workspace_pod("alice", "dev", workspace_id="ws-1", containers=[
        container("dev", requests={"cpu": "500m", "memory": "1Gi"},
                  limits={"cpu": "2", "memory": "4Gi"})]))
    api.put_pod(pod("dns", namespace="kube-system",
                    containers=[container("coredns", requests={"cpu": "100m"})]))
    api.pod_metrics[("coder", "coder-alice-dev")] = {"dev": ("12345678n", "100Ki")}
    api.node_metrics["node-a"] = ("1500m", "8Gi")

    collector = make_collector()
    assert wait_until(lambda: value(collector, names.NODE_CPU_USAGE_CORES, node="node-a"))

    assert collector.healthy and collector.last_error is None
    assert value(collector, names.WORKSPACE_INFO, namespace="coder", pod="coder-alice-dev",
                 username="alice", workspace="dev", workspace_id="ws-1", node="node-a") == 1
    assert alice["metadata"]["labels"]["com.coder.workspace.id"] == "ws-1"
    assert value(collector, names.WORKSPACE_RESOURCE_LIMIT, namespace="coder",
                 pod="coder-alice-dev", container="dev", resource="memory",
                 unit="byte") == 4 * 2**30
    assert value(collector, names.WORKSPACE_RESOURCE_REQUEST, namespace="coder",
                 pod="coder-alice-dev", container="dev", resource="cpu", unit="core") == 0.5
    assert value(collector, names.NODE_ALLOCATABLE, node="node-a", resource="cpu",
                 unit="core") == pytest.approx(3.8)
    # The kube-system pod is not a workspace but does count on its node.
    assert value(collector, names.NODE_RESOURCE_REQUESTS_RATIO, node="node-a",
                 resource="cpu") == pytest.approx(0.6 / 3.8)
    assert value(collector, names.WORKSPACE_CPU_USAGE_CORES, namespace="coder",
                 pod="coder-alice-dev", container="dev") == pytest.approx(0.012345678)
    assert value(collector, names.WORKSPACE_MEMORY_WORKING_SET_BYTES, namespace="coder",
                 pod="coder-alice-dev", container="dev") == 102400
    assert value(collector, names.NODE_MEMORY_WORKING_SET_BYTES, node="node-a") == 8 * 2**30
    assert value(collector, names.SERIES_DROPPED, collector="kubernetes") == 0
    assert value(collector, names.WORKSPACE_INFO, namespace="kube-system", pod="dns",
                 username="", workspace="", workspace_id="", node="node-a") is None
    # It authenticated with the kubeconfig's token, and never filtered pods server-side.
    assert {r.authorization for r in api.requests} == {f"Bearer {TOKEN}"}
    assert all("labelSelector" not in r.query for r in api.requests)


def test_lists_page_by_page_on_a_big_cluster(api: FakeKubeApi,
                                             make_collector: MakeCollector) -> None:
    api.put_many(pods=[workspace_pod(f"user{i:04d}", "ws") for i in range(1203)],
                 nodes=[node("node-a")])
    collector = make_collector()
    info = [s for f in registry_of(collector).collect() if f.name == names.WORKSPACE_INFO
            for s in f.samples]
    assert len(info) == 1203
    pages = [r for r in api.requests if r.path == "/api/v1/pods" and not r.is_watch]
    assert [r.query.get("limit") for r in pages] == ["500"] * 3
    assert [("continue" in r.query) for r in pages] == [False, True, True]


def test_the_namespace_setting_limits_workspaces_not_node_ratios(
        api: FakeKubeApi, make_collector: MakeCollector) -> None:
    api.put_node(node("node-a", cpu="4"))
    api.put_pod(workspace_pod("alice", "dev", namespace="coder",
                              containers=[container("dev", requests={"cpu": "1"})]))
    api.put_pod(workspace_pod("bob", "dev", namespace="coder-staging",
                              containers=[container("dev", requests={"cpu": "1"})]))
    collector = make_collector(namespace="coder")
    pods = {s.labels["pod"] for f in registry_of(collector).collect()
            if f.name == names.WORKSPACE_INFO for s in f.samples}
    assert pods == {"coder-alice-dev"}
    assert value(collector, names.NODE_RESOURCE_REQUESTS_RATIO, node="node-a",
                 resource="cpu") == 0.5
    # Usage is asked of the namespace only; pods and nodes cluster-wide (for the ratios).
    assert wait_until(lambda: any(
        r.path == "/apis/metrics.k8s.io/v1beta1/namespaces/coder/pods" for r in api.requests))
    assert not any(r.path == "/apis/metrics.k8s.io/v1beta1/pods" for r in api.requests)
    assert {r.path for r in api.requests if "metrics.k8s.io" not in r.path} == {
        "/api/v1/pods", "/api/v1/nodes"}


def test_a_custom_selector_picks_the_workspaces(api: FakeKubeApi,
                                                make_collector: MakeCollector) -> None:
    api.put_pod(workspace_pod("alice", "dev", labels={"tier": "gpu"}))
    api.put_pod(workspace_pod("bob", "dev", labels={"tier": "cpu"}))
    collector = make_collector(workspace_selector="com.coder.resource=true,tier in (gpu)")
    pods = {s.labels["pod"] for f in registry_of(collector).collect()
            if f.name == names.WORKSPACE_INFO for s in f.samples}
    assert pods == {"coder-alice-dev"}


def test_metrics_api_absent_leaves_usage_out_stays_healthy_and_says_so_once(
        api: FakeKubeApi, make_collector: MakeCollector,
        caplog: pytest.LogCaptureFixture) -> None:
    api.metrics_enabled = False
    api.put_node(node("node-a"))
    api.put_pod(workspace_pod("alice", "dev"))
    caplog.set_level(logging.INFO, logger="agentmeter.exporter.kubernetes")
    collector = make_collector()
    assert wait_until(lambda: sum("metrics.k8s.io" in r.path for r in api.requests) >= 8)

    published = {f.name for f in registry_of(collector).collect()}
    assert names.WORKSPACE_INFO in published and names.NODE_CAPACITY in published
    assert not published & {names.WORKSPACE_CPU_USAGE_CORES,
                            names.WORKSPACE_MEMORY_WORKING_SET_BYTES,
                            names.NODE_CPU_USAGE_CORES, names.NODE_MEMORY_WORKING_SET_BYTES}
    assert collector.healthy
    assert collector.metrics is not None and collector.metrics.available is False
    said = [r for r in caplog.records if "metrics.k8s.io is not served" in r.getMessage()]
    assert len(said) == 1


def test_usage_series_appear_when_metrics_api_comes_back(
        api: FakeKubeApi, make_collector: MakeCollector) -> None:
    api.metrics_enabled = False
    api.put_node(node("node-a"))
    collector = make_collector()
    assert wait_until(lambda: collector.metrics is not None
                      and collector.metrics.available is False)
    api.node_metrics["node-a"] = ("250m", "1Gi")
    api.metrics_enabled = True
    assert wait_until(lambda: value(collector, names.NODE_CPU_USAGE_CORES, node="node-a") == 0.25)


ODD = ['quote " and \\ backslash', "new\nline", "emoji 🚀", "é" * 1024]


def test_odd_label_values_keep_the_exposition_valid(api: FakeKubeApi,
                                                    make_collector: MakeCollector) -> None:
    for index, odd in enumerate(ODD):
        api.put_pod(workspace_pod(f"user{index}", "dev", labels={
            "com.coder.user.username": odd, "com.coder.workspace.name": odd,
            "com.coder.workspace.id": odd}))
    collector = make_collector()
    text = generate_latest(registry_of(collector)).decode("utf-8")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    usernames = sorted(s.labels["username"] for s in families[names.WORKSPACE_INFO].samples)
    assert usernames == sorted(ODD)
    assert all(s.labels["workspace_id"] == s.labels["username"]
               for s in families[names.WORKSPACE_INFO].samples)


def test_a_missing_kubeconfig_is_a_readable_error(tmp_path: Path) -> None:
    settings = KubernetesSettings(enabled=True, kubeconfig=str(tmp_path / "nope"))
    with pytest.raises(KubernetesConfigError, match=r"exporter\.kubernetes\.kubeconfig.*nope"):
        KubernetesCollector(settings).start()


def test_outside_a_cluster_without_kubeconfig_is_a_readable_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubernetesConfigError, match="not running in a pod"):
        KubernetesCollector(KubernetesSettings(enabled=True)).start()


def test_a_bad_selector_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="selector"):
        KubernetesCollector(KubernetesSettings(workspace_selector="a in b"))


def test_stop_ends_every_thread_within_a_second(api: FakeKubeApi,
                                                make_collector: MakeCollector) -> None:
    collector = make_collector()
    assert wait_until(lambda: api.open_watches == 2)
    started = time.monotonic()
    collector.stop()
    assert time.monotonic() - started < 1.0
    assert wait_until(lambda: api.open_watches == 0)
    collector.stop()  # twice is harmless


def test_metrics_server_down_drops_stale_usage_but_keeps_the_collector_healthy(
        api: FakeKubeApi, make_collector: MakeCollector,
        caplog: pytest.LogCaptureFixture) -> None:
    api.put_node(node("node-a"))
    api.node_metrics["node-a"] = ("2", "4Gi")
    caplog.set_level(logging.INFO, logger="agentmeter.exporter.kubernetes")
    collector = make_collector()
    assert wait_until(lambda: value(collector, names.NODE_CPU_USAGE_CORES, node="node-a") == 2)

    api.metrics_failure = 503
    assert wait_until(lambda: value(collector, names.NODE_CPU_USAGE_CORES, node="node-a") is None)
    assert collector.healthy
    assert value(collector, names.NODE_CAPACITY, node="node-a", resource="cpu", unit="core") == 8
    warnings = [r for r in caplog.records if "metrics.k8s.io poll failing" in r.getMessage()]
    assert len(warnings) == 1 and "HTTP 503" in warnings[0].getMessage()

    api.metrics_failure = None
    assert wait_until(lambda: value(collector, names.NODE_CPU_USAGE_CORES, node="node-a") == 2)
    assert any("metrics.k8s.io poll recovered" in r.getMessage() for r in caplog.records)
