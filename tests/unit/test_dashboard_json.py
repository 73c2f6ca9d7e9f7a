"""The committed dashboard JSON: current, readable by Grafana's own SDK, and in house style.

Every check here reads the generated JSON files themselves (what Grafana provisions), not the
Python that builds them.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from dashboards.build import DASHBOARDS, build_all, main
from dashboards.config import DashboardConfig
from dashboards.external_metrics import EXTERNAL_METRICS
from ledger.metric_names import PREFIX, exposed_names
from tests.support.dashboard_queries import (
    GENERATED,
    iter_panels,
    load_dashboards,
    metric_names,
    panel_queries,
    range_selectors,
)

with warnings.catch_warnings():
    # The SDK warns on import that the v1 dashboard model is superseded; that and nothing else.
    warnings.filterwarnings("ignore", message="Prefer using dashboardv2.Dashboard instead.",
                            category=DeprecationWarning)
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard as SdkDashboard

UIDS = {
    "usage": "agentmeter-usage",
    "user-detail": "agentmeter-user-detail",
    "limits": "agentmeter-limits",
    "compute": "agentmeter-compute",
    "control-plane": "agentmeter-control-plane",
}
POSTGRES = "grafana-postgresql-datasource"
DASHBOARD_JSON = load_dashboards()


def visual_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in iter_panels(dashboard) if p["type"] != "row"]


@pytest.fixture(params=sorted(UIDS), ids=str)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return DASHBOARD_JSON[request.param]


def test_generated_files_are_current(tmp_path: Path) -> None:
    written = build_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in GENERATED.glob("*.json"))
    for path in written:
        committed = GENERATED / path.name
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} is stale: run `make generate` and commit the result")


def test_build_is_deterministic(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in build_all(tmp_path / "a")]
    second = [p.read_bytes() for p in build_all(tmp_path / "b")]
    assert first == second
    assert all(content.endswith(b"}\n") for content in first)


def test_command_writes_every_dashboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path / "out")]) == 0
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.json")) == sorted(DASHBOARDS)
    assert len(capsys.readouterr().out.splitlines()) == len(DASHBOARDS)


def test_one_file_per_dashboard_with_its_stable_uid() -> None:
    assert {name: d["uid"] for name, d in DASHBOARD_JSON.items()} == UIDS


def test_json_is_sorted_and_indented() -> None:
    for path in GENERATED.glob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2,
                                  ensure_ascii=False) + "\n"


def test_grafana_sdk_reads_every_dashboard_back(dashboard: dict[str, Any]) -> None:
    register_default_plugins()
    parsed = SdkDashboard.from_json(dashboard)
    again = json.loads(json.dumps(parsed, cls=JSONEncoder))
    assert again["uid"] == dashboard["uid"]
    assert again["title"] == dashboard["title"]
    before = [(p["id"], p["title"], p["type"], p["gridPos"]) for p in iter_panels(dashboard)]
    after = [(p["id"], p["title"], p["type"], p["gridPos"]) for p in iter_panels(again)]
    assert after == before
    exprs = [t.get("expr") or t.get("rawSql") for p in iter_panels(again)
             for t in p.get("targets", [])]
    assert exprs == [q.text for q in panel_queries(dashboard)]
    assert [v["name"] for v in again["templating"]["list"]] == [
        v["name"] for v in dashboard["templating"]["list"]]


def _variable(dashboard: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((v for v in dashboard["templating"]["list"] if v["name"] == name), None)


def test_prometheus_datasource_variable_drives_every_promql_panel(
        dashboard: dict[str, Any]) -> None:
    variable = _variable(dashboard, "datasource")
    assert variable is not None and variable["type"] == "datasource"
    assert variable["query"] == "prometheus"
    for panel in visual_panels(dashboard):
        kinds = {t["datasource"]["type"] for t in panel["targets"]}
        assert len(kinds) == 1, panel["title"]
        assert panel["datasource"]["type"] == kinds.pop()
        for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            expected = {"prometheus": "${datasource}", POSTGRES: "${ledger}", "loki": "${loki}"}
            assert source["uid"] == expected[source["type"]], panel["title"]


def test_sql_panels_come_with_the_ledger_variable(dashboard: dict[str, Any]) -> None:
    has_sql = any(q.datasource_type == POSTGRES for q in panel_queries(dashboard))
    variable = _variable(dashboard, "ledger")
    assert (variable is not None) == has_sql
    if variable is not None:
        assert variable["type"] == "datasource" and variable["query"] == POSTGRES


def test_rates_use_rate_interval_and_totals_use_range(dashboard: dict[str, Any]) -> None:
    for query in panel_queries(dashboard):
        if query.datasource_type != "prometheus":
            continue
        for window in range_selectors(query.text):
            assert window in {"$__rate_interval", "$__range", "$__range:"}, query.where
        for function in re.finditer(r"\b(i?rate)\((.*?)\[([^\]]*)\]", query.text):
            assert function.group(3) == "$__rate_interval", query.where


def test_every_panel_has_a_unit_and_a_description(dashboard: dict[str, Any]) -> None:
    for panel in visual_panels(dashboard):
        assert panel.get("description", "").strip(), panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]


def test_modern_panel_types_only(dashboard: dict[str, Any]) -> None:
    types = {p["type"] for p in iter_panels(dashboard)}
    assert types <= {"row", "timeseries", "stat", "table", "bargauge", "logs"}
    assert "graph" not in types and "singlestat" not in types


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in iter_panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) and i > 0 for i in ids)


def test_grid_positions_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in iter_panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_metric_is_published_by_agentmeter_or_declared_external(
        dashboard: dict[str, Any]) -> None:
    known = exposed_names() | set(EXTERNAL_METRICS)
    for query in panel_queries(dashboard):
        if query.datasource_type != "prometheus":
            continue
        names = metric_names(query.text)
        assert names, f"no metric found in {query.where}"
        assert names <= known, f"{query.where} uses unknown {sorted(names - known)}"


def test_external_metrics_are_all_used() -> None:
    used = {name for d in DASHBOARD_JSON.values() for q in panel_queries(d)
            if q.datasource_type == "prometheus" for name in metric_names(q.text)}
    assert set(EXTERNAL_METRICS) <= used


def test_agentmeter_series_are_selected_by_job(dashboard: dict[str, Any]) -> None:
    for query in panel_queries(dashboard):
        for match in re.finditer(rf"\b{PREFIX}\w+", query.text):
            # No label is named agentmeter_*, so every match is a series name.
            rest = query.text[match.end():]
            assert rest.startswith("{") and "job" in rest[:rest.index("}")], (
                f"{match.group()} without a job selector in {query.where}")


def test_job_names_come_from_the_config() -> None:
    config = DashboardConfig(limiter_job="gw", exporter_job="meter")
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(config).to_json_data(), default=lambda o: o.to_json_data())
        assert "agentmeter-limiter" not in text and "agentmeter-exporter" not in text, name
    limits_text = json.dumps(DASHBOARDS["limits"](config).to_json_data(),
                             default=lambda o: o.to_json_data())
    assert 'job=\\"gw\\"' in limits_text and 'job=\\"meter\\"' in limits_text


def test_chat_ids_never_become_prometheus_labels() -> None:
    for dashboard in DASHBOARD_JSON.values():
        for query in panel_queries(dashboard):
            if query.datasource_type == "prometheus":
                assert not re.search(r"\bchat(_id)?\b\s*(=|!=|=~|,|\))", query.text), query.where
