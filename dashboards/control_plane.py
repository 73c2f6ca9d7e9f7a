"""Control plane: is the limiter healthy, and is coderd?

Errors and warnings first (log events by severity), then the API answers (status codes) and how
long they take (p50/p95/p99), for agentmeter's limiter and for coderd side by side, then where
the limiter's key checks were answered (its check cache or the ledger), then how far back the
ledger's raw messages go and whether pruning keeps up with the retention.
"""

from __future__ import annotations

from grafanalib import core

from dashboards import common as c
from dashboards import external_metrics as x
from dashboards.config import UID_CONTROL_PLANE, DashboardConfig
from dashboards.layout import Layout, dashboard
from ledger import metric_names as m

CODERD_REQUESTS = x.CODERD_API_REQUESTS_PROCESSED_TOTAL
CODERD_LATENCY = x.CODERD_API_REQUEST_LATENCIES_SECONDS
WARNING_OR_WORSE = 'level=~"warning|error|critical"'


def build(config: DashboardConfig) -> core.Dashboard:
    both = c.selector(config.agentmeter_selector)
    lim = c.selector(config.limiter_selector)
    coderd = c.selector(config.coderd_selector)
    coderd_5xx = c.selector(config.coderd_selector, 'code=~"5.."')
    limiter_5xx = c.selector(config.limiter_selector, 'code=~"5.."')
    from_cache = c.selector(config.limiter_selector, 'source="cache"')
    layout = Layout()

    layout.row("Log events")
    layout.add(c.timeseries(
        "agentmeter log events by severity", unit="short", stacked=True,
        axis_label="events per second",
        description="Log records written by the limiter and the exporter, by level. Warnings "
        "include fail-open limit checks and spooled usage records; errors need a look.",
        targets=[c.PromQuery(
            f"sum by (level) (rate({c.total(m.LOG_EVENTS)}{both}[$__rate_interval]))",
            legend="{{level}}")],
        overrides=[
            _colour("error", c.RED), _colour("critical", "dark-red"),
            _colour("warning", c.ORANGE),
        ],
    ), w=16, h=8)
    layout.add(c.table(
        "Warnings and errors in range", unit="short", sort_by="Events",
        description="Log events at warning level or above over the dashboard range, by "
        "component and level.",
        targets=[c.PromQuery(
            f"sum by (component, level) (increase({c.total(m.LOG_EVENTS)}"
            f"{c.selector(config.agentmeter_selector, WARNING_OR_WORSE)}"
            "[$__range]))", instant=True, table=True)],
        transformations=c.merge_and_rename(
            {"component": "Component", "level": "Level", "Value": "Events"}),
    ), w=8, h=8)

    layout.row("API status codes")
    layout.add(c.timeseries(
        "Limiter responses by status code", unit="reqps", stacked=True,
        description="Responses of the limiter per second by HTTP status code: 409 (or "
        "limiter.limit_exceeded_status) means a spend limit was reached, 502/504 an upstream "
        "provider failed. Refusals are counted apart in Limits.",
        targets=[c.PromQuery(
            f"sum by (code) (rate({c.total(m.LIMITER_REQUESTS)}{lim}[$__rate_interval]))",
            legend="{{code}}")],
    ), w=12, h=8)
    layout.add(c.timeseries(
        "coderd API responses by status code", unit="reqps", stacked=True,
        description="coderd API responses per second by HTTP status code "
        "(coderd_api_requests_processed_total).",
        targets=[c.PromQuery(
            f"sum by (code) (rate({CODERD_REQUESTS}{coderd}[$__rate_interval]))",
            legend="{{code}}")],
    ), w=12, h=8)
    layout.add(c.stat(
        "Limiter 5xx ratio", unit="percentunit", decimals=2,
        thresholds=c.steps(c.GREEN, (0.01, c.ORANGE), (0.05, c.RED)),
        description="Share of limiter responses that were server errors over the range.",
        targets=[c.PromQuery(
            f"(sum(increase({c.total(m.LIMITER_REQUESTS)}{limiter_5xx}[$__range])) or vector(0))"
            f" / sum(increase({c.total(m.LIMITER_REQUESTS)}{lim}[$__range]))", instant=True)],
    ), w=12, h=4)
    layout.add(c.stat(
        "coderd 5xx ratio", unit="percentunit", decimals=2,
        thresholds=c.steps(c.GREEN, (0.01, c.ORANGE), (0.05, c.RED)),
        description="Share of coderd API responses that were server errors over the range.",
        targets=[c.PromQuery(
            f"(sum(increase({CODERD_REQUESTS}{coderd_5xx}[$__range])) or vector(0))"
            f" / sum(increase({CODERD_REQUESTS}{coderd}[$__range]))", instant=True)],
    ), w=12, h=4)

    layout.row("HTTP latency")
    layout.add(c.timeseries(
        "Limiter request duration", unit="s",
        description="p50, p95 and p99 of the limiter's request duration, including the "
        "upstream provider's answer (streams last as long as the generation).",
        targets=c.quantiles(m.LIMITER_REQUEST_DURATION_SECONDS, lim),
    ), w=8, h=8)
    layout.add(c.timeseries(
        "Limiter overhead", unit="s",
        description="p50, p95 and p99 of the time the limiter itself adds (authentication, limit "
        "check, recording), excluding the upstream provider.",
        targets=c.quantiles(m.LIMITER_OVERHEAD_SECONDS, lim),
    ), w=8, h=8)
    layout.add(c.timeseries(
        "coderd API latency", unit="s",
        description="p50, p95 and p99 of coderd's API request latency "
        "(coderd_api_request_latencies_seconds).",
        targets=c.quantiles(CODERD_LATENCY, coderd),
    ), w=8, h=8)

    layout.row("Limit checks")
    checks = c.total(m.LIMITER_KEY_CHECKS)
    layout.add(c.timeseries(
        "Key checks by source", unit="reqps", stacked=True,
        description="The limiter's per-request key and limit checks: answered from its check "
        "cache (kept current by the ledger's change notifications) or by a ledger query. "
        "Checks that all go to the ledger mean the cache is off (check_cache_seconds: 0, "
        "SQLite) or its LISTEN connection is down.",
        targets=[c.PromQuery(f"sum by (source) (rate({checks}{lim}[$__rate_interval]))",
                             legend="{{source}}")],
    ), w=16, h=6)
    layout.add(c.stat(
        "Checks answered from the cache", unit="percentunit", decimals=1, no_value="-",
        description="Share of key checks over the dashboard range that needed no ledger "
        "query.",
        targets=[c.PromQuery(
            f"(sum(increase({checks}{from_cache}[$__range])) or vector(0))"
            f" / sum(increase({checks}{lim}[$__range]))", instant=True)],
    ), w=8, h=6)

    _retention(layout, config)

    layout.row("coderd logs (Loki, optional)", collapsed=True)
    layout.add(c.logs(
        "coderd warnings and errors",
        description="coderd's log lines at warning level or above, from the Loki datasource "
        "chosen in the 'loki' variable. Leave the row folded when there is no Loki.",
        targets=[c.LokiQuery(
            f'{config.coderd_loki_selector} |~ "(?i)(warn|error|fatal|crit)"')],
    ), w=24, h=10)

    return dashboard(
        uid=UID_CONTROL_PLANE, title="agentmeter / Control plane", config=config,
        time_from="now-6h",
        description="Log events by severity, API status codes and HTTP latency for the limiter "
        "and coderd; where the limiter's key checks were answered; the ledger's message "
        "retention and pruning.",
        variables=[c.prometheus_variable(), c.loki_variable()], layout=layout,
    )


