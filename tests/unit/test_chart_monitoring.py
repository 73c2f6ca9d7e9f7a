"""The chart ships exactly the alert rules of alerts/ and the dashboards of dashboards/generated.

Checked twice: against the repository's own files (whatever exists now), and against a copy of
the chart holding sample files, so the templates are proven even before real files exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import chart_render as cr

SAMPLE_RULES = {
    "limiter.yaml": """\
groups:
  - name: agentmeter-limiter
    rules:
      - alert: AgentmeterLimiterFailOpen
        expr: |
          sum by (reason) (
            rate(agentmeter_limiter_fail_open_total{job="agentmeter-limiter"}[5m])
          ) > 0
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: The limiter lets requests through unchecked.
          description: '{{ $value | humanize }} requests/s unchecked ({{ $labels.reason }}).'
          runbook_url: https://example.invalid/runbooks/AgentmeterLimiterFailOpen.md
      - record: agentmeter:limiter_requests:rate5m
        expr: sum by (code) (rate(agentmeter_limiter_requests_total[5m]))
""",
    "exporter.yaml": """\
groups:
  - name: agentmeter-exporter
    interval: 1m
    rules:
      - alert: AgentmeterModelsWithoutPricing
        expr: agentmeter_models_without_pricing{job="agentmeter-exporter"} > 0
        for: 1h
        labels:
          severity: info
          threshold: "0"
        annotations:
          summary: "Models without pricing: spend is under-reported."
          description: "{{ $value }} models have no pricing."
          runbook_url: https://example.invalid/runbooks/AgentmeterModelsWithoutPricing.md
