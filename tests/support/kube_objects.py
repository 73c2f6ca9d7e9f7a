"""Real-shaped Kubernetes objects (Pod, Node, Status) for the fake API and the tests."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

JSON = dict[str, Any]
CODER_LABELS = ("com.coder.user.username", "com.coder.workspace.name", "com.coder.workspace.id")


def container(name: str = "dev", *, requests: Mapping[str, str] | None = None,
              limits: Mapping[str, str] | None = None, **extra: Any) -> JSON:
    resources: JSON = {}
    if requests:
        resources["requests"] = dict(requests)
    if limits:
        resources["limits"] = dict(limits)
    return {"name": name, "image": "codercom/enterprise-base:ubuntu", "resources": resources,
            **extra}


def pod(name: str, *, namespace: str = "coder", node: str | None = "node-a",
        phase: str = "Running", labels: Mapping[str, str] | None = None,
        containers: list[JSON] | None = None, init_containers: list[JSON] | None = None,
        overhead: Mapping[str, str] | None = None) -> JSON:
    spec: JSON = {"containers": containers if containers is not None else [container()]}
    if node is not None:
        spec["nodeName"] = node
    if init_containers:
        spec["initContainers"] = init_containers
    if overhead:
        spec["overhead"] = dict(overhead)
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {}),
                     "uid": str(uuid.uuid4()), "creationTimestamp": "2026-01-05T10:00:00Z"},
        "spec": spec,
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def workspace_pod(username: str, workspace: str, *, workspace_id: str | None = None,
                  namespace: str = "coder", **kwargs: Any) -> JSON:
    """A pod as Coder's Kubernetes template creates it, with Coder's labels."""
    labels = {"com.coder.resource": "true", "com.coder.user.username": username,
              "com.coder.workspace.name": workspace,
              "com.coder.workspace.id": workspace_id or str(uuid.uuid5(uuid.NAMESPACE_DNS,
                                                                       username + workspace)),
              "app.kubernetes.io/name": "coder-workspace"}
    labels.update(kwargs.pop("labels", None) or {})
    return pod(f"coder-{username}-{workspace}"[:63], namespace=namespace, labels=labels,
               **kwargs)


def node(name: str, *, cpu: str = "8", memory: str = "32Gi",
         allocatable_cpu: str | None = None, allocatable_memory: str | None = None) -> JSON:
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
                     "uid": str(uuid.uuid4())},
        "spec": {},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": allocatable_cpu or cpu, "memory": allocatable_memory or memory,
                            "pods": "110"},
        },
    }


def status(code: int, reason: str, message: str) -> JSON:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


# -- selectors ------------------------------------------------------------------------------------
