"""The per-node families: capacity, allocatable, provision ratios and usage.

A ratio is the sum of the requests (or limits) of the node's non-terminated pods divided by the
node's allocatable, per resource; a node without allocatable for a resource gets no ratio for it.
Each node's rows and label text are rendered once per node record (see columns.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.core import Metric

from exporter.kubernetes.columns import Columns, FamilyColumns, RenderCache, Row, label_text
from exporter.kubernetes.metrics_poller import Usage
from exporter.kubernetes.records import NodeRecord, Resources
from ledger import metric_names as names

NODE_RESOURCE_LABELS = ["node", "resource", "unit"]
RATIO_LABELS = ["node", "resource"]
USAGE_LABELS = ["node"]
_UNITS = (("cpu", "core"), ("memory", "byte"))

# Per node: [cpu, memory] requested and [cpu, memory] limited by its non-terminated pods.
Provisioned = tuple[list[float], list[float]]
NOTHING_PROVISIONED: Provisioned = ([0.0, 0.0], [0.0, 0.0])


@dataclass(frozen=True, slots=True)
class NodeSeries:
    node: NodeRecord
    capacity: Columns
    allocatable: Columns
    # Row and label text of the cpu and memory ratio series, where the node has allocatable.
    ratios: tuple[tuple[int, Row, str, float], ...]
    usage: tuple[Row, str]


def _resource_columns(node: NodeRecord, value: Resources) -> Columns:
    entries = []
    for (resource, unit), amount in zip(_UNITS, (value.cpu, value.memory), strict=True):
        if amount is not None:
            row = (node.name, resource, unit)
            entries.append((row, label_text(NODE_RESOURCE_LABELS, row), amount))
    return Columns.of(entries)


def render_node(node: NodeRecord) -> NodeSeries:
    ratios = []
    for index, (resource, allocatable) in enumerate(
            (("cpu", node.allocatable.cpu), ("memory", node.allocatable.memory))):
        if allocatable:
            row = (node.name, resource)
            ratios.append((index, row, label_text(RATIO_LABELS, row), float(allocatable)))
    usage_row = (node.name,)
    return NodeSeries(node, _resource_columns(node, node.capacity),
                      _resource_columns(node, node.allocatable), tuple(ratios),
                      (usage_row, label_text(USAGE_LABELS, usage_row)))


def node_series_cache() -> RenderCache[str, NodeRecord, NodeSeries]:
    return RenderCache(lambda node: node.name, render_node)


def count_series(node: NodeRecord, usage: Usage) -> int:
    """How many series a node produces: what is cut when the node is over the cap."""
    series = render_node(node)
    used = usage.nodes.get(node.name, Resources())
    return (len(series.capacity.rows) + len(series.allocatable.rows) + 2 * len(series.ratios)
            + (used.cpu is not None) + (used.memory is not None))


def node_families(nodes: Sequence[NodeRecord], provisioned: dict[str, Provisioned],
                  usage: Usage, cache: RenderCache[str, NodeRecord, NodeSeries]) -> list[Metric]:
    capacity, allocatable = (FamilyColumns(NODE_RESOURCE_LABELS),
                             FamilyColumns(NODE_RESOURCE_LABELS))
    requests_ratio, limits_ratio = FamilyColumns(RATIO_LABELS), FamilyColumns(RATIO_LABELS)
    cpu, memory = FamilyColumns(USAGE_LABELS), FamilyColumns(USAGE_LABELS)
    for series in cache.rendered(nodes):
        name = series.node.name
        capacity.extend(series.capacity)
        allocatable.extend(series.allocatable)
        requested, limited = provisioned.get(name, NOTHING_PROVISIONED)
        for index, row, text, node_allocatable in series.ratios:
            requests_ratio.add(row, text, requested[index] / node_allocatable)
            limits_ratio.add(row, text, limited[index] / node_allocatable)
        used = usage.nodes.get(name)
        if used is not None and used.cpu is not None:
            cpu.add(*series.usage, used.cpu)
        if used is not None and used.memory is not None:
            memory.add(*series.usage, used.memory)
    families: list[Metric] = [
        allocatable.family(names.NODE_ALLOCATABLE, "Node resources available to pods."),
        capacity.family(names.NODE_CAPACITY, "Node resources in total."),
        requests_ratio.family(
            names.NODE_RESOURCE_REQUESTS_RATIO,
            "Sum of the requests of the node's non-terminated pods divided by its allocatable."),
        limits_ratio.family(
            names.NODE_RESOURCE_LIMITS_RATIO,
            "Sum of the limits of the node's non-terminated pods divided by its allocatable."),
    ]
    if usage.taken_at:
        families += [
            cpu.family(names.NODE_CPU_USAGE_CORES,
                       "CPU used on the node, in cores (metrics.k8s.io)."),
            memory.family(names.NODE_MEMORY_WORKING_SET_BYTES,
                          "Memory working set of the node, in bytes (metrics.k8s.io)."),
        ]
    return families
