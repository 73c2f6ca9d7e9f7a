"""The one place for the dashboards' selectors, thresholds and identities.

Like the monitoring mixins' `_config` block: every query is built from these values, so pointing
the dashboards at differently named Prometheus jobs (or other coderd/cAdvisor labels) is one
change here, never a search-and-replace through the queries.
"""

from __future__ import annotations

from dataclasses import dataclass

# Stable dashboard uids: links between dashboards and bookmarks rely on them.
UID_USAGE = "agentmeter-usage"
UID_USER_DETAIL = "agentmeter-user-detail"
UID_LIMITS = "agentmeter-limits"
UID_COMPUTE = "agentmeter-compute"
UID_CONTROL_PLANE = "agentmeter-control-plane"


@dataclass(frozen=True)
class DashboardConfig:
    # Prometheus job names of the two agentmeter processes (the alerts assume the same defaults).
    limiter_job: str = "agentmeter-limiter"
    exporter_job: str = "agentmeter-exporter"
    # Extra label matchers (without braces) for series agentmeter does not publish. Empty:
    # coderd's metric names are specific enough, and cAdvisor series are joined with
    # agentmeter_workspace_info, which scopes them to workspaces.
    coderd_selector: str = ""
    cadvisor_selector: str = ""
    node_exporter_selector: str = ""
    # LogQL stream selector of coderd's logs for the optional Loki panel.
    coderd_loki_selector: str = '{app="coder"}'
    # A user is "near" the limit from this utilization on (the progress bar turns orange).
    near_limit_ratio: float = 0.8
    # Below this average utilization over the range a node or workspace counts as under-used.
    underused_ratio: float = 0.2
    # The last successful prune turns red this long ago (the AgentmeterLedgerPruneStale alert's
    # default ledger_prune_stale_after), orange at half of it.
    prune_stale_seconds: int = 2 * 86_400
    # Rows in the "top workspaces" table.
    top_n: int = 10
    tags: tuple[str, ...] = ("agentmeter",)

    @property
    def limiter_selector(self) -> str:
        return f'job="{self.limiter_job}"'

    @property
    def exporter_selector(self) -> str:
        return f'job="{self.exporter_job}"'

    @property
    def agentmeter_selector(self) -> str:
        """Series both processes publish (log events)."""
        return f'job=~"{self.limiter_job}|{self.exporter_job}"'
