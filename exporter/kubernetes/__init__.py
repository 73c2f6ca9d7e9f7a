"""Kubernetes side of the exporter: Coder workspace pods and nodes, from list+watch caches."""

from exporter.kubernetes.client import KubernetesConfigError
from exporter.kubernetes.collector import KubernetesCollector

__all__ = ["KubernetesCollector", "KubernetesConfigError"]
