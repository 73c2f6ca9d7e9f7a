"""What each dashboard shows: the panels an operator looks for, read from the generated JSON."""

from __future__ import annotations

from typing import Any

import pytest

from dashboards.common import steps
from dashboards.config import UID_USER_DETAIL
from dashboards.layout import Layout
from ledger.reports import MAX_PER_PAGE
from tests.support.dashboard_queries import iter_panels, load_dashboards, panel_queries

DASHBOARDS = load_dashboards()


def panel(name: str, title: str) -> dict[str, Any]:
    matches = [p for p in iter_panels(DASHBOARDS[name]) if p["title"] == title]
    assert len(matches) == 1, f"{name}: {len(matches)} panels titled {title!r}"
    return matches[0]


def exprs(p: dict[str, Any]) -> list[str]:
    return [t.get("expr") or t["rawSql"] for t in p["targets"]]


def column_names(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Column (field) name -> its override properties."""
    return {o["matcher"]["options"]: {prop["id"]: prop["value"] for prop in o["properties"]}
            for o in p["fieldConfig"]["overrides"]}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panel_titles_are_unique(name: str) -> None:
    titles = [p["title"] for p in iter_panels(DASHBOARDS[name])]
    assert len(titles) == len(set(titles))


def test_usage_totals_cover_cost_messages_chats_and_tokens_by_kind() -> None:
    for title, series in [("Total cost", "agentmeter_spend_usd_total"),
                          ("Messages", "agentmeter_messages_total"),
                          ("Chats", "agentmeter_chats_total")]:
        p = panel("usage", title)
        assert p["type"] == "stat"
        assert exprs(p) == [f'sum(increase({series}{{job="agentmeter-exporter"}}[$__range]))']
    tokens = panel("usage", "Tokens by kind")
    assert "sum by (token_type)" in exprs(tokens)[0]
    assert exprs(panel("usage", "Fees by kind")) == [
        'sum by (fee) (increase(agentmeter_fees_total{job="agentmeter-exporter"}[$__range]))']
    assert panel("usage", "Total cost")["fieldConfig"]["defaults"]["unit"] == "currencyUSD"


def test_usage_per_user_table_is_searchable_sortable_paginated_and_links_to_detail() -> None:
    table = panel("usage", "Cost per user")
    assert table["type"] == "table"
    assert table["datasource"]["uid"] == "${ledger}"
    assert table["options"]["footer"]["enablePagination"] is True
    assert table["options"]["sortBy"] == [{"displayName": "Total cost", "desc": True}]
    # It lists the cost table's first page at its largest size: the operator is told so.
    assert table["description"].startswith(f"The {MAX_PER_PAGE} most expensive users matching")
    columns = column_names(table)
    assert [columns[c]["displayName"] for c in columns] == [
        "Username", "Name", "Total cost", "Messages", "Chats", "Input tokens", "Output tokens",
        "Cache read tokens", "Cache write tokens"]
    assert columns["cost_usd"]["unit"] == "currencyUSD"
    link = columns["username"]["links"][0]["url"]
    assert link.startswith(f"/d/{UID_USER_DETAIL}/")
    assert "var-user=${__data.fields.username}" in link and "${__url_time_range}" in link
    sql = exprs(table)[0]
    assert "$__timeFrom()" in sql and "$__timeTo()" in sql
    assert "${search:sqlstring}" in sql
    assert "lower(u.username) LIKE" in sql and "lower(u.name) LIKE" in sql
    search = next(v for v in DASHBOARDS["usage"]["templating"]["list"] if v["name"] == "search")
    assert search["type"] == "textbox"


def test_usage_spend_over_time_by_user_and_by_model() -> None:
    by_user = panel("usage", "Spend rate by user")
    by_model = panel("usage", "Spend rate by model")
    assert by_user["type"] == by_model["type"] == "timeseries"
    assert "sum by (user)" in exprs(by_user)[0]
    assert "sum by (model)" in exprs(by_model)[0]


def test_user_detail_has_a_user_variable_from_prometheus() -> None:
    user = next(v for v in DASHBOARDS["user-detail"]["templating"]["list"]
                if v["name"] == "user")
    assert user["type"] == "query"
    assert user["datasource"]["uid"] == "${datasource}"
    assert user["query"] == 'label_values(agentmeter_user_info{job="agentmeter-exporter"}, user)'
    for query in panel_queries(DASHBOARDS["user-detail"]):
        if query.panel_title not in {"Period resets"}:
            assert "$user" in query.text or "${user:sqlstring}" in query.text, query.where


def test_user_detail_limit_bar_is_green_orange_red() -> None:
    bar = panel("user-detail", "Limit used")
    assert bar["type"] == "bargauge"
    defaults = bar["fieldConfig"]["defaults"]
    assert defaults["unit"] == "percentunit"
    assert (defaults["min"], defaults["max"]) == (0, 1)
    assert defaults["color"] == {"mode": "thresholds"}
    assert defaults["thresholds"]["steps"] == steps("green", (0.8, "orange"), (1.0, "red"))
    assert exprs(bar) == [
        'agentmeter_user_limit_utilization_ratio{job="agentmeter-exporter", user="$user"}']


def test_user_detail_limit_source_reset_and_breakdowns() -> None:
    limit = panel("user-detail", "Effective limit")
    assert limit["targets"][0]["legendFormat"] == "source: {{source}}"
    assert limit["fieldConfig"]["defaults"]["noValue"] == "No limit"
    resets = panel("user-detail", "Period resets")
    assert "agentmeter_limits_period_end_timestamp_seconds" in exprs(resets)[0]
    assert resets["fieldConfig"]["defaults"]["unit"].startswith("dateTime")
    per_model = panel("user-detail", "Per model")
    assert all("sum by (model)" in e for e in exprs(per_model))
    assert 'agentmeter_fees_total{job="agentmeter-exporter", user="$user", fee="web_search"}' in (
        exprs(per_model)[-1])
    per_chat = panel("user-detail", "Per chat")
    assert per_chat["datasource"]["uid"] == "${ledger}"
    assert "chat_daily_usage" in exprs(per_chat)[0]


def test_limits_dashboard_shows_state_users_409s_fail_open_and_pricing_gaps() -> None:
    assert exprs(panel("limits", "Limits")) == [
        'agentmeter_limits_enabled{job="agentmeter-exporter"}']
    assert "{{period}}" in panel("limits", "Period")["targets"][0]["legendFormat"]
    assert "agentmeter_limits_default_usd" in exprs(panel("limits", "Default limit"))[0]
    near, at = exprs(panel("limits", "Users near / at limit"))
    assert ">= 0.8 < 1" in near and ">= 1)" in at
    assert ">= 0.8" in exprs(panel("limits", "Users near or at their limit"))[0]
    assert "agentmeter_limiter_blocked_total" in exprs(
        panel("limits", "Requests refused by user"))[0]
    assert "sum by (reason)" in exprs(panel("limits", "Limit fail-open events"))[0]
    gaps = exprs(panel("limits", "Models without pricing"))
    assert "agentmeter_models_without_pricing" in gaps[0]
    by_kind = exprs(panel("limits", "Unpriced message rate by model and gap"))
    assert by_kind[0].startswith("sum by (model, gap) (rate(agentmeter_unpriced_messages_total")
    unpriced = exprs(panel("limits", "Unpriced messages by model"))
    assert "agentmeter_unpriced_messages_total" in unpriced[0]


def test_compute_dashboard_covers_nodes_workspaces_throttling_and_provisioning() -> None:
    assert "agentmeter_node_allocatable" in exprs(panel("compute", "Node CPU utilization"))[0]
    assert "agentmeter_node_allocatable" in exprs(panel("compute", "Node memory utilization"))[0]
    assert "< 0.2" in exprs(panel("compute", "Under-used nodes"))[0]
    assert "< 0.2" in exprs(panel("compute", "Under-used workspaces"))[0]
    for title in ("Workspace CPU use of limit", "Workspace memory use of limit"):
        p = panel("compute", title)
        assert "group_left (username, workspace)" in exprs(p)[0]
        assert p["targets"][0]["legendFormat"] == "{{username}}/{{workspace}}"
    throttling = exprs(panel("compute", "Workspace CPU throttling"))[0]
    assert "container_cpu_cfs_throttled_periods_total" in throttling
    ratio = panel("compute", "Provisioned CPU limits per node")
    assert ratio["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] == {"mode": "line"}
    assert {"color": "red", "value": 1.0} in ratio["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert "topk(10," in exprs(panel("compute", "Top workspaces by CPU"))[0]


def test_control_plane_covers_logs_status_codes_and_latency_for_limiter_and_coderd() -> None:
    assert "sum by (level)" in exprs(panel("control-plane", "agentmeter log events by severity"))[0]
    assert "coderd_api_requests_processed_total" in exprs(
        panel("control-plane", "coderd API responses by status code"))[0]
    assert "sum by (code)" in exprs(panel("control-plane", "Limiter responses by status code"))[0]
    for title, series in [("Limiter request duration", "agentmeter_limiter_request_duration"),
                          ("coderd API latency", "coderd_api_request_latencies_seconds")]:
        p = panel("control-plane", title)
        assert [t["legendFormat"] for t in p["targets"]] == ["p50", "p95", "p99"]
        assert all(e.startswith(f"histogram_quantile({q}") and series in e
                   for q, e in zip(("0.5", "0.95", "0.99"), exprs(p), strict=True))
    loki_row = panel("control-plane", "coderd logs (Loki, optional)")
    assert loki_row["collapsed"] is True
    assert [p["type"] for p in loki_row["panels"]] == ["logs"]
    assert loki_row["panels"][0]["datasource"] == {"type": "loki", "uid": "${loki}"}
    loki = next(v for v in DASHBOARDS["control-plane"]["templating"]["list"]
                if v["name"] == "loki")
    assert (loki["type"], loki["query"]) == ("datasource", "loki")


def test_control_plane_shows_retention_and_whether_pruning_keeps_up() -> None:
    assert "agentmeter_ledger_message_retention_seconds" in exprs(
        panel("control-plane", "Message retention"))[0]
    oldest = panel("control-plane", "Oldest message")
    assert oldest["fieldConfig"]["defaults"]["unit"] == "dateTimeFromNow"
    assert exprs(oldest) == ['max(agentmeter_ledger_messages_oldest_timestamp_seconds'
                             '{job="agentmeter-exporter"}) * 1000']
    since = panel("control-plane", "Since the last successful prune")
    assert "agentmeter_ledger_prune_last_success_timestamp_seconds" in exprs(since)[0]
    assert "agentmeter_ledger_message_retention_seconds" in exprs(since)[0]
    # Red where the AgentmeterLedgerPruneStale alert fires by default (2 days).
    assert {"color": "red", "value": 172800} in \
        since["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert "agentmeter_ledger_prune_last_removed_messages" in exprs(
        panel("control-plane", "Messages removed by the last prune"))[0]
    history = panel("control-plane", "History kept against retention")
    assert [t["legendFormat"] for t in history["targets"]] == ["history kept", "retention"]


def test_layout_refuses_a_panel_wider_than_the_grid() -> None:
    with pytest.raises(ValueError, match="width"):
        Layout().add(object(), w=25)  # type: ignore[arg-type]


# Field-override properties Grafana knows (an unknown id is silently ignored by Grafana).
KNOWN_OVERRIDE_PROPERTIES = {"displayName", "unit", "decimals", "links", "min", "max", "color",
                             "custom.cellOptions", "custom.width", "custom.align"}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_field_overrides_use_properties_grafana_knows(name: str) -> None:
    for p in iter_panels(DASHBOARDS[name]):
        for override in p.get("fieldConfig", {}).get("overrides", []):
            ids = {prop["id"] for prop in override["properties"]}
            assert ids <= KNOWN_OVERRIDE_PROPERTIES, (p["title"], ids)


def test_limit_table_draws_utilization_as_a_gauge() -> None:
    used = column_names(panel("limits", "Users near or at their limit"))["Used"]
    assert used["custom.cellOptions"] == {"type": "gauge", "mode": "basic"}
    assert (used["unit"], used["min"], used["max"]) == ("percentunit", 0, 1)
