"""The metric families of one scrape, built from cache snapshots (no I/O, no clock).

Workspace series cover the non-terminated pods that match the workspace selector (and the
namespace setting); a Succeeded or Failed pod holds nothing on its node any more. The node
provision ratios are computed over every non-terminated pod bound to the node, whatever its
namespace or labels, because that is what the scheduler has handed out.

Series are bounded: workspace pods in (namespace, pod) order beyond `max_pods`, and nodes in
name order beyond `max_nodes`, are cut, and `agentmeter_series_dropped{collector="kubernetes"}`
counts the series they would have produced (it is exported at 0 otherwise).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.kubernetes.columns import RenderCache
from exporter.kubernetes.metrics_poller import Usage
from exporter.kubernetes.node_series import (
    NodeSeries,
    Provisioned,
    count_series,
    node_families,
    node_series_cache,
)
from exporter.kubernetes.records import NodeRecord, PodRecord, Resources
from exporter.kubernetes.selector import LabelSelector
from exporter.kubernetes.workspace_series import (
    PodSeries,
    pod_series_cache,
    workspace_families,
)
from ledger import metric_names as names

COLLECTOR = "kubernetes"


@dataclass(frozen=True)
class Scope:
    """Which pods are workspaces, and how many series the operator allows."""

    selector: LabelSelector
    namespace: str | None
    max_pods: int
    max_nodes: int

    def is_workspace(self, pod: PodRecord) -> bool:
        if pod.terminated:
            return False
        if self.namespace is not None and pod.namespace != self.namespace:
            return False
        return self.selector.matches(pod.labels)


@dataclass
class SeriesCaches:
    """Rendered label text carried from one scrape to the next (one per collector)."""

    pods: RenderCache[tuple[str, str], PodRecord, PodSeries] = field(
        default_factory=pod_series_cache)
    nodes: RenderCache[str, NodeRecord, NodeSeries] = field(default_factory=node_series_cache)


def _count(value: Resources) -> int:
    return (value.cpu is not None) + (value.memory is not None)


def _pod_series_count(pod: PodRecord, usage: Usage) -> int:
    """How many series a pod produces: what is cut when the pod is over the cap."""
    total = 1
    for container in pod.containers:
        total += _count(container.requests) + _count(container.limits)
    for container_usage in usage.pods.get(pod.key, {}).values():
        total += _count(container_usage)
    return total


def provisioned_per_node(pods: Iterable[PodRecord]) -> dict[str, Provisioned]:
    """Per node: [cpu, memory] requested and [cpu, memory] limited by its running pods."""
    totals: dict[str, Provisioned] = defaultdict(lambda: ([0.0, 0.0], [0.0, 0.0]))
    for pod in pods:
        if pod.node is None or pod.terminated:
            continue
        requests, limits = totals[pod.node]
        requests[0] += pod.requests.cpu or 0.0
        requests[1] += pod.requests.memory or 0.0
        limits[0] += pod.limits.cpu or 0.0
        limits[1] += pod.limits.memory or 0.0
    return totals


def build_families(pods: list[PodRecord], nodes: list[NodeRecord], usage: Usage,
                   scope: Scope, caches: SeriesCaches | None = None) -> list[Metric]:
    caches = caches or SeriesCaches()
    workspaces = sorted((p for p in pods if scope.is_workspace(p)), key=lambda p: p.key)
    ordered = sorted(nodes, key=lambda n: n.name)
    dropped = sum(_pod_series_count(pod, usage) for pod in workspaces[scope.max_pods:])
    dropped += sum(count_series(node, usage) for node in ordered[scope.max_nodes:])

    families = workspace_families(workspaces[:scope.max_pods], usage, caches.pods)
    families += node_families(ordered[:scope.max_nodes], provisioned_per_node(pods), usage,
                              caches.nodes)
    series_dropped = GaugeMetricFamily(
        names.SERIES_DROPPED, "Series left out of this scrape because a cap was reached.",
        labels=["collector"])
    series_dropped.add_metric([COLLECTOR], dropped)
    families.append(series_dropped)
    return families
