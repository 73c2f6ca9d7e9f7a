"""The list+watch caches follow the cluster, relist on 410 Gone and ride out API server failures."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.kubernetes import KubernetesCollector
from exporter.settings import KubernetesSettings
from ledger import metric_names as names
from ledger.backoff import Backoff
from tests.integration.conftest import MakeCollector
from tests.support.fake_kube_api import (
    FakeKubeApi,
    container,
    node,
    wait_until,
    workspace_pod,
)


def workspaces(collector: KubernetesCollector) -> dict[str, str]:
    """pod -> node of every workspace_info series on a fresh scrape."""
    registry = CollectorRegistry()
    registry.register(collector)
    return {s.labels["pod"]: s.labels["node"] for f in registry.collect()
            if f.name == names.WORKSPACE_INFO for s in f.samples}


def cpu_requests_ratio(collector: KubernetesCollector, node_name: str) -> float | None:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry.get_sample_value(names.NODE_RESOURCE_REQUESTS_RATIO,
                                     {"node": node_name, "resource": "cpu"})


def test_added_modified_and_deleted_events_show_in_the_next_scrape(
        api: FakeKubeApi, make_collector: MakeCollector) -> None:
    api.put_node(node("node-a", cpu="4"))
    api.put_pod(workspace_pod("alice", "dev"))
    collector = make_collector()
    assert workspaces(collector) == {"coder-alice-dev": "node-a"}

    api.put_pod(workspace_pod("bob", "dev", node="node-a",
                              containers=[container("dev", requests={"cpu": "2"})]))
    assert wait_until(lambda: "coder-bob-dev" in workspaces(collector))
    assert cpu_requests_ratio(collector, "node-a") == 0.5

    api.put_node(node("node-b", cpu="8"))
    api.put_pod(workspace_pod("alice", "dev", node="node-b"))  # MODIFIED: rescheduled
    assert wait_until(lambda: workspaces(collector).get("coder-alice-dev") == "node-b")

    api.put_pod(workspace_pod("bob", "dev", phase="Succeeded",
                              containers=[container("dev", requests={"cpu": "2"})]))
    assert wait_until(lambda: cpu_requests_ratio(collector, "node-a") == 0.0)
    assert "coder-bob-dev" not in workspaces(collector)

    api.delete_pod("coder", "coder-alice-dev")
    api.delete_node("node-b")
    assert wait_until(lambda: workspaces(collector) == {})
    assert wait_until(lambda: cpu_requests_ratio(collector, "node-b") is None)
    # All of that came from the watch: one list per resource.
    assert api.list_calls("pods") == 1 and api.list_calls("nodes") == 1


def test_a_410_error_event_forces_a_relist_with_the_right_state(
        api: FakeKubeApi, make_collector: MakeCollector) -> None:
    api.put_pod(workspace_pod("alice", "dev"))
    collector = make_collector()
    api.expire_watches()
    # Changes made while the cache relists are not lost.
    api.put_pod(workspace_pod("bob", "dev"))
    api.delete_pod("coder", "coder-alice-dev")
    assert wait_until(lambda: api.list_calls("pods") == 2)
    assert wait_until(lambda: workspaces(collector) == {"coder-bob-dev": "node-a"})
    assert wait_until(lambda: api.list_calls("nodes") == 2)
    assert collector.healthy


def test_http_410_on_a_stale_resource_version_forces_a_relist(
        api: FakeKubeApi, make_collector: MakeCollector) -> None:
    api.stale_watch_http = True
    api.put_pod(workspace_pod("alice", "dev"))
    collector = make_collector()
    # The API server goes away; meanwhile a pod changes and the history is compacted past it.
    api.fail(503)
    api.drop_watches()
    failed_watches = sum(r.is_watch for r in api.requests) + 2
    assert wait_until(lambda: sum(r.is_watch for r in api.requests) >= failed_watches)
    api.put_pod(workspace_pod("carol", "dev"))
    api.compact()
    api.heal()
    # Resuming from the old resourceVersion is answered HTTP 410: the cache lists again.
    assert wait_until(lambda: api.list_calls("pods") == 2)
    assert wait_until(lambda: set(workspaces(collector)) == {"coder-alice-dev", "coder-carol-dev"})
    assert collector.healthy


def test_a_500_makes_it_unhealthy_without_raising_and_it_recovers(
        api: FakeKubeApi, make_collector: MakeCollector) -> None:
    api.put_pod(workspace_pod("alice", "dev"))
    collector = make_collector(failure_grace_seconds=0.2)
    assert collector.healthy

    api.fail(500)
    api.drop_watches()
    assert wait_until(lambda: not collector.healthy)
    assert collector.last_error is not None and "HTTP 500" in collector.last_error
    # The scrape still works from the cache.
    assert workspaces(collector) == {"coder-alice-dev": "node-a"}
    watches_while_failing = sum(r.is_watch for r in api.requests)
    time.sleep(0.5)
    # Backed off: a handful of retries, not a tight loop.
    assert sum(r.is_watch for r in api.requests) - watches_while_failing < 15

    api.heal()
    api.put_pod(workspace_pod("bob", "dev"))
    assert wait_until(lambda: collector.healthy)
    assert collector.last_error is None
    assert wait_until(lambda: set(workspaces(collector)) == {"coder-alice-dev", "coder-bob-dev"})


def test_a_short_outage_within_the_grace_period_stays_healthy(
        api: FakeKubeApi, make_collector: MakeCollector) -> None:
    collector = make_collector(failure_grace_seconds=30)
    api.fail(500)
    api.drop_watches()
    assert wait_until(lambda: sum(r.is_watch for r in api.requests) >= 4)
    assert collector.healthy
    api.heal()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_unhealthy_not_fatal(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
        f"clusters: [{{name: gone, cluster: {{server: 'http://127.0.0.1:{unused_port()}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: gone, context: {cluster: gone, user: u}}]\n")
    collector = KubernetesCollector(
        KubernetesSettings(enabled=True, kubeconfig=str(kubeconfig), failure_grace_seconds=0),
        backoff=Backoff(0.05, 0.2))
    collector.start()
    try:
        assert not collector.wait_synced(0.5)
        assert not collector.synced and not collector.healthy
        assert wait_until(lambda: "Connection refused" in (collector.last_error or "")
                          or "NewConnectionError" in (collector.last_error or ""))
        registry = CollectorRegistry()
        registry.register(collector)
        assert registry.get_sample_value(names.SERIES_DROPPED, {"collector": "kubernetes"}) == 0
        assert registry.get_sample_value(names.WORKSPACE_INFO, {}) is None
    finally:
        started = time.monotonic()
        collector.stop()
        assert time.monotonic() - started < 1.0


def test_a_non_410_error_event_is_retried_from_where_the_watch_was(
        api: FakeKubeApi, make_collector: MakeCollector) -> None:
    api.put_pod(workspace_pod("alice", "dev"))
    collector = make_collector(failure_grace_seconds=0)
    watches = sum(r.is_watch for r in api.requests)
    api.error_watches(500)
    assert wait_until(lambda: sum(r.is_watch for r in api.requests) >= watches + 2)
    api.put_pod(workspace_pod("bob", "dev"))
    assert wait_until(lambda: set(workspaces(collector)) == {"coder-alice-dev", "coder-bob-dev"})
    assert wait_until(lambda: collector.healthy)
    # A 500 is not an expiry: the watch resumed, nothing was listed again.
    assert api.list_calls("pods") == 1


def test_an_expired_continue_token_restarts_the_list(api: FakeKubeApi,
                                                     make_collector: MakeCollector) -> None:
    api.put_many(pods=[workspace_pod(f"user{i:04d}", "ws") for i in range(700)])
    api.expire_next_continue = True
    collector = make_collector()
    assert len(workspaces(collector)) == 700
    assert api.list_calls("pods") == 2
    assert collector.healthy


def test_watches_ended_by_the_server_resume_without_relisting(
        api: FakeKubeApi, make_collector: MakeCollector,
        caplog: pytest.LogCaptureFixture) -> None:
    api.max_watch_seconds = 0.1
    collector = make_collector()
    first = sum(r.is_watch for r in api.requests)
    assert wait_until(lambda: sum(r.is_watch for r in api.requests) >= first + 6)
    api.put_pod(workspace_pod("alice", "dev"))
    assert wait_until(lambda: workspaces(collector) == {"coder-alice-dev": "node-a"})
    assert api.list_calls("pods") == 1 and api.list_calls("nodes") == 1
    assert collector.healthy
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_bookmarks_move_the_resume_point_forward(api: FakeKubeApi,
                                                 make_collector: MakeCollector) -> None:
    api.stale_watch_http = True
    collector = make_collector()
    # A node changes: the pod watch sees nothing, so only a bookmark tells it the new version.
    api.put_node(node("node-a"))
    api.bookmark()
    assert wait_until(lambda: collector.nodes is not None and len(collector.nodes.items()) == 1)
    time.sleep(0.2)  # the bookmark reaches the pod watch too
    api.compact()
    api.drop_watches()
    watches = sum(r.is_watch for r in api.requests)
    assert wait_until(lambda: api.open_watches == 2
                      and sum(r.is_watch for r in api.requests) >= watches + 2)
    assert api.list_calls("pods") == 1 and api.list_calls("nodes") == 1
