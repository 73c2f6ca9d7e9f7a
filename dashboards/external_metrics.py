"""Metrics the dashboards read that agentmeter does not publish: the one declared list.

A test proves every series name in the dashboards is either in agentmeter's exposition
(`ledger.metric_names.exposed_names()`) or here, so a typo cannot hide in a panel that stays
empty. Histograms are listed by the series the queries name (`_bucket`).
"""

from __future__ import annotations

# coderd (Coder's API server)
CODERD_API_REQUESTS_PROCESSED_TOTAL = "coderd_api_requests_processed_total"
CODERD_API_REQUEST_LATENCIES_SECONDS = "coderd_api_request_latencies_seconds"
# cAdvisor (the kubelet's /metrics/cadvisor)
CONTAINER_CPU_CFS_THROTTLED_PERIODS_TOTAL = "container_cpu_cfs_throttled_periods_total"
CONTAINER_CPU_CFS_PERIODS_TOTAL = "container_cpu_cfs_periods_total"
# node-exporter
NODE_CPU_SECONDS_TOTAL = "node_cpu_seconds_total"

# Series name -> the component that publishes it.
EXTERNAL_METRICS: dict[str, str] = {
    CODERD_API_REQUESTS_PROCESSED_TOTAL: "coderd",
    CODERD_API_REQUEST_LATENCIES_SECONDS + "_bucket": "coderd",
    CONTAINER_CPU_CFS_THROTTLED_PERIODS_TOTAL: "cadvisor",
    CONTAINER_CPU_CFS_PERIODS_TOTAL: "cadvisor",
    NODE_CPU_SECONDS_TOTAL: "node-exporter",
}
