"""Control-plane alerts on coderd's API metrics: a failing coderd looks like failing agents."""

from __future__ import annotations

from agentmeter.alert_rules.settings import AlertSettings
from agentmeter.alert_rules.spec import CONTROL_PLANE, Alert, num, percent, series

REQUESTS = "coderd_api_requests_processed_total"
LATENCY_BUCKETS = "coderd_api_request_latencies_seconds_bucket"


def alerts(s: AlertSettings) -> list[Alert]:
    c = s.coderd_selector
    w = s.coderd_window
    not_streaming = f'path!~"{s.coderd_streaming_paths}"'
    return [
        Alert(
            name="AgentmeterCoderdErrorRateHigh",
            expr=f"""
sum by (job) (rate({series(REQUESTS, c, 'code=~"5.."')}[{w}]))
  /
sum by (job) (rate({series(REQUESTS, c)}[{w}]))
  > {num(s.coderd_error_ratio)}
""",
            for_=s.coderd_error_for,
            severity="warning",
            summary="Many coderd API requests fail with a 5xx answer.",
            description=(
                "{{ $value | humanizePercentage }} of coderd API requests answered 5xx over the "
                f"last {w} (threshold {percent(s.coderd_error_ratio)}); workspaces and agents "
                "that depend on coderd are affected."
            ),
            dashboard=CONTROL_PLANE,
            settings=("coderd_selector", "coderd_window", "coderd_error_ratio", "coderd_error_for"),
        ),
        Alert(
            name="AgentmeterCoderdLatencyHigh",
            expr=f"""
histogram_quantile(0.99,
  sum by (job, le) (rate({series(LATENCY_BUCKETS, c, not_streaming)}[{w}]))
) > {num(s.coderd_latency_p99_seconds)}
""",
            for_=s.coderd_latency_for,
            severity="warning",
            summary="coderd API requests are slow.",
            description=(
                "The 99th percentile latency of coderd API requests (long-lived streams excluded) "
                f"is {{{{ $value | humanizeDuration }}}} over the last {w} (threshold "
                f"{num(s.coderd_latency_p99_seconds)}s)."
            ),
            dashboard=CONTROL_PLANE,
            settings=(
                "coderd_selector",
                "coderd_streaming_paths",
                "coderd_window",
                "coderd_latency_p99_seconds",
                "coderd_latency_for",
            ),
        ),
    ]
