"""The shape every alert shares: labels, the three mandatory annotations and the dashboard link.

Area modules describe alerts with `Alert`; `to_rule` turns one into the plain Prometheus rule
mapping, so the style guide (severity, summary, description, runbook_url) is enforced in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agentmeter.alert_rules.settings import AlertSettings

Severity = Literal["critical", "warning", "info"]

# Stable uids of the dashboards (owned by `dashboards/`).
USAGE = "agentmeter-usage"
USER_DETAIL = "agentmeter-user-detail"
LIMITS = "agentmeter-limits"
COMPUTE = "agentmeter-compute"
CONTROL_PLANE = "agentmeter-control-plane"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: Severity
    summary: str
    description: str
    # Dashboard uid, and the query string (Go template allowed) that opens it on the right subject.
    dashboard: str | None = None
    dashboard_query: str = ""
    # Settings keys this alert's threshold and `for` come from (its runbook must document them).
    settings: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


def to_rule(alert: Alert, settings: AlertSettings) -> dict[str, Any]:
    annotations = {
        "summary": alert.summary,
        "description": alert.description,
        "runbook_url": f"{settings.runbook_base_url.rstrip('/')}/{alert.name}.md",
    }
    if alert.dashboard is not None:
        url = f"{settings.grafana_base_url.rstrip('/')}/d/{alert.dashboard}"
        annotations["dashboard_url"] = url + alert.dashboard_query
    return {
        "alert": alert.name,
        "expr": alert.expr.strip() + "\n",
        "for": alert.for_,
        "labels": {**alert.labels, "severity": alert.severity},
        "annotations": annotations,
    }


def num(value: float) -> str:
    """A threshold as PromQL and prose read it: 0.8, 1, 0.25."""
    return f"{value:g}"


def percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def query_value(promql: str, pipeline: str) -> str:
    """A Go template that runs an instant query and prints its first value through `pipeline`."""
    return "{{ with query `" + promql + "` }}{{ . | first | value | " + pipeline + " }}{{ end }}"


def series(metric: str, *matchers: str) -> str:
    """`metric{a, b}`: the configured selector plus the alert's own matchers."""
    return metric + "{" + ", ".join(m for m in matchers if m) + "}"


def label_value(promql_format: str, label: str, pipeline: str, empty: str = "") -> str:
    """Like `query_value`, with `%q` in the query replaced by the alert's quoted `label`.

    `empty` is printed when the query returns nothing (e.g. a counter that was never exported).
    """
    otherwise = "{{ else }}" + empty if empty else ""
    return (
        "{{ with printf `" + promql_format + "` $labels." + label + " | query }}"
        "{{ . | first | " + pipeline + " }}" + otherwise + "{{ end }}"
    )