""",
}


def _dashboard(uid: str, title: str) -> str:
    return json.dumps({
        "uid": uid,
        "title": title,
        "schemaVersion": 39,
        "editable": False,
        "panels": [{"id": 1, "type": "stat", "title": "Spend <today> & more",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "targets": [{"refId": "A", "expr":
                                 'sum(agentmeter_user_spend_usd{job="agentmeter-exporter"})'}],
                    "fieldConfig": {"defaults": {"unit": "currencyUSD", "decimals": 2,
                                                 "thresholds": {"steps": [{"value": None},
                                                                          {"value": 0.8}]}}}}],
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Data source", "current": {}, "hide": 0},
            {"name": "ledger", "type": "datasource", "query": "grafana-postgresql-datasource",
             "current": {}, "hide": 0},
            {"name": "user", "type": "query", "query": "label_values(agentmeter_user_info, user)",
             "datasource": {"type": "prometheus", "uid": "${datasource}"}, "current": {}},
        ]},
    }, indent=2) + "\n"


SAMPLE_DASHBOARDS = {
    "usage.json": _dashboard("agentmeter-usage", "agentmeter / Usage & cost"),
    "user_detail.json": _dashboard("agentmeter-user-detail", "agentmeter / User detail"),
}


@pytest.fixture(scope="module")
def sample_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cr.copy_chart(tmp_path_factory.mktemp("chart"), SAMPLE_RULES, SAMPLE_DASHBOARDS)


def _groups(files: dict[str, str]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for name in sorted(files):
        groups.extend(yaml.safe_load(files[name]).get("groups") or [])
    return groups


def _repo_files(folder: str, pattern: str) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8")
            for p in sorted((cr.REPO_ROOT / folder).glob(pattern))}


def _dashboard_maps(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in cr.find(objects, "ConfigMap")
            if "-dashboard-" in obj["metadata"]["name"]]


def test_rendered_rules_equal_the_sample_rule_files(sample_chart: Path) -> None:
    rule = cr.one(cr.manifests(chart_dir=sample_chart), "PrometheusRule")
    assert rule["spec"]["groups"] == _groups(SAMPLE_RULES)
    # Templates in annotations reach Prometheus untouched (Helm must not evaluate them).
    alert = rule["spec"]["groups"][1]["rules"][0]
    assert alert["annotations"]["description"].startswith("{{ $value | humanize }}")


def test_rendered_rules_equal_the_repository_alerts() -> None:
    """alerts/ -> chart_sync -> template: the PrometheusRule carries exactly alerts/rules."""
    rule = cr.one(cr.manifests(), "PrometheusRule")
    assert rule["spec"]["groups"] == _groups(_repo_files("alerts/rules", "*.yaml"))


def test_rules_configmap_holds_each_file_verbatim(sample_chart: Path) -> None:
    objects = cr.manifests({"rulesConfigMap": {"enabled": True}}, chart_dir=sample_chart)
    rules = cr.one(objects, "ConfigMap", "agentmeter-rules")
    assert rules["data"] == {name: text.rstrip("\n") for name, text in SAMPLE_RULES.items()}


def test_rules_configmap_equals_the_repository_alerts() -> None:
    rules = cr.one(cr.manifests({"rulesConfigMap": {"enabled": True}}), "ConfigMap",
                   "agentmeter-rules")
    expected = _repo_files("alerts/rules", "*.yaml")
    assert {k: yaml.safe_load(v) for k, v in (rules.get("data") or {}).items()} == {
        k: yaml.safe_load(v) for k, v in expected.items()}


def test_rules_configmap_is_off_by_default(sample_chart: Path) -> None:
    assert cr.find(cr.manifests(chart_dir=sample_chart), "ConfigMap", "agentmeter-rules") == []


def test_a_broken_rule_file_fails_the_render(tmp_path: Path) -> None:
    chart = cr.copy_chart(tmp_path, {"broken.yaml": "groups: [unclosed\n"}, {})
    helm = pytest.importorskip("helm_python")
    with pytest.raises(helm.HelmRenderError, match=r"broken\.yaml"):
        cr.render(chart_dir=chart)


def test_one_configmap_per_dashboard_equal_to_its_json(sample_chart: Path) -> None:
    maps = _dashboard_maps(cr.manifests(chart_dir=sample_chart))
    assert [m["metadata"]["name"] for m in maps] == [
        "agentmeter-dashboard-usage", "agentmeter-dashboard-user-detail"]
    for config_map in maps:
        (name,) = config_map["data"]
        assert config_map["data"][name] == SAMPLE_DASHBOARDS[name].rstrip("\n")
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == cr.NAMESPACE


def test_dashboard_configmaps_equal_the_repository_json() -> None:
    maps = _dashboard_maps(cr.manifests())
    expected = _repo_files("dashboards/generated", "*.json")
    rendered = {name: json.loads(text) for m in maps for name, text in m["data"].items()}
    assert rendered == {name: json.loads(text) for name, text in expected.items()}


def test_sidecar_label_namespace_and_folder_are_settable(sample_chart: Path) -> None:
    values = {"dashboards": {"label": "example.com/dashboard", "labelValue": "agentmeter",
                             "namespace": "monitoring",
                             "annotations": {"grafana_folder": "agentmeter"}}}
    for config_map in _dashboard_maps(cr.manifests(values, chart_dir=sample_chart)):
        assert config_map["metadata"]["labels"]["example.com/dashboard"] == "agentmeter"
        assert "grafana_dashboard" not in config_map["metadata"]["labels"]
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "agentmeter"}


def test_datasources_are_settable_and_nothing_else_changes(sample_chart: Path) -> None:
    values = {"dashboards": {"datasources": {"prometheus": "Mimir", "ledger": "Ledger"}}}
    for config_map in _dashboard_maps(cr.manifests(values, chart_dir=sample_chart)):
        (name,) = config_map["data"]
        rendered = json.loads(config_map["data"][name])
        expected = json.loads(SAMPLE_DASHBOARDS[name])
        variables = {v["name"]: v for v in rendered["templating"]["list"]}
        assert variables["datasource"]["current"] == {
            "selected": True, "text": "Mimir", "value": "Mimir"}
        assert variables["ledger"]["current"] == {
            "selected": True, "text": "Ledger", "value": "Ledger"}
        assert variables["user"]["current"] == {}
        for variable in expected["templating"]["list"]:
            variable["current"] = variables[variable["name"]]["current"]
        assert rendered == expected


def test_one_datasource_alone_leaves_the_other_variable(sample_chart: Path) -> None:
    values = {"dashboards": {"datasources": {"prometheus": "", "ledger": "Ledger"}}}
    for config_map in _dashboard_maps(cr.manifests(values, chart_dir=sample_chart)):
        (text,) = config_map["data"].values()
        variables = {v["name"]: v for v in json.loads(text)["templating"]["list"]}
        assert variables["datasource"]["current"] == {}
        assert variables["ledger"]["current"]["value"] == "Ledger"


def test_dashboards_can_be_switched_off(sample_chart: Path) -> None:
    objects = cr.manifests({"dashboards": {"enabled": False}}, chart_dir=sample_chart)
    assert _dashboard_maps(objects) == []


def test_a_broken_dashboard_fails_the_render_when_it_must_be_edited(tmp_path: Path) -> None:
    chart = cr.copy_chart(tmp_path, {}, {"broken.json": "{not json"})
    helm = pytest.importorskip("helm_python")
    with pytest.raises(helm.HelmRenderError, match=r"broken\.json"):
        cr.render({"dashboards": {"datasources": {"prometheus": "Mimir"}}}, chart_dir=chart)


def test_repository_dashboards_survive_a_datasource_override() -> None:
    """Re-serialising the real JSON changes nothing but the data source defaults."""
    chosen = {"datasource": "Mimir", "ledger": "Ledger", "loki": "Logs"}
    values = {"dashboards": {"datasources": {"prometheus": "Mimir", "ledger": "Ledger",
                                             "loki": "Logs"}}}
    rendered = {name: json.loads(text)
                for m in _dashboard_maps(cr.manifests(values)) for name, text in m["data"].items()}
    expected = {name: json.loads(text)
                for name, text in _repo_files("dashboards/generated", "*.json").items()}
    for dashboard in expected.values():
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable["type"] == "datasource" and variable["name"] in chosen:
                value = chosen[variable["name"]]
                variable["current"] = {"selected": True, "text": value, "value": value}
    assert rendered == expected
