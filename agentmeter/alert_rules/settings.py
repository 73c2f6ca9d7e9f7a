"""The one config block of the alert rules: selectors, links, thresholds and `for` durations.

Every query reads its selector and threshold from here, so changing a job name or a threshold is
one edit (or one `--set key=value` of `python -m agentmeter.alert_rules`) and the runbooks name
these keys when they document a threshold.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class AlertSettingsError(ValueError):
    """An unknown key or a value of the wrong type in alert settings overrides."""


@dataclass(frozen=True)
class AlertSettings:
    # Selectors (PromQL label matchers without braces).
    limiter_selector: str = 'job="agentmeter-limiter"'
    exporter_selector: str = 'job="agentmeter-exporter"'
    # cAdvisor as kube-prometheus scrapes it (through the kubelet).
    cadvisor_selector: str = 'job="kubelet", metrics_path="/metrics/cadvisor"'
    coderd_selector: str = 'job="coderd"'
    # coderd routes whose "latency" is the life of a long-lived stream (websockets, watches).
    coderd_streaming_paths: str = ".*/(watch|watch-ws|coordinate|pty|logs|follow|rpc)(/.*)?"

    # Links written into every alert.
    runbook_base_url: str = "https://github.com/agentmeter/agentmeter/blob/main/alerts/runbooks"
    grafana_base_url: str = "http://grafana.example.com"

    # Spend.
    spend_near_limit_ratio: float = 0.8
    spend_near_limit_for: str = "5m"
    spend_limit_reached_for: str = "1m"
    spend_forecast_window: str = "6h"
    spend_forecast_for: str = "30m"

    # Pricing.
    models_without_pricing_for: str = "15m"
    unpriced_usage_window: str = "1h"
    unpriced_usage_for: str = "5m"

    # Limiter.
    limiter_fail_open_window: str = "5m"
    limiter_fail_open_for: str = "5m"
    limiter_spool_backlog_for: str = "10m"
    limiter_error_window: str = "5m"
    limiter_error_ratio_warning: float = 0.05
    limiter_error_ratio_warning_for: str = "15m"
    limiter_error_ratio_critical: float = 0.25
    limiter_error_ratio_critical_for: str = "5m"
    limiter_overhead_window: str = "5m"
    limiter_overhead_p99_seconds: float = 0.1
    limiter_overhead_for: str = "15m"
    limiter_down_for: str = "5m"
    # Coder token lookups the limiter could not answer (Coder unreachable): agents get 503.
    coder_unreachable_window: str = "5m"
    coder_unreachable_for: str = "5m"

    # Exporter.
    exporter_down_for: str = "5m"
    collector_failing_for: str = "15m"
    coder_sync_failing_for: str = "30m"
    # Message retention: the longest a set retention may go without a successful prune.
    ledger_prune_stale_after: str = "2d"
    ledger_prune_stale_for: str = "15m"

    # Compute.
    node_cpu_ratio: float = 0.9
    node_cpu_for: str = "15m"
    node_memory_ratio: float = 0.9
    node_memory_for: str = "15m"
    node_overcommit_ratio: float = 1.0
    node_overcommit_for: str = "1h"
    workspace_memory_ratio: float = 0.9
    workspace_memory_for: str = "15m"
    workspace_cpu_ratio: float = 0.9
    workspace_cpu_for: str = "15m"
    workspace_throttle_window: str = "5m"
    workspace_throttle_ratio: float = 0.25
    workspace_throttle_for: str = "15m"
    workspace_underutilized_ratio: float = 0.1
    # Averaged over the window, and low for the whole of `for`: a day of idling.
    workspace_underutilized_window: str = "1h"
    workspace_underutilized_for: str = "1d"

    # Control plane (coderd).
    coderd_window: str = "5m"
    coderd_error_ratio: float = 0.05
    coderd_error_for: str = "15m"
    coderd_latency_p99_seconds: float = 2.0
    coderd_latency_for: str = "15m"

    def with_overrides(self, overrides: Mapping[str, Any]) -> AlertSettings:
        """A copy with some keys replaced; unknown keys and wrong types are refused by name."""
        hints = typing.get_type_hints(AlertSettings)
        known = {f.name for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in known:
                raise AlertSettingsError(f"unknown alert setting {key!r}")
            changes[key] = _coerce(key, hints[key], value)
        return dataclasses.replace(self, **changes)


def _coerce(key: str, hint: type, value: Any) -> Any:
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, str):
        return value
    raise AlertSettingsError(f"alert setting {key!r} must be a {hint.__name__}, got {value!r}")
