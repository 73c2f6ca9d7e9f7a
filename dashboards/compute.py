"""Compute: what the workspace nodes cost against what the workspaces use.

Idle allocatable capacity is money spent for nothing; limits far above use, or sums of limits
far above a node's capacity (over-provisioning), are where workspaces get throttled or evicted.
"""

from __future__ import annotations

from grafanalib import core

from dashboards import common as c
from dashboards import external_metrics as x
from dashboards.config import UID_COMPUTE, DashboardConfig
from dashboards.layout import Layout, dashboard
from ledger import metric_names as m

WORKSPACE_LEGEND = "{{username}}/{{workspace}}"
CPU = 'resource="cpu"'
MEMORY = 'resource="memory"'


def build(config: DashboardConfig) -> core.Dashboard:
    sel = c.selector(config.exporter_selector)
    ex = config.exporter_selector
    under = config.underused_ratio
    layout = Layout()
    # Attach Coder's user and workspace names to anything labelled by namespace and pod.
    names = f"on (namespace, pod) group_left (username, workspace) {m.WORKSPACE_INFO}{sel}"

    node_cpu = (f"sum by (node) ({m.NODE_CPU_USAGE_CORES}{sel}) / sum by (node) "
                f"({m.NODE_ALLOCATABLE}{c.selector(ex, CPU)})")
    node_mem = (f"sum by (node) ({m.NODE_MEMORY_WORKING_SET_BYTES}{sel}) / sum by (node) "
                f"({m.NODE_ALLOCATABLE}{c.selector(ex, MEMORY)})")

    layout.row("Nodes")
    layout.add(c.timeseries(
        "Node CPU utilization", unit="percentunit", min_value=0,
        description="CPU in use on each node (metrics.k8s.io) as a share of its allocatable "
        "CPU.",
        targets=[c.PromQuery(node_cpu, legend="{{node}}")],
    ), w=12, h=8)
    layout.add(c.timeseries(
        "Node memory utilization", unit="percentunit", min_value=0,
        description="Memory working set on each node as a share of its allocatable memory.",
        targets=[c.PromQuery(node_mem, legend="{{node}}")],
    ), w=12, h=8)
    layout.add(c.stat(
        "Idle allocatable CPU", unit="short", decimals=1,
        description="Allocatable CPU cores not in use right now, summed over the nodes: "
        "capacity that is paid for and does nothing.",
        targets=[c.PromQuery(
            f"sum({m.NODE_ALLOCATABLE}{c.selector(ex, CPU)}) - "
            f"sum({m.NODE_CPU_USAGE_CORES}{sel})", instant=True)],
    ), w=6, h=8)
    layout.add(c.stat(
        "Idle allocatable memory", unit="bytes", decimals=1,
        description="Allocatable memory not in the working set of anything, summed over the "
        "nodes.",
        targets=[c.PromQuery(
            f"sum({m.NODE_ALLOCATABLE}{c.selector(ex, MEMORY)}) - "
            f"sum({m.NODE_MEMORY_WORKING_SET_BYTES}{sel})", instant=True)],
    ), w=6, h=8)
    layout.add(c.table(
        "Under-used nodes", unit="percentunit", sort_by="CPU used",
        thresholds=c.steps(c.RED, (under, c.GREEN)),
        description=f"Nodes whose average CPU utilization over the dashboard range is below "
        f"{under:.0%} of allocatable: candidates for a smaller node pool.",
        targets=c.refs(
            c.PromQuery(f"avg_over_time(({node_cpu})[$__range:]) < {under}", instant=True,
                        table=True),
            c.PromQuery(f"avg_over_time(({node_mem})[$__range:]) and on (node) "
                        f"(avg_over_time(({node_cpu})[$__range:]) < {under})",
                        instant=True, table=True),
        ),
        transformations=c.merge_and_rename(
            {"node": "Node", "Value #A": "CPU used", "Value #B": "Memory used"}),
        columns=[c.column("CPU used", cell={"type": "color-text"})],
    ), w=12, h=8)
    layout.add(c.timeseries(
        "Provisioned CPU limits per node", unit="percentunit", threshold_line=True,
        thresholds=c.steps(c.GREEN, (1.0, c.RED)),
        description="Sum of the CPU limits of the pods on each node divided by its allocatable "
        "CPU. The red line is 1:1; above it the node is over-committed and workspaces compete "
        "for CPU when they are busy at the same time.",
        targets=[c.PromQuery(
            f"{m.NODE_RESOURCE_LIMITS_RATIO}{c.selector(ex, CPU)}",
            legend="{{node}}")],
    ), w=12, h=8)
    layout.add(c.timeseries(
        "Provisioned memory limits per node", unit="percentunit", threshold_line=True,
        thresholds=c.steps(c.GREEN, (1.0, c.RED)),
        description="Sum of the memory limits of the pods on each node divided by its "
        "allocatable memory. The red line is 1:1; above it pods can be OOM-killed when they "
        "grow at the same time.",
        targets=[c.PromQuery(
            f"{m.NODE_RESOURCE_LIMITS_RATIO}{c.selector(ex, MEMORY)}",
            legend="{{node}}")],
    ), w=12, h=8)
    node_exporter = c.selector(config.node_exporter_selector, 'mode="idle"')
    layout.add(c.timeseries(
        "Host CPU busy (node-exporter)", unit="percentunit", min_value=0,
        description="Share of time the host's CPUs were not idle, from node-exporter (includes "
        "system daemons outside Kubernetes). Empty when node-exporter is not scraped.",
        targets=[c.PromQuery(
            f"1 - avg by (instance) (rate({x.NODE_CPU_SECONDS_TOTAL}{node_exporter}"
            "[$__rate_interval]))", legend="{{instance}}")],
    ), w=12, h=8)

    layout.row("Workspaces")

    def per_pod(series: str) -> str:
        return f"sum by (namespace, pod) ({series})"

    cpu_limit_used = (
        f"({per_pod(f'{m.WORKSPACE_CPU_USAGE_CORES}{sel}')} / "
        f"{per_pod(m.WORKSPACE_RESOURCE_LIMIT + c.selector(ex, CPU))}) * {names}")
    mem_limit_used = (
        f"({per_pod(f'{m.WORKSPACE_MEMORY_WORKING_SET_BYTES}{sel}')} / "
        f"{per_pod(m.WORKSPACE_RESOURCE_LIMIT + c.selector(ex, MEMORY))}) * "
        f"{names}")
    layout.add(c.timeseries(
        "Workspace CPU use of limit", unit="percentunit", min_value=0,
        thresholds=c.steps(c.GREEN, (1.0, c.RED)), threshold_line=True,
        description="CPU in use by each workspace as a share of its CPU limit, labelled "
        "user/workspace. Near 100% the workspace is throttled.",
        targets=[c.PromQuery(cpu_limit_used, legend=WORKSPACE_LEGEND)],
    ), w=12, h=9)
    layout.add(c.timeseries(
        "Workspace memory use of limit", unit="percentunit", min_value=0,
        thresholds=c.steps(c.GREEN, (1.0, c.RED)), threshold_line=True,
        description="Memory working set of each workspace as a share of its memory limit. At "
        "100% the workspace's processes are OOM-killed.",
        targets=[c.PromQuery(mem_limit_used, legend=WORKSPACE_LEGEND)],
    ), w=12, h=9)
    cadvisor = c.selector(config.cadvisor_selector, 'container!=""')
    throttled = (
        f"(sum by (namespace, pod) (rate({x.CONTAINER_CPU_CFS_THROTTLED_PERIODS_TOTAL}{cadvisor}"
        "[$__rate_interval])) / sum by (namespace, pod) "
        f"(rate({x.CONTAINER_CPU_CFS_PERIODS_TOTAL}{cadvisor}[$__rate_interval]))) * {names}")
    layout.add(c.timeseries(
        "Workspace CPU throttling", unit="percentunit", min_value=0,
        description="Share of CFS periods in which the workspace was throttled by its CPU "
        "limit (cAdvisor). Sustained throttling slows builds and agents: raise the limit or "
        "move the workload.",
        targets=[c.PromQuery(throttled, legend=WORKSPACE_LEGEND)],
    ), w=24, h=8)
    layout.add(c.table(
        "Top workspaces by CPU", unit="short", sort_by="CPU cores",
        description=f"The {config.top_n} workspaces using the most CPU now, with their node, "
        "memory working set and limits.",
        targets=c.refs(
            c.PromQuery(
                f"topk({config.top_n}, {per_pod(f'{m.WORKSPACE_CPU_USAGE_CORES}{sel}')}) "
                f"* on (namespace, pod) group_left (username, workspace, node) "
                f"{m.WORKSPACE_INFO}{sel}", instant=True, table=True),
            c.PromQuery(per_pod(f"{m.WORKSPACE_MEMORY_WORKING_SET_BYTES}{sel}"), instant=True,
                        table=True),
            c.PromQuery(per_pod(m.WORKSPACE_RESOURCE_LIMIT + c.selector(ex, CPU)),
                        instant=True, table=True),
        ),
        transformations=[
            *c.merge_and_rename({
                "username": "User", "workspace": "Workspace", "node": "Node",
                "namespace": "Namespace", "pod": "Pod", "Value #A": "CPU cores",
                "Value #B": "Memory working set", "Value #C": "CPU limit",
            }),
            # The merge keeps every pod of queries B and C; only the top ones have a user.
            {"id": "filterByValue", "options": {
                "type": "include", "match": "all",
                "filters": [{"fieldName": "CPU cores", "config": {"id": "isNotNull",
                                                                  "options": {}}}],
            }},
        ],
        columns=[c.column("Memory working set", unit="bytes")],
    ), w=12, h=9)
    idle_cpu = (
        f"avg_over_time(({per_pod(f'{m.WORKSPACE_CPU_USAGE_CORES}{sel}')} / "
        f"{per_pod(m.WORKSPACE_RESOURCE_REQUEST + c.selector(ex, CPU))})"
        f"[$__range:]) < {under}")
    layout.add(c.table(
        "Under-used workspaces", unit="percentunit", sort_by="CPU used of request",
        thresholds=c.steps(c.RED, (under, c.GREEN)),
        description=f"Workspaces whose average CPU use over the dashboard range is below "
        f"{under:.0%} of the CPU they request: reserved capacity nobody uses. Stopped "
        "workspaces have no pod and are not listed.",
        targets=[c.PromQuery(f"({idle_cpu}) * {names}", instant=True, table=True)],
        transformations=c.merge_and_rename({
            "username": "User", "workspace": "Workspace", "namespace": "Namespace",
            "pod": "Pod", "Value": "CPU used of request",
        }),
    ), w=12, h=9)

    return dashboard(
        uid=UID_COMPUTE, title="agentmeter / Compute", config=config, time_from="now-24h",
        description="Node and workspace CPU and memory: utilization, idle capacity, "
        "throttling and over-provisioning.",
        variables=[c.prometheus_variable()], layout=layout,
    )
