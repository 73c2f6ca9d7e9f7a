"""Workspace and node metrics from the Kubernetes API, served from caches so a scrape never waits.

Interface (what exporter-core's self-health wrapper relies on)::

    collector = KubernetesCollector(settings)   # KubernetesSettings; validates the selector
    collector.start()       # loads the config (KubernetesConfigError if none), starts the threads
    collector.collect()     # prometheus-client custom collector: fresh families on every call
                            # (GaugeMetricFamily; RowFamily columns for the per-pod series),
                            # read from the caches only, never raises for API trouble
    collector.healthy       # bool: caches synced and the API server not failing > grace period
    collector.last_error    # str | None: why it is unhealthy (or the last failure), for the log
    collector.synced        # bool: both the pod and the node cache have been listed once
    collector.wait_synced(timeout) -> bool
    collector.stop()        # stops the threads within about a second; safe to call twice;
                            # a stopped collector is not restarted (build a new one)

It does not register itself anywhere: the caller wraps it (self-health, time budget) and
registers the wrapper.

One cache of all pods, not two. The provision ratios need every pod on a node, and the workspace
pods are a subset of them, so a second (selector-filtered) watch would stream every workspace pod
twice. Instead the cache keeps a small record of each pod (node, phase, summed requests and
limits, per-container resources and only the labels the selector and Coder use) and the
workspace pods are picked out locally by the same label-selector rules the API server applies.
Cluster-wide pod and node read access (list, watch) is needed either way, and
`metrics.k8s.io` pods and nodes (list) for the usage series.

Health: the watch threads back off and retry on any error while the cache keeps its contents;
the collector is unhealthy before the first sync, and when a watch has been failing for longer
than `failure_grace_seconds` (the data may be stale). metrics.k8s.io problems never make it
unhealthy (see metrics_poller).

Sample::

    agentmeter_workspace_info{namespace="coder",pod="coder-alice-dev",username="alice",
        workspace="dev",workspace_id="3f6c…",node="node-a"} 1
    agentmeter_workspace_resource_limit{namespace="coder",pod="coder-alice-dev",
        container="dev",resource="cpu",unit="core"} 2
    agentmeter_workspace_cpu_usage_cores{namespace="coder",pod="coder-alice-dev",
        container="dev"} 0.25
    agentmeter_node_allocatable{node="node-a",resource="memory",unit="byte"} 16106127360
    agentmeter_node_resource_requests_ratio{node="node-a",resource="cpu"} 0.85
    agentmeter_node_cpu_usage_cores{node="node-a"} 3.2
    agentmeter_series_dropped{collector="kubernetes"} 0.0
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from kubernetes import client
from prometheus_client.core import Metric

from exporter.kubernetes.cache import Reflector
from exporter.kubernetes.client import create_api_client
from exporter.kubernetes.families import Scope, SeriesCaches, build_families
from exporter.kubernetes.metrics_poller import MetricsPoller, Usage
from exporter.kubernetes.records import (
    CODER_LABELS,
    NodeRecord,
    PodRecord,
    parse_node,
    parse_pod,
)
from exporter.kubernetes.selector import LabelSelector
from exporter.settings import KubernetesSettings
from ledger.backoff import Backoff

LOGGER = logging.getLogger("agentmeter.exporter.kubernetes")
STOP_SECONDS = 1.0


class KubernetesCollector:
    def __init__(self, settings: KubernetesSettings, *, backoff: Backoff | None = None,
                 logger: logging.Logger = LOGGER) -> None:
        selector = LabelSelector(settings.workspace_selector)
        self._settings = settings
        self._scope = Scope(selector, settings.namespace, settings.max_pods, settings.max_nodes)
        self._keep_labels = CODER_LABELS | selector.keys
        self._caches = SeriesCaches()
        self._backoff = backoff or Backoff()
        self._logger = logger
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._api_client: client.ApiClient | None = None
        self.pods: Reflector[tuple[str, str], PodRecord] | None = None
        self.nodes: Reflector[str, NodeRecord] | None = None
        self.metrics: MetricsPoller | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        if self._stop.is_set():
            raise RuntimeError("a stopped KubernetesCollector cannot be started again")
        api_client = create_api_client(self._settings)
        core = client.CoreV1Api(api_client)
        self._api_client = api_client
        self.pods = Reflector("pods", core.list_pod_for_all_namespaces, self._parse_pod,
                              lambda pod: pod.key, stop=self._stop, logger=self._logger,
                              backoff=self._backoff)
        self.nodes = Reflector("nodes", core.list_node, parse_node, lambda node: node.key,
                               stop=self._stop, logger=self._logger, backoff=self._backoff)
        self.metrics = MetricsPoller(client.CustomObjectsApi(api_client),
                                     namespace=self._settings.namespace,
                                     interval_seconds=self._settings.metrics_poll_seconds,
                                     stop=self._stop, logger=self._logger, backoff=self._backoff)
        for name, target in (("pods", self.pods.run), ("nodes", self.nodes.run),
                             ("metrics", self.metrics.run)):
            thread = threading.Thread(target=target, name=f"agentmeter-kubernetes-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for reflector in (self.pods, self.nodes):
            if reflector is not None:
                reflector.interrupt()
        deadline = time.monotonic() + STOP_SECONDS
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            # Daemon threads: a request still in flight cannot keep the process alive.
            self._logger.warning("kubernetes threads still finishing a request: %s", stuck)
        self._threads = []
        if self._api_client is not None and not stuck:
            self._api_client.close()

    # -- health ---------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return (self.pods is not None and self.nodes is not None
                and self.pods.synced and self.nodes.synced)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for reflector in (self.pods, self.nodes):
            if reflector is None or not reflector.wait_synced(
                    max(0.0, deadline - time.monotonic())):
                return False
        return True

    @property
    def healthy(self) -> bool:
        if not self.synced:
            return False
        grace = self._settings.failure_grace_seconds
        return all(r.failures.failing_for() <= grace for r in self._reflectors())

    @property
    def last_error(self) -> str | None:
        errors = [r.failures.last_error for r in self._reflectors()
                  if r.failures.failing_for() > 0 and r.failures.last_error]
        if errors:
            return "; ".join(errors)
        if self.pods is None:
            return "not started"
        if not self.synced:
            return "pod and node caches not synced yet"
        return None

    def _reflectors(self) -> list[Reflector[Any, Any]]:
        return [r for r in (self.pods, self.nodes) if r is not None]

    # -- scrape ---------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        pods = self.pods.items() if self.pods is not None else []
        nodes = self.nodes.items() if self.nodes is not None else []
        usage = self.metrics.usage() if self.metrics is not None else Usage()
        yield from build_families(pods, nodes, usage, self._scope, self._caches)

    def _parse_pod(self, raw: dict[str, Any]) -> PodRecord:
        return parse_pod(raw, self._keep_labels)
