"""The whole exporter as `agentmeter exporter` wires it: ledger and Kubernetes on one page.

The Kubernetes side talks to the local API server of tests/support/fake_kube_api.py through the
official client; the ledger is a real SQLite ledger.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import build_exporter, build_registry, exporter_running
from exporter.kubernetes import KubernetesConfigError
from exporter.settings import ExporterSettings, KubernetesSettings
from ledger.settings import DatabaseSettings
from tests.support.exporter_seed import NOW, read, seed, value
from tests.support.fake_kube_api import FakeKubeApi, container, fake_kube_api, node, workspace_pod
from tests.support.requirements import require_binary


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    with fake_kube_api() as server:
        server.put_node(node("node-a", cpu="4", memory="16Gi"))
        server.put_pod(workspace_pod("alice", "dev", workspace_id="ws-1", containers=[
            container("dev", requests={"cpu": "500m"}, limits={"cpu": "2"})]))
        yield server


def _settings(api: FakeKubeApi, tmp_path: Path) -> ExporterSettings:
    return ExporterSettings(kubernetes=KubernetesSettings(
        enabled=True, kubeconfig=str(api.write_kubeconfig(tmp_path / "kubeconfig")),
        metrics_poll_seconds=0.2, failure_grace_seconds=0.5))


def _wait(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


async def test_ledger_and_kubernetes_on_one_valid_page(
        sqlite_url: str, api: FakeKubeApi, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    seed(sqlite_url)
    async with (
        exporter_running(_settings(api, tmp_path), DatabaseSettings(url=sqlite_url),
                         listen="127.0.0.1:0", clock=lambda: NOW) as where,
        aiohttp.ClientSession() as session,
    ):
        deadline = time.monotonic() + 15
        while True:
            async with session.get(f"{where.url}/metrics") as response:
                assert response.status == 200
                body = await response.text()
            if ('agentmeter_collector_success{collector="kubernetes"} 1' in body
                    or time.monotonic() > deadline):
                break
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for f in text_string_to_metric_families(body) for s in f.samples}
    assert value(samples, "agentmeter_collector_success", collector="kubernetes") == 1.0
    assert value(samples, "agentmeter_collector_success", collector="ledger") == 1.0
    assert value(samples, "agentmeter_user_spend_usd", user="bob") == 1.25
    assert value(samples, "agentmeter_node_capacity", node="node-a", resource="cpu",
                 unit="core") == 4.0
    # Both collectors report their cut series in one family.
    assert body.count("# TYPE agentmeter_series_dropped gauge") == 1
    assert value(samples, "agentmeter_series_dropped", collector="ledger") == 0.0
    assert value(samples, "agentmeter_series_dropped", collector="kubernetes") == 0.0
    checked = subprocess.run([promtool, "check", "metrics"], input=body.encode("utf-8"),
                             capture_output=True, timeout=60)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()


def test_broken_kubernetes_api_leaves_the_ledger_alone(
        sqlite_url: str, api: FakeKubeApi, tmp_path: Path) -> None:
    seed(sqlite_url)
    exporter = build_exporter(_settings(api, tmp_path), DatabaseSettings(url=sqlite_url),
                              clock=lambda: NOW)
    try:
        assert _wait(lambda: value(read(exporter.registry), "agentmeter_collector_success",
                                   collector="kubernetes") == 1.0)
        api.fail(500)
        api.drop_watches()
        assert _wait(lambda: value(read(exporter.registry), "agentmeter_collector_success",
                                   collector="kubernetes") == 0.0)
        samples = read(exporter.registry)
        assert value(samples, "agentmeter_collector_success", collector="ledger") == 1.0
        assert value(samples, "agentmeter_user_spend_usd", user="bob") == 1.25
        assert value(samples, "agentmeter_node_capacity", node="node-a", resource="cpu",
                     unit="core") is None
        api.heal()
        assert _wait(lambda: value(read(exporter.registry), "agentmeter_collector_success",
                                   collector="kubernetes") == 1.0)
    finally:
        exporter.close()


def test_missing_kubeconfig_fails_at_start_up(sqlite_url: str, tmp_path: Path) -> None:
    settings = ExporterSettings(kubernetes=KubernetesSettings(
        enabled=True, kubeconfig=str(tmp_path / "nope")))
    with pytest.raises(KubernetesConfigError, match="nope"):
        build_registry(settings, DatabaseSettings(url=sqlite_url))


def test_callers_collectors_share_the_registry(sqlite_url: str) -> None:
    """The composition root registers its own (the log-events counter) next to ours."""
    own = CollectorRegistry()
    events = Counter("agentmeter_log_events", "Log events.", ["component", "level"],
                     registry=None)
    events.labels("exporter", "error").inc()
    registry, close = build_registry(ExporterSettings(), DatabaseSettings(url=sqlite_url),
                                     clock=lambda: NOW, registry=own, extra_collectors=[events])
    try:
        assert registry is own
        text = generate_latest(registry).decode()
        assert 'agentmeter_log_events_total{component="exporter",level="error"} 1.0' in text
        assert 'agentmeter_collector_success{collector="ledger"} 1.0' in text
    finally:
        close()


@pytest.mark.parametrize(("settings", "named"), [
    (ExporterSettings(max_users=-1), "max_users"),
    (ExporterSettings(active_window_days=-1), "active_window_days"),
    (ExporterSettings(collector_timeout_seconds=0), "timeout"),
])
def test_impossible_settings_are_refused(sqlite_url: str, settings: ExporterSettings,
                                         named: str) -> None:
    with pytest.raises(ValueError, match=named):
        build_registry(settings, DatabaseSettings(url=sqlite_url))
