"""User detail: one user's spend, how close they are to their limit, and where it went."""

from __future__ import annotations

from grafanalib import core

from dashboards import common as c
from dashboards.config import UID_USER_DETAIL, DashboardConfig
from dashboards.layout import Layout, dashboard
from dashboards.ledger_sql import PER_CHAT
from ledger import metric_names as m

USER_MATCHER = 'user="$user"'
# Token columns of the per-model table: cache writes include one-hour cache writes, as in the
# cost table.
TOKEN_COLUMNS = (
    'token_type="input"',
    'token_type="output"',
    'token_type="cache_read"',
    'token_type=~"cache_write|cache_write_1h"',
)


def build(config: DashboardConfig) -> core.Dashboard:
    ex = config.exporter_selector
    user = c.selector(ex, USER_MATCHER)
    near = config.near_limit_ratio
    layout = Layout()

    layout.row("Summary")
    layout.add(c.stat(
        "Display name", unit="none", text_mode="name", no_value="(unknown user)",
        description="The user's display name from the ledger (agentmeter_user_info).",
        targets=[c.PromQuery(f"{m.USER_INFO}{user}", legend="{{name}}", instant=True)],
    ), w=6, h=4)
    layout.add(c.stat(
        "Spend this period", unit="currencyUSD", decimals=2,
        description="Priced spend in the current limit period (UTC-aligned), the amount the "
        "limiter compares with the effective limit.",
        targets=[c.PromQuery(f"{m.USER_SPEND_USD}{user}", instant=True)],
    ), w=6, h=4)
    layout.add(c.stat(
        "Cost in range", unit="currencyUSD", decimals=2,
        description="Priced spend over the dashboard time range.",
        targets=[c.PromQuery(f"sum(increase({c.total(m.SPEND_USD)}{user}[$__range]))",
                             instant=True)],
    ), w=4, h=4)
    layout.add(c.stat(
        "Messages in range", unit="short", decimals=0,
        description="Answered provider requests over the dashboard time range.",
        targets=[c.PromQuery(f"sum(increase({c.total(m.MESSAGES)}{user}[$__range]))",
                             instant=True)],
    ), w=4, h=4)
    layout.add(c.stat(
        "Chats in range", unit="short", decimals=0,
        description="Chats started over the dashboard time range.",
        targets=[c.PromQuery(f"sum(increase({c.total(m.CHATS)}{user}[$__range]))",
                             instant=True)],
    ), w=4, h=4)

    layout.add(c.stat(
        "Tokens in range by kind", unit="short", decimals=0, text_mode="value_and_name",
        description="The user's tokens over the dashboard time range by kind (output includes "
        "reasoning; cache_write_1h are one-hour cache writes).",
        targets=[c.PromQuery(
            f"sum by (token_type) (increase({c.total(m.TOKENS)}{user}[$__range]))",
            legend="{{token_type}}", instant=True)],
    ), w=24, h=4)

    layout.row("Limit")
    layout.add(c.bargauge(
        "Limit used", unit="percentunit", min_value=0, max_value=1,
        thresholds=c.steps(c.GREEN, (near, c.ORANGE), (1.0, c.RED)),
        description=f"Spend this period divided by the effective limit: green below "
        f"{near:.0%}, orange from {near:.0%}, red at or above 100% (requests are refused "
        "until the period resets). Empty when no limit applies.",
        targets=[c.PromQuery(f"{m.USER_LIMIT_UTILIZATION_RATIO}{user}", legend="$user",
                             instant=True)],
    ), w=12, h=4)
    layout.add(c.stat(
        "Effective limit", unit="currencyUSD", decimals=2, text_mode="value_and_name",
        no_value="No limit",
        description="The limit that applies to the user this period, named by its source: "
        "user (override), group, or default. No limit when limits are disabled, the user is "
        "exempt, or nothing applies.",
        targets=[c.PromQuery(f"{m.USER_LIMIT_USD}{user}", legend="source: {{source}}",
                             instant=True)],
    ), w=6, h=4)
    layout.add(c.stat(
        "Period resets", unit="dateTimeFromNow", no_value="-",
        description="When the current limit period ends (UTC) and spend starts again from zero.",
        targets=[c.PromQuery(f"{m.LIMITS_PERIOD_END_TIMESTAMP_SECONDS}{c.selector(ex)} * 1000",
                             instant=True)],
    ), w=6, h=4)

    layout.row("Breakdown")

    def by_model(series: str) -> c.PromQuery:
        return c.PromQuery(f"sum by (model) (increase({series}[$__range]))",
                           instant=True, table=True)

    layout.add(c.table(
        "Per model", unit="short", sort_by="Cost",
        description="The user's spend, messages, tokens and fees (web searches) per model over "
        "the dashboard range.",
        targets=c.refs(
            by_model(c.total(m.SPEND_USD) + user),
            by_model(c.total(m.MESSAGES) + user),
            *(by_model(c.total(m.TOKENS) + c.selector(ex, USER_MATCHER, kinds))
              for kinds in TOKEN_COLUMNS),
            by_model(c.total(m.FEES) + c.selector(ex, USER_MATCHER, 'fee="web_search"')),
        ),
        transformations=c.merge_and_rename({
            "model": "Model", "Value #A": "Cost", "Value #B": "Messages",
            "Value #C": "Input tokens", "Value #D": "Output tokens",
            "Value #E": "Cache read tokens", "Value #F": "Cache write tokens",
            "Value #G": "Web searches",
        }),
        columns=[c.column("Cost", unit="currencyUSD", decimals=2)],
    ), w=24, h=8)
    layout.add(c.table(
        "Per chat", unit="short", datasource=c.LEDGER, sort_by="Cost",
        description="The user's chats (X-Chat-ID) over the UTC days the dashboard range touches, "
        "most expensive first, read from the ledger: chat ids are never Prometheus labels. "
        "Cache write tokens include one-hour cache writes.",
        targets=[c.SqlQuery(PER_CHAT)],
        columns=[
            c.column("chat", displayName="Chat"),
            c.column("first_day", displayName="First day", unit="time:YYYY-MM-DD"),
            c.column("last_day", displayName="Last day", unit="time:YYYY-MM-DD"),
            c.column("messages", displayName="Messages"),
            c.column("cost_usd", displayName="Cost", unit="currencyUSD", decimals=2),
            c.column("input_tokens", displayName="Input tokens"),
            c.column("output_tokens", displayName="Output tokens"),
            c.column("cache_read_tokens", displayName="Cache read tokens"),
            c.column("cache_write_tokens", displayName="Cache write tokens"),
        ],
    ), w=24, h=10)
    layout.add(c.timeseries(
        "Spend rate by model", unit="currencyUSD", stacked=True, axis_label="USD per hour",
        description="The user's priced spend per hour, by model.",
        targets=[c.PromQuery(
            f"sum by (model) (rate({c.total(m.SPEND_USD)}{user}[$__rate_interval])) * 3600",
            legend="{{model}}")],
    ), w=24, h=8)

    return dashboard(
        uid=UID_USER_DETAIL, title="agentmeter / User detail", config=config,
        time_from="now-30d",
        description="One user's spend, limit progress, and per-model and per-chat breakdown.",
        variables=[
            c.prometheus_variable(), c.ledger_variable(),
            c.prometheus_query_variable(
                "user", "User", f"label_values({m.USER_INFO}{c.selector(ex)}, user)"),
        ],
        layout=layout,
    )
