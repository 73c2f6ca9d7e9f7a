"""Spend alerts: one series per user, so Alertmanager can group a user's alerts together."""

from __future__ import annotations

from agentmeter.alert_rules.settings import AlertSettings
from agentmeter.alert_rules.spec import USER_DETAIL, Alert, label_value, num, percent, series
from ledger import metric_names as m

_USER_LINK = "?var-user={{ $labels.user }}"
_MONEY = 'value | printf "%.2f"'


def alerts(s: AlertSettings) -> list[Alert]:
    e = s.exporter_selector
    spend = f"max by (user) ({series(m.USER_SPEND_USD, e)})"
    limit = f"max by (user) ({series(m.USER_LIMIT_USD, e)})"
    limit_of_user = label_value(f"max({series(m.USER_LIMIT_USD, e, 'user=%q')})", "user", _MONEY)
    spend_of_user = label_value(f"max({series(m.USER_SPEND_USD, e, 'user=%q')})", "user", _MONEY)
    source_of_user = label_value(series(m.USER_LIMIT_USD, e, "user=%q"), "user", 'label "source"')
    period_end = f"max({series(m.LIMITS_PERIOD_END_TIMESTAMP_SECONDS, e)})"
    resets_at = (
        "{{ with query `" + period_end + "` }}{{ . | first | value | humanizeTimestamp }}{{ end }}"
    )
    return [
        Alert(
            name="AgentmeterUserNearSpendLimit",
            expr=f"""
max by (user) ({series(m.USER_LIMIT_UTILIZATION_RATIO, e)})
  >= {num(s.spend_near_limit_ratio)} < 1
""",
            for_=s.spend_near_limit_for,
            severity="info",
            summary=f"A user has spent {percent(s.spend_near_limit_ratio)} or more of their limit.",
            description=(
                "{{ $labels.user }} has used {{ $value | humanizePercentage }} of their spend "
                f"limit in the current period (${spend_of_user} of ${limit_of_user})."
            ),
            dashboard=USER_DETAIL,
            dashboard_query=_USER_LINK,
            settings=("spend_near_limit_ratio", "spend_near_limit_for"),
        ),
        Alert(
            name="AgentmeterUserSpendLimitReached",
            expr=f"""
{spend}
  >= on (user)
{limit}
""",
            for_=s.spend_limit_reached_for,
            severity="info",
            summary="A user has reached their spend limit; their requests are refused.",
            description=(
                '{{ $labels.user }} has spent ${{ $value | printf "%.2f" }} in the current '
                f"period, reaching their ${limit_of_user} limit (source: {source_of_user}). "
                f"Their requests are refused (409 unless limiter.limit_exceeded_status says "
                f"otherwise) until the period resets at {resets_at}."
            ),
            dashboard=USER_DETAIL,
            dashboard_query=_USER_LINK,
            settings=("spend_limit_reached_for",),
        ),
        Alert(
            name="AgentmeterUserSpendForecastOverLimit",
            expr=f"""
(
    {spend}
  +
    sum by (user) (rate({series(m.SPEND_USD + "_total", e)}[{s.spend_forecast_window}]))
  * on () group_left ()
    ({period_end} - time())
)
  > on (user)
{limit}
unless on (user)
(
  {spend}
    >= on (user)
  {limit}
)
""",
            for_=s.spend_forecast_for,
            severity="info",
            summary="At the current rate a user passes their spend limit before the period ends.",
            description=(
                f"At the rate of the last {s.spend_forecast_window}, "
                '{{ $labels.user }} will have spent about ${{ $value | printf "%.2f" }} '
                f"when the period ends at {resets_at}, over their ${limit_of_user} limit "
                f"(${spend_of_user} spent so far)."
            ),
            dashboard=USER_DETAIL,
            dashboard_query=_USER_LINK,
            settings=("spend_forecast_window", "spend_forecast_for"),
        ),
    ]
