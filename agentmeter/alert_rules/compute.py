"""Compute alerts: nodes, and workspaces labelled with their Coder user and workspace."""

from __future__ import annotations

from agentmeter.alert_rules.settings import AlertSettings
from agentmeter.alert_rules.spec import COMPUTE, Alert, num, percent, series
from ledger import metric_names as m

_POD = "namespace, pod"
_CONTAINER = "namespace, pod, container"
_WHO = "{{ $labels.user }}'s workspace {{ $labels.workspace }}"


def _is(resource: str) -> str:
    return f'resource="{resource}"'


def alerts(s: AlertSettings) -> list[Alert]:
    e = s.exporter_selector
    # Workspace series carry pod names; the info series maps a pod to its Coder user and workspace.
    owner = (
        f"on ({_POD}) group_left (user, workspace)\n"
        f"label_replace(max by ({_POD}, username, workspace) ({series(m.WORKSPACE_INFO, e)}), "
        '"user", "$1", "username", "(.*)")'
    )

    def per_container(metric: str, resource: str) -> str:
        return (
            f"max by ({_CONTAINER}) ({series(metric, e)})\n"
            f"    / on ({_CONTAINER})\n"
            f"  (max by ({_CONTAINER}) "
            f"({series(m.WORKSPACE_RESOURCE_LIMIT, e, _is(resource))}) > 0)"
        )

    def node_usage(metric: str, resource: str) -> str:
        return (
            f"max by (node) ({series(metric, e)})\n"
            f"  / on (node)\n"
            f"max by (node) ({series(m.NODE_ALLOCATABLE, e, _is(resource))})"
        )

    def idle(usage: str, resource: str) -> str:
        request = series(m.WORKSPACE_RESOURCE_REQUEST, e, _is(resource))
        return (
            "  label_replace(\n"
            f"    sum by ({_POD}) (avg_over_time({series(usage, e)}"
            f"[{s.workspace_underutilized_window}]))\n"
            f"      / on ({_POD})\n"
            f"    (sum by ({_POD}) ({request}) > 0)\n"
            f"      < {num(s.workspace_underutilized_ratio)},\n"
            f'    "resource", "{resource}", "", "")'
        )

    def cadvisor_rate(metric: str) -> str:
        selected = series(metric, s.cadvisor_selector, 'container!=""')
        return f"rate({selected}[{s.workspace_throttle_window}])"

    throttled = cadvisor_rate("container_cpu_cfs_throttled_periods_total")
    periods = cadvisor_rate("container_cpu_cfs_periods_total")
    return [
        Alert(
            name="AgentmeterNodeCPUHigh",
            expr=f"{node_usage(m.NODE_CPU_USAGE_CORES, 'cpu')}\n  > {num(s.node_cpu_ratio)}",
            for_=s.node_cpu_for,
            severity="warning",
            summary="A node is using most of its allocatable CPU.",
            description=(
                "Node {{ $labels.node }} uses {{ $value | humanizePercentage }} of its "
                f"allocatable CPU (threshold {percent(s.node_cpu_ratio)}); its workspaces slow "
                "down."
            ),
            dashboard=COMPUTE,
            settings=("node_cpu_ratio", "node_cpu_for"),
        ),
        Alert(
            name="AgentmeterNodeMemoryHigh",
            expr=(
                f"{node_usage(m.NODE_MEMORY_WORKING_SET_BYTES, 'memory')}\n"
                f"  > {num(s.node_memory_ratio)}"
            ),
            for_=s.node_memory_for,
            severity="warning",
            summary="A node is using most of its allocatable memory.",
            description=(
                "Node {{ $labels.node }} uses {{ $value | humanizePercentage }} of its "
                f"allocatable memory (threshold {percent(s.node_memory_ratio)}); workspaces on "
                "it risk eviction or OOM kills."
            ),
            dashboard=COMPUTE,
            settings=("node_memory_ratio", "node_memory_for"),
        ),
        Alert(
            name="AgentmeterNodeOvercommitted",
            expr=(
                f"max by (node, resource) ({series(m.NODE_RESOURCE_LIMITS_RATIO, e)})\n"
                f"  > {num(s.node_overcommit_ratio)}"
            ),
            for_=s.node_overcommit_for,
            severity="warning",
            summary="The limits of a node's pods add up to more than it can allocate.",
            description=(
                "The {{ $labels.resource }} limits of the pods on node {{ $labels.node }} add up "
                "to {{ $value | humanizePercentage }} of its allocatable {{ $labels.resource }} "
                f"(threshold {percent(s.node_overcommit_ratio)}): its workspaces cannot all use "
                "what they were promised at once."
            ),
            dashboard=COMPUTE,
            settings=("node_overcommit_ratio", "node_overcommit_for"),
        ),
        Alert(
            name="AgentmeterWorkspaceMemoryNearLimit",
            expr=(
                f"(\n  {per_container(m.WORKSPACE_MEMORY_WORKING_SET_BYTES, 'memory')}\n"
                f"  > {num(s.workspace_memory_ratio)}\n)\n* {owner}"
            ),
            for_=s.workspace_memory_for,
            severity="warning",
            summary="A workspace is close to its memory limit and risks an OOM kill.",
            description=(
                f"Container {{{{ $labels.container }}}} of {_WHO} uses "
                "{{ $value | humanizePercentage }} of its memory limit (threshold "
                f"{percent(s.workspace_memory_ratio)}); the kernel kills it at 100%."
            ),
            dashboard=COMPUTE,
            dashboard_query="?var-user={{ $labels.user }}",
            settings=("workspace_memory_ratio", "workspace_memory_for"),
        ),
        Alert(
            name="AgentmeterWorkspaceCPUAtLimit",
            expr=(
                f"(\n  {per_container(m.WORKSPACE_CPU_USAGE_CORES, 'cpu')}\n"
                f"  > {num(s.workspace_cpu_ratio)}\n)\n* {owner}"
            ),
            for_=s.workspace_cpu_for,
            severity="info",
            summary="A workspace is using all the CPU its limit allows.",
            description=(
                f"Container {{{{ $labels.container }}}} of {_WHO} uses "
                "{{ $value | humanizePercentage }} of its CPU limit (threshold "
                f"{percent(s.workspace_cpu_ratio)}); builds and agents in it are CPU-bound."
            ),
            dashboard=COMPUTE,
            dashboard_query="?var-user={{ $labels.user }}",
            settings=("workspace_cpu_ratio", "workspace_cpu_for"),
        ),
        Alert(
            name="AgentmeterWorkspaceCPUThrottled",
            expr=(
                f"(\n  sum by ({_CONTAINER}) ({throttled})\n    /\n"
                f"  sum by ({_CONTAINER}) ({periods})\n"
                f"  > {num(s.workspace_throttle_ratio)}\n)\n* {owner}"
            ),
            for_=s.workspace_throttle_for,
            severity="info",
            summary="A workspace is being CPU-throttled.",
            description=(
                f"Container {{{{ $labels.container }}}} of {_WHO} was throttled in "
                "{{ $value | humanizePercentage }} of its CPU periods over the last "
                f"{s.workspace_throttle_window} (threshold {percent(s.workspace_throttle_ratio)})."
            ),
            dashboard=COMPUTE,
            dashboard_query="?var-user={{ $labels.user }}",
            settings=(
                "cadvisor_selector",
                "workspace_throttle_window",
                "workspace_throttle_ratio",
                "workspace_throttle_for",
            ),
        ),
        Alert(
            name="AgentmeterWorkspaceUnderutilized",
            expr=(
                f"(\n{idle(m.WORKSPACE_CPU_USAGE_CORES, 'cpu')}\nor\n"
                f"{idle(m.WORKSPACE_MEMORY_WORKING_SET_BYTES, 'memory')}\n)\n* {owner}"
            ),
            for_=s.workspace_underutilized_for,
            severity="info",
            summary="A workspace has used a small share of what it requests for a long time.",
            description=(
                f"{_WHO} has used {{{{ $value | humanizePercentage }}}} "
                "of its {{ $labels.resource }} request over the last "
                f"{s.workspace_underutilized_window}, and below "
                f"{percent(s.workspace_underutilized_ratio)} for {s.workspace_underutilized_for}; "
                "the capacity it reserves could go to others."
            ),
            dashboard=COMPUTE,
            dashboard_query="?var-user={{ $labels.user }}",
            settings=(
                "workspace_underutilized_ratio",
                "workspace_underutilized_window",
                "workspace_underutilized_for",
            ),
        ),
    ]
