"""Lightweight records of pods and nodes, parsed from raw API JSON in the background threads.

The caches keep these instead of the client's V1Pod models: a V1Pod drags managedFields, status
conditions and every env var along, which for 5,000 pods is hundreds of megabytes and seconds of
deserialisation. A record keeps only what the collector publishes, already converted to floats,
so a scrape does no parsing at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.kubernetes.quantities import quantity_or_none

USERNAME_LABEL = "com.coder.user.username"
WORKSPACE_NAME_LABEL = "com.coder.workspace.name"
WORKSPACE_ID_LABEL = "com.coder.workspace.id"
CODER_LABELS = frozenset({USERNAME_LABEL, WORKSPACE_NAME_LABEL, WORKSPACE_ID_LABEL})

TERMINATED_PHASES = frozenset({"Succeeded", "Failed"})

JSON = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Resources:
    """CPU in cores and memory in bytes; None where the container or pod does not set it."""

    cpu: float | None = None
    memory: float | None = None

    def plus(self, other: Resources) -> Resources:
        return Resources(_add(self.cpu, other.cpu), _add(self.memory, other.memory))

    def at_least(self, other: Resources) -> Resources:
        return Resources(_max(self.cpu, other.cpu), _max(self.memory, other.memory))


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    name: str
    requests: Resources
    limits: Resources


@dataclass(frozen=True, slots=True)
class PodRecord:
    namespace: str
    name: str
    node: str | None
    phase: str
    # Only the labels the collector reads (Coder's and the selector's keys), not all of them.
    labels: Mapping[str, str]
    containers: tuple[ContainerRecord, ...]
    # What the pod holds on its node, as the scheduler counts it (init containers, overhead).
    requests: Resources
    limits: Resources
    # (namespace, name), stored rather than derived: scrapes look pods up by it thousands of times.
    key: tuple[str, str] = field(init=False, repr=False, compare=False, default=("", ""))
    terminated: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.namespace, self.name))
        object.__setattr__(self, "terminated", self.phase in TERMINATED_PHASES)


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    capacity: Resources
    allocatable: Resources

    @property
    def key(self) -> str:
        return self.name


def _add(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else a + b


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _resources(quantities: object) -> Resources:
    if not isinstance(quantities, Mapping):
        return Resources()
    return Resources(quantity_or_none(quantities.get("cpu")),
                     quantity_or_none(quantities.get("memory")))


def _container(spec: JSON) -> ContainerRecord:
    resources = spec.get("resources") or {}
    return ContainerRecord(str(spec.get("name", "")), _resources(resources.get("requests")),
                           _resources(resources.get("limits")))


def _pod_footprint(containers: Iterable[ContainerRecord], init_containers: Iterable[JSON],
                   overhead: Resources) -> tuple[Resources, Resources]:
    """Requests and limits of the whole pod, by the scheduler's rule.

    Regular containers and restartable ("sidecar") init containers run together, so they add up;
    a classic init container runs alone beside the sidecars started before it, so the pod needs at
    least that much; the RuntimeClass overhead comes on top. Limits follow the same rule but count
    only the containers that set one, as `kubectl describe node` does.
    """
    requests, limits = Resources(), Resources()
    for container in containers:
        requests, limits = requests.plus(container.requests), limits.plus(container.limits)
    sidecar_requests, sidecar_limits = Resources(), Resources()
    init_requests, init_limits = Resources(), Resources()
    for spec in init_containers:
        init = _container(spec)
        if spec.get("restartPolicy") == "Always":
            sidecar_requests = sidecar_requests.plus(init.requests)
            sidecar_limits = sidecar_limits.plus(init.limits)
            init_requests = init_requests.at_least(sidecar_requests)
            init_limits = init_limits.at_least(sidecar_limits)
        else:
            init_requests = init_requests.at_least(sidecar_requests.plus(init.requests))
            init_limits = init_limits.at_least(sidecar_limits.plus(init.limits))
    requests = requests.plus(sidecar_requests).at_least(init_requests).plus(overhead)
    limits = limits.plus(sidecar_limits).at_least(init_limits)
    # Overhead adds to limits only where a limit exists (an unlimited pod stays unlimited).
    limits = Resources(None if limits.cpu is None else _add(limits.cpu, overhead.cpu),
                       None if limits.memory is None else _add(limits.memory, overhead.memory))
    return requests, limits


def parse_pod(raw: JSON, keep_labels: frozenset[str]) -> PodRecord:
    """A pod record from a Pod object as the API serves it (list item or watch event)."""
    metadata = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    all_labels = metadata.get("labels") or {}
    labels = {k: str(v) for k, v in all_labels.items() if k in keep_labels}
    containers = tuple(_container(c) for c in spec.get("containers") or ())
    requests, limits = _pod_footprint(containers, spec.get("initContainers") or (),
                                      _resources(spec.get("overhead")))
    return PodRecord(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        node=spec.get("nodeName") or None,
        phase=str(status.get("phase", "Unknown")),
        labels=labels,
        containers=containers,
        requests=requests,
        limits=limits,
    )


def parse_node(raw: JSON) -> NodeRecord:
    """A node record from a Node object as the API serves it."""
    metadata = raw.get("metadata") or {}
    status = raw.get("status") or {}
    return NodeRecord(str(metadata.get("name", "")), _resources(status.get("capacity")),
                      _resources(status.get("allocatable")))
