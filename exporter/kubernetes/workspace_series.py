"""The per-workspace-pod families: info, container requests and limits, container usage.

Each pod's rows and label text are rendered once per pod record (see columns.py); usage values
come from the latest metrics.k8s.io poll and are joined in at scrape time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.core import Metric

from exporter.kubernetes.columns import Columns, FamilyColumns, RenderCache, Row, label_text
from exporter.kubernetes.metrics_poller import Usage
from exporter.kubernetes.records import (
    USERNAME_LABEL,
    WORKSPACE_ID_LABEL,
    WORKSPACE_NAME_LABEL,
    PodRecord,
    Resources,
)
from ledger import metric_names as names

INFO_LABELS = ["namespace", "pod", "username", "workspace", "workspace_id", "node"]
CONTAINER_LABELS = ["namespace", "pod", "container"]
RESOURCE_LABELS = [*CONTAINER_LABELS, "resource", "unit"]
_UNITS = (("cpu", "core"), ("memory", "byte"))


@dataclass(frozen=True, slots=True)
class PodSeries:
    pod: PodRecord
    info: tuple[Row, str]
    requests: Columns
    limits: Columns
    # Row and label text of each container, for the usage series.
    containers: dict[str, tuple[Row, str]]


def _resource_entries(prefix: Row, text: str, value: Resources) -> list[tuple[Row, str, float]]:
    entries: list[tuple[Row, str, float]] = []
    for (resource, unit), amount in zip(_UNITS, (value.cpu, value.memory), strict=True):
        if amount is not None:
            entries.append(((*prefix, resource, unit),
                            f'{text},resource="{resource}",unit="{unit}"', amount))
    return entries


def render_pod(pod: PodRecord) -> PodSeries:
    labels = pod.labels
    row = (pod.namespace, pod.name, labels.get(USERNAME_LABEL, ""),
           labels.get(WORKSPACE_NAME_LABEL, ""), labels.get(WORKSPACE_ID_LABEL, ""),
           pod.node or "")
    requests: list[tuple[Row, str, float]] = []
    limits: list[tuple[Row, str, float]] = []
    containers: dict[str, tuple[Row, str]] = {}
    for container in pod.containers:
        prefix = (pod.namespace, pod.name, container.name)
        text = label_text(CONTAINER_LABELS, prefix)
        containers[container.name] = (prefix, text)
        requests += _resource_entries(prefix, text, container.requests)
        limits += _resource_entries(prefix, text, container.limits)
    return PodSeries(pod, (row, label_text(INFO_LABELS, row)), Columns.of(requests),
                     Columns.of(limits), containers)


def pod_series_cache() -> RenderCache[tuple[str, str], PodRecord, PodSeries]:
    return RenderCache(lambda pod: pod.key, render_pod)


def workspace_families(pods: Sequence[PodRecord], usage: Usage,
                       cache: RenderCache[tuple[str, str], PodRecord, PodSeries]) -> list[Metric]:
    info = FamilyColumns(INFO_LABELS)
    request, limit = FamilyColumns(RESOURCE_LABELS), FamilyColumns(RESOURCE_LABELS)
    cpu, memory = FamilyColumns(CONTAINER_LABELS), FamilyColumns(CONTAINER_LABELS)
    for series in cache.rendered(pods):
        pod = series.pod
        info.add(*series.info, 1)
        request.extend(series.requests)
        limit.extend(series.limits)
        for container_name, used in usage.pods.get(pod.key, {}).items():
            known = series.containers.get(container_name)
            if known is None:  # metrics-server lists a container the spec does not (rare)
                prefix = (pod.namespace, pod.name, container_name)
                known = (prefix, label_text(CONTAINER_LABELS, prefix))
            if used.cpu is not None:
                cpu.add(*known, used.cpu)
            if used.memory is not None:
                memory.add(*known, used.memory)
    families: list[Metric] = [
        info.family(names.WORKSPACE_INFO,
                    "Coder workspace pods: owner, workspace and node (always 1)."),
        request.family(names.WORKSPACE_RESOURCE_REQUEST,
                       "Resource request of a workspace container."),
        limit.family(names.WORKSPACE_RESOURCE_LIMIT, "Resource limit of a workspace container."),
    ]
    # metrics.k8s.io absent (or stale): its families are left out rather than exported empty.
    if usage.taken_at:
        families += [
            cpu.family(names.WORKSPACE_CPU_USAGE_CORES,
                       "CPU used by a workspace container, in cores (metrics.k8s.io)."),
            memory.family(names.WORKSPACE_MEMORY_WORKING_SET_BYTES,
                          "Memory working set of a workspace container, in bytes "
                          "(metrics.k8s.io)."),
        ]
    return families
