"""Settings of the exporter (validated by `agentmeter.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class KubernetesSettings:
    enabled: bool = False
    # None: in-cluster configuration; otherwise the path of a kubeconfig file.
    kubeconfig: str | None = None
    # None: all namespaces.
    namespace: str | None = None
    workspace_selector: str = "com.coder.resource=true"
    # metrics.k8s.io has no watch, so it is polled in the background at this interval.
    metrics_poll_seconds: float = 15.0
    max_pods: int = 20_000
    max_nodes: int = 5_000
    # The collector reports itself unhealthy once the API server has failed for this long.
    failure_grace_seconds: float = 60.0


@dataclass(frozen=True)
class ExporterSettings:
    listen: str = "127.0.0.1:9787"
    # Cap on per-user series; agentmeter_series_dropped says how many were cut.
    max_users: int = 10_000
    # Users with spend in this many trailing days (or with a limit) get per-user series.
    active_window_days: int = 35
    # Time budget of one collector on one scrape.
    collector_timeout_seconds: float = 5.0
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
