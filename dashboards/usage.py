"""Usage & cost: what the deployment spends on AI agents, and who spends it."""

from __future__ import annotations

from grafanalib import core

from dashboards import common as c
from dashboards.config import UID_USAGE, UID_USER_DETAIL, DashboardConfig
from dashboards.layout import Layout, dashboard
from dashboards.ledger_sql import PER_USER_COST, TOP_USERS
from ledger import metric_names as m
from ledger.tokens import TOKEN_KINDS

USER_DETAIL_LINK = (
    f"/d/{UID_USER_DETAIL}/agentmeter-user-detail?var-user=${{__data.fields.username}}"
    "&var-datasource=${datasource}&var-ledger=${ledger}&${__url_time_range}"
)


def build(config: DashboardConfig) -> core.Dashboard:
    ex = config.exporter_selector
    sel = c.selector(ex)
    layout = Layout()

    layout.row("Deployment totals over the dashboard range")
    layout.add(c.stat(
        "Total cost", unit="currencyUSD", decimals=2,
        description="Priced cost of every message in the dashboard time range, all users and "
        "models. Unpriced messages add nothing: see the Limits dashboard for models without "
        "pricing.",
        targets=[c.PromQuery(f"sum(increase({c.total(m.SPEND_USD)}{sel}[$__range]))",
                             instant=True)],
    ), w=6, h=4)
    layout.add(c.stat(
        "Messages", unit="short", decimals=0,
        description="Answered provider requests (one assistant turn each) in the range.",
        targets=[c.PromQuery(f"sum(increase({c.total(m.MESSAGES)}{sel}[$__range]))",
                             instant=True)],
    ), w=6, h=4)
    layout.add(c.stat(
        "Chats", unit="short", decimals=0,
        description="Chats (sets of messages sharing an X-Chat-ID) started in the range.",
        targets=[c.PromQuery(f"sum(increase({c.total(m.CHATS)}{sel}[$__range]))",
                             instant=True)],
    ), w=6, h=4)
    layout.add(c.stat(
        "Active users", unit="short", decimals=0,
        description="Users with at least one message in the range.",
        targets=[c.PromQuery(
            f"count(sum by (user) (increase({c.total(m.MESSAGES)}{sel}[$__range])) > 0) "
            "or vector(0)",
            instant=True)],
    ), w=6, h=4)
    kinds = ", ".join(kind.value for kind in TOKEN_KINDS)
    layout.add(c.stat(
        "Tokens by kind", unit="short", decimals=0, text_mode="value_and_name",
        description=f"Tokens in the range by kind ({kinds}). Output includes reasoning tokens; "
        "cache_write_1h are one-hour cache writes.",
        targets=[c.PromQuery(
            f"sum by (token_type) (increase({c.total(m.TOKENS)}{sel}[$__range]))",
            legend="{{token_type}}", instant=True)],
    ), w=18, h=4)
    layout.add(c.stat(
        "Fees by kind", unit="short", decimals=0, text_mode="value_and_name",
        description="Per-request fees in the range as the providers bill them (web searches, "
        "billed per 1,000: counted from the answer, or one per answer for search models), "
        "priced or not; their cost is in the total.",
        targets=[c.PromQuery(
            f"sum by (fee) (increase({c.total(m.FEES)}{sel}[$__range]))",
            legend="{{fee}}", instant=True)],
    ), w=6, h=4)

    layout.row("Per user")
    layout.add(c.table(
        "Cost per user", unit="short", datasource=c.LEDGER, sort_by="Total cost",
        description=f"The {TOP_USERS} most expensive users matching the search (username or "
        "display name), with their totals over the UTC days the dashboard range touches, read "
        "from the ledger: the first page of the admin API's cost table at its largest page "
        f"size ({TOP_USERS}), the same users and numbers. Click a header to sort, click a "
        "username for the user's detail. Cache write tokens include one-hour cache writes.",
        targets=[c.SqlQuery(PER_USER_COST)],
        columns=[
            c.column("username", displayName="Username", links=[{
                "title": "User detail", "url": USER_DETAIL_LINK, "targetBlank": False}]),
            c.column("name", displayName="Name"),
            c.column("cost_usd", displayName="Total cost", unit="currencyUSD", decimals=2),
            c.column("messages", displayName="Messages"),
            c.column("chats", displayName="Chats"),
            c.column("input_tokens", displayName="Input tokens"),
            c.column("output_tokens", displayName="Output tokens"),
            c.column("cache_read_tokens", displayName="Cache read tokens"),
            c.column("cache_write_tokens", displayName="Cache write tokens"),
        ],
    ), w=24, h=12)

    layout.row("Spend over time")
    layout.add(c.timeseries(
        "Spend rate by user", unit="currencyUSD", stacked=True, axis_label="USD per hour",
        description="Priced spend per hour, by user (stacked: the top edge is the deployment's "
        "spend rate).",
        targets=[c.PromQuery(
            f"sum by (user) (rate({c.total(m.SPEND_USD)}{sel}[$__rate_interval])) * 3600",
            legend="{{user}}")],
    ), w=12, h=9)
    layout.add(c.timeseries(
        "Spend rate by model", unit="currencyUSD", stacked=True, axis_label="USD per hour",
        description="Priced spend per hour, by model.",
        targets=[c.PromQuery(
            f"sum by (model) (rate({c.total(m.SPEND_USD)}{sel}[$__rate_interval])) * 3600",
            legend="{{model}}")],
    ), w=12, h=9)
    layout.add(c.timeseries(
        "Token rate by kind", unit="short", stacked=True, axis_label="tokens per second",
        description="Token throughput by kind across all users and models.",
        targets=[c.PromQuery(
            f"sum by (token_type) (rate({c.total(m.TOKENS)}{sel}[$__rate_interval]))",
            legend="{{token_type}}")],
    ), w=12, h=8)
    layout.add(c.timeseries(
        "Messages by model", unit="reqps", stacked=True,
        description="Answered provider requests per second, by model.",
        targets=[c.PromQuery(
            f"sum by (model) (rate({c.total(m.MESSAGES)}{sel}[$__rate_interval]))",
            legend="{{model}}")],
    ), w=12, h=8)

    return dashboard(
        uid=UID_USAGE, title="agentmeter / Usage & cost", config=config, time_from="now-30d",
        description="What the deployment spends on AI agents, per user and per model.",
        variables=[c.prometheus_variable(), c.ledger_variable(),
                   c.textbox_variable("search", "Search user")],
        layout=layout,
    )