def _retention(layout: Layout, config: DashboardConfig) -> None:
    """How far back the ledger's raw messages go and whether pruning keeps up (the exporter's
    maintenance task; ledger.message_retention_days)."""
    exp = c.selector(config.exporter_selector)
    retention = f"{m.LEDGER_MESSAGE_RETENTION_SECONDS}{exp}"
    oldest = f"{m.LEDGER_MESSAGES_OLDEST_TIMESTAMP_SECONDS}{exp}"
    last_prune = f"{m.LEDGER_PRUNE_LAST_SUCCESS_TIMESTAMP_SECONDS}{exp}"
    stale = config.prune_stale_seconds
    layout.row("Ledger retention")
    layout.add(c.stat(
        "Message retention", unit="s", no_value="-",
        mappings=[c.enum_mapping({"0": ("Keep everything", c.BLUE)})],
        description="ledger.message_retention_days: raw messages older than this are pruned "
        "(the rollups behind every report, limit and counter are kept). Keep everything: "
        "nothing is pruned.",
        targets=[c.PromQuery(f"max({retention})", instant=True)],
    ), w=6, h=4)
    layout.add(c.stat(
        "Oldest message", unit="dateTimeFromNow", no_value="-",
        description="created_at of the oldest raw message, as the last maintenance run "
        "measured it. With retention set it stays within a month or so of the retention "
        "(PostgreSQL drops whole months).",
        targets=[c.PromQuery(f"max({oldest}) * 1000", instant=True)],
    ), w=6, h=4)
    layout.add(c.stat(
        "Since the last successful prune", unit="s", no_value="-",
        thresholds=c.steps(c.GREEN, (stale / 2, c.ORANGE), (stale, c.RED)),
        description="Time since pruning last succeeded, shown while retention is set. Red "
        "from the age at which the AgentmeterLedgerPruneStale alert fires. Empty: retention "
        "is off, or no prune has succeeded yet (the alert fires then too).",
        targets=[c.PromQuery(f"(time() - max({last_prune})) and on () (max({retention}) > 0)",
                             instant=True)],
    ), w=6, h=4)
    layout.add(c.stat(
        "Messages removed by the last prune", unit="short", no_value="-",
        description="How many raw messages the last successful prune removed.",
        targets=[c.PromQuery(f"max({m.LEDGER_PRUNE_LAST_REMOVED_MESSAGES}{exp})",
                             instant=True)],
    ), w=6, h=4)
    layout.add(c.timeseries(
        "History kept against retention", unit="s",
        description="Age of the oldest raw message next to the retention: the history grows "
        "until a prune drops the oldest month, so it saws between the retention and about a "
        "month more. A line that keeps climbing past the retention means pruning fails.",
        legend_calcs=("max",),
        targets=c.refs(
            c.PromQuery(f"time() - max({oldest})", legend="history kept"),
            c.PromQuery(f"max({retention}) > 0", legend="retention"),
        ),
    ), w=24, h=7)


def _colour(series: str, colour: str) -> dict:
    return {
        "matcher": {"id": "byName", "options": series},
        "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}],
    }
