"""Limits: whether limits hold, who is close to or at theirs, and where spend goes unmeasured."""

from __future__ import annotations

from grafanalib import core

from dashboards import common as c
from dashboards.config import UID_LIMITS, DashboardConfig
from dashboards.layout import Layout, dashboard
from ledger import metric_names as m


def build(config: DashboardConfig) -> core.Dashboard:
    sel = c.selector(config.exporter_selector)
    lim = c.selector(config.limiter_selector)
    near = config.near_limit_ratio
    ratio = f"{m.USER_LIMIT_UTILIZATION_RATIO}{sel}"
    layout = Layout()

    layout.row("Configuration")
    layout.add(c.stat(
        "Limits", unit="none", color_mode="background",
        mappings=[c.enum_mapping({"0": ("Disabled", c.ORANGE), "1": ("Enabled", c.GREEN)})],
        description="Whether spend limits are enforced. Disabled: every request is forwarded "
        "and per-user overrides are ignored.",
        targets=[c.PromQuery(f"{m.LIMITS_ENABLED}{sel}", instant=True)],
    ), w=4, h=4)
    layout.add(c.stat(
        "Period", unit="none", text_mode="name", no_value="-",
        description="The limit period (day, week or month, UTC-aligned) and how a user in "
        "several groups gets their limit (lowest or highest group limit).",
        targets=[c.PromQuery(f"{m.LIMITS_INFO}{sel}",
                             legend="{{period}} (group policy: {{group_policy}})", instant=True)],
    ), w=6, h=4)
    layout.add(c.stat(
        "Default limit", unit="currencyUSD", decimals=2, no_value="None",
        description="The limit of users without an override or a group limit. None: such users "
        "have no limit.",
        targets=[c.PromQuery(f"{m.LIMITS_DEFAULT_USD}{sel}", instant=True)],
    ), w=4, h=4)
    layout.add(c.stat(
        "Period resets", unit="dateTimeFromNow", no_value="-",
        description="When the current period ends (UTC) and every user's period spend restarts.",
        targets=[c.PromQuery(f"{m.LIMITS_PERIOD_END_TIMESTAMP_SECONDS}{sel} * 1000",
                             instant=True)],
    ), w=4, h=4)
    layout.add(c.stat(
        "Users near / at limit", unit="short", decimals=0, text_mode="value_and_name",
        thresholds=c.steps(c.GREEN, (1, c.ORANGE)),
        description=f"Users at or above {near:.0%} of their limit but below it (near), and "
        "users whose spend has reached it (at: their requests are refused).",
        targets=c.refs(
            c.PromQuery(f"count({ratio} >= {near} < 1) or vector(0)", legend="near",
                        instant=True),
            c.PromQuery(f"count({ratio} >= 1) or vector(0)", legend="at", instant=True),
        ),
    ), w=6, h=4)

    layout.row("Users")
    over = f"({ratio} >= {near})"
    layout.add(c.table(
        "Users near or at their limit", unit="short", sort_by="Used",
        thresholds=c.steps(c.GREEN, (near, c.ORANGE), (1.0, c.RED)),
        description=f"Users at or above {near:.0%} of their effective limit, most used first.",
        targets=c.refs(
            c.PromQuery(over, instant=True, table=True),
            c.PromQuery(f"{m.USER_SPEND_USD}{sel} and on (user) {over}", instant=True,
                        table=True),
            c.PromQuery(f"{m.USER_LIMIT_USD}{sel} and on (user) {over}", instant=True,
                        table=True),
        ),
        transformations=[
            *c.merge_and_rename({
                "user": "User", "source": "Limit source", "Value #A": "Used",
                "Value #B": "Spend this period", "Value #C": "Limit",
            }, hide=("Time", "job", "instance", "__name__")),
        ],
        columns=[
            c.column("Used", unit="percentunit", min=0, max=1,
                     cell={"type": "gauge", "mode": "basic"}),
            c.column("Spend this period", unit="currencyUSD", decimals=2),
            c.column("Limit", unit="currencyUSD", decimals=2),
        ],
    ), w=24, h=9)
    layout.add(c.timeseries(
        "Requests refused by user", unit="reqps", stacked=True,
        description="Requests the limiter refused because the user's spend reached their "
        "limit (agentmeter_limiter_blocked_total: whatever limiter.limit_exceeded_status is).",
        targets=[c.PromQuery(
            f"sum by (user) (rate({c.total(m.LIMITER_BLOCKED)}{lim}[$__rate_interval]))",
            legend="{{user}}")],
    ), w=12, h=8)
    layout.add(c.timeseries(
        "Limit fail-open events", unit="reqps", stacked=True,
        description="Requests let through because the limit check itself failed (e.g. the "
        "database was unreachable), by reason. Any of these means spend went unchecked.",
        targets=[c.PromQuery(
            f"sum by (reason) (rate({c.total(m.LIMITER_FAIL_OPEN)}{lim}[$__rate_interval]))",
            legend="{{reason}}")],
    ), w=12, h=8)

    layout.row("Pricing gaps")
    layout.add(c.stat(
        "Models without pricing", unit="short", decimals=0,
        thresholds=c.steps(c.GREEN, (1, c.RED)),
        description="Enabled models with no input or output price, plus models seen in traffic "
        "but not declared. Their messages are not priced, so spend is under-reported.",
        targets=[c.PromQuery(f"{m.MODELS_WITHOUT_PRICING}{sel}", instant=True)],
    ), w=6, h=8)
    layout.add(c.table(
        "Missing prices", unit="none",
        description="Each price a model lacks, by kind of gap: price (a token kind without a "
        "price), or variant, tier, fee (a service tier, tier or fee its recent answers needed "
        "and the model has no price for).",
        targets=[c.PromQuery(f"{m.MODEL_PRICING_MISSING}{sel}", instant=True, table=True)],
        transformations=c.merge_and_rename(
            {"model": "Model", "gap": "Gap", "token_type": "Token kind"},
            hide=("Time", "Value", "job", "instance", "__name__")),
    ), w=8, h=8)
    layout.add(c.table(
        "Unpriced messages by model", unit="short", sort_by="Unpriced messages",
        description="Messages over the dashboard range that could not be priced (fully or in "
        "part), and their unpriced tokens, by model.",
        targets=c.refs(
            c.PromQuery(f"sum by (model) (increase({c.total(m.UNPRICED_MESSAGES)}{sel}"
                        "[$__range]))", instant=True, table=True),
            c.PromQuery(f"sum by (model) (increase({c.total(m.UNPRICED_TOKENS)}{sel}"
                        "[$__range]))", instant=True, table=True),
        ),
        transformations=c.merge_and_rename(
            {"model": "Model", "Value #A": "Unpriced messages", "Value #B": "Unpriced tokens"}),
    ), w=10, h=8)
    layout.add(c.timeseries(
        "Unpriced message rate by model and gap", unit="reqps", stacked=True,
        description="Rate of messages not fully priced, by model and kind of gap: price "
        "(recorded at no cost: traffic whose cost nobody sees), variant or tier (priced at the "
        "model's highest prices), fee (web searches left unpriced).",
        targets=[c.PromQuery(
            f"sum by (model, gap) (rate({c.total(m.UNPRICED_MESSAGES)}{sel}"
            "[$__rate_interval]))",
            legend="{{model}} ({{gap}})")],
    ), w=24, h=8)

    return dashboard(
        uid=UID_LIMITS, title="agentmeter / Limits", config=config, time_from="now-7d",
        description="Limit configuration, users near or over their limit, refused and "
        "fail-open requests, and models without pricing.",
        variables=[c.prometheus_variable()], layout=layout,
    )
