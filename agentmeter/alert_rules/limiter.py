"""Limiter alerts: the gateway is on the path of every agent request and is what enforces limits."""

from __future__ import annotations

from agentmeter.alert_rules.settings import AlertSettings
from agentmeter.alert_rules.spec import CONTROL_PLANE, LIMITS, Alert, Severity, num, percent, series
from ledger import metric_names as m


def alerts(s: AlertSettings) -> list[Alert]:
    lim = s.limiter_selector
    fail_open = f"{m.LIMITER_FAIL_OPEN}_total"
    overhead = f"{m.LIMITER_OVERHEAD_SECONDS}_bucket"
    unavailable = series(f"{m.CODER_TOKEN_LOOKUPS}_total", lim, 'outcome="unavailable"')
    return [
        Alert(
            name="AgentmeterCoderUnreachable",
            expr=f"""
sum by (instance) (increase({unavailable}[{s.coder_unreachable_window}])) > 0
""",
            for_=s.coder_unreachable_for,
            severity="critical",
            summary="The limiter cannot reach Coder to check Coder tokens; agents get 503.",
            description=(
                '{{ $value | printf "%.0f" }} requests to limiter {{ $labels.instance }} in the '
                f"last {s.coder_unreachable_window} carried a Coder token that could not be "
                "checked because Coder did not answer; they were refused with 503. Tokens "
                "checked recently keep working for coder.outage_grace_seconds."
            ),
            settings=("coder_unreachable_window", "coder_unreachable_for"),
        ),
        Alert(
            name="AgentmeterLimiterFailingOpen",
            expr=f"""
sum by (reason) (increase({series(fail_open, lim)}[{s.limiter_fail_open_window}])) > 0
""",
            for_=s.limiter_fail_open_for,
            severity="critical",
            summary="The limiter lets requests through unchecked: spend limits are not enforced.",
            description=(
                '{{ $value | printf "%.0f" }} requests in the last '
                f"{s.limiter_fail_open_window} were forwarded without a limit check "
                "(reason: {{ $labels.reason }}); users can spend past their limits."
            ),
            dashboard=LIMITS,
            settings=("limiter_fail_open_window", "limiter_fail_open_for"),
        ),
        Alert(
            name="AgentmeterUsageSpoolBacklog",
            expr=f"max by (instance) ({series(m.LIMITER_SPOOL_PENDING, lim)}) > 0",
            for_=s.limiter_spool_backlog_for,
            severity="critical",
            summary="Usage records are not reaching the database; spend and limits lag behind.",
            description=(
                "{{ $value }} usage records have waited in the spool of limiter "
                f"{{{{ $labels.instance }}}} for at least {s.limiter_spool_backlog_for}. They are "
                "kept on local disk, but reports and limit checks do not see that spend yet."
            ),
            dashboard=LIMITS,
            settings=("limiter_spool_backlog_for",),
        ),
        _error_rate(s, "warning", s.limiter_error_ratio_warning, s.limiter_error_ratio_warning_for),
        _error_rate(
            s, "critical", s.limiter_error_ratio_critical, s.limiter_error_ratio_critical_for
        ),
        Alert(
            name="AgentmeterLimiterOverheadHigh",
            expr=f"""
histogram_quantile(0.99,
  sum by (job, le) (rate({series(overhead, lim)}[{s.limiter_overhead_window}]))
) > {num(s.limiter_overhead_p99_seconds)}
""",
            for_=s.limiter_overhead_for,
            severity="warning",
            summary="The limiter adds too much latency to agent requests.",
            description=(
                "The 99th percentile of the latency the limiter adds (limit check and recording, "
                "upstream time excluded) is {{ $value | humanizeDuration }} over the last "
                f"{s.limiter_overhead_window} (threshold {num(s.limiter_overhead_p99_seconds)}s)."
            ),
            dashboard=CONTROL_PLANE,
            settings=(
                "limiter_overhead_window",
                "limiter_overhead_p99_seconds",
                "limiter_overhead_for",
            ),
        ),
        Alert(
            name="AgentmeterLimiterDown",
            expr=f"sum by (job) ({series('up', lim)}) == 0\nor\nabsent({series('up', lim)})",
            for_=s.limiter_down_for,
            severity="critical",
            summary="No agentmeter limiter is up; agents cannot reach their LLM providers.",
            description=(
                f"Prometheus has had no healthy target matching {{{lim}}} for "
                f"{s.limiter_down_for}. Agent requests routed through the limiter fail."
            ),
            dashboard=CONTROL_PLANE,
            settings=("limiter_selector", "limiter_down_for"),
        ),
    ]


def _error_rate(s: AlertSettings, severity: Severity, ratio: float, for_: str) -> Alert:
    requests = f"{m.LIMITER_REQUESTS}_total"
    w = s.limiter_error_window
    return Alert(
        name="AgentmeterLimiterErrorRateHigh",
        expr=f"""
sum by (job) (rate({series(requests, s.limiter_selector, 'code=~"5.."')}[{w}]))
  /
sum by (job) (rate({series(requests, s.limiter_selector)}[{w}]))
  > {num(ratio)}
""",
        for_=for_,
        severity=severity,
        summary="Many limiter requests fail with a 5xx answer.",
        description=(
            "{{ $value | humanizePercentage }} of the requests through the limiter answered 5xx "
            f"over the last {w} (threshold {percent(ratio)}): upstream errors (502, 504) or "
            "the limiter itself (500, 503)."
        ),
        dashboard=CONTROL_PLANE,
        settings=(
            "limiter_error_window",
            f"limiter_error_ratio_{severity}",
            f"limiter_error_ratio_{severity}_for",
        ),
    )
