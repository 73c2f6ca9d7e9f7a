"""The rule source and what it generates: style guide, runbooks, metric names, settings, CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agentmeter.alert_rules import (
    ALERTS_DIR,
    AREAS,
    RULES_DIR,
    AlertSettings,
    AlertSettingsError,
    build_alerts,
    build_rules,
    load_rules,
    render,
)
from agentmeter.alert_rules.__main__ import main as generate
from agentmeter.alert_rules.promql_names import external_metrics, metric_names, rule_metric_names
from agentmeter.alert_rules.spec import num
from ledger.metric_names import exposed_names

DASHBOARD_UIDS = {
    "agentmeter-usage",
    "agentmeter-user-detail",
    "agentmeter-limits",
    "agentmeter-compute",
    "agentmeter-control-plane",
}
ALERTS = [alert for alerts in build_alerts().values() for alert in alerts]
RULES = [
    rule for doc in load_rules().values() for group in doc["groups"] for rule in group["rules"]
]


def test_committed_rule_files_are_generated_from_the_source() -> None:
    for area, document in build_rules().items():
        committed = (RULES_DIR / f"{area}.yaml").read_text(encoding="utf-8")
        assert committed == render(document), f"alerts/rules/{area}.yaml is out of date"
    assert sorted(p.stem for p in RULES_DIR.glob("*.yaml")) == sorted(AREAS)


def test_rule_files_are_plain_prometheus_rule_yaml() -> None:
    for area, document in load_rules().items():
        assert list(document) == ["groups"]
        (group,) = document["groups"]
        assert group["name"] == f"agentmeter-{area}"
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_every_alert_follows_the_style_guide(rule: dict) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"Agentmeter(?:[A-Z][a-z0-9]*|CPU)+", name)
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook_url"} <= set(annotations)
    assert "{{" not in annotations["summary"], "the summary is static"
    assert annotations["runbook_url"].endswith(f"/alerts/runbooks/{name}.md")
    assert (ALERTS_DIR / "runbooks" / f"{name}.md").is_file()
    if "dashboard_url" in annotations:
        uid = annotations["dashboard_url"].split("/d/", 1)[1].split("?", 1)[0]
        assert uid in DASHBOARD_UIDS


def test_alerts_required_by_the_design_exist() -> None:
    expected = {
        "AgentmeterUserNearSpendLimit", "AgentmeterUserSpendLimitReached",
        "AgentmeterUserSpendForecastOverLimit", "AgentmeterModelsWithoutPricing",
        "AgentmeterUnpricedUsage", "AgentmeterPricingGap", "AgentmeterLimiterFailingOpen",
        "AgentmeterUsageSpoolBacklog",
        "AgentmeterLimiterErrorRateHigh", "AgentmeterLimiterOverheadHigh", "AgentmeterLimiterDown",
        "AgentmeterExporterDown", "AgentmeterCollectorFailing", "AgentmeterNodeCPUHigh",
        "AgentmeterNodeMemoryHigh", "AgentmeterNodeOvercommitted",
        "AgentmeterWorkspaceMemoryNearLimit", "AgentmeterWorkspaceCPUAtLimit",
        "AgentmeterWorkspaceCPUThrottled", "AgentmeterWorkspaceUnderutilized",
        "AgentmeterCoderdErrorRateHigh", "AgentmeterCoderdLatencyHigh",
        "AgentmeterCoderSyncFailing", "AgentmeterCoderUnreachable",
        "AgentmeterLedgerPruneStale",
    }  # fmt: skip
    assert {rule["alert"] for rule in RULES} == expected
    severities = {r["labels"]["severity"] for r in RULES if r["alert"].endswith("ErrorRateHigh")}
    assert severities == {"warning", "critical"}
    runbooks = {path.stem for path in (ALERTS_DIR / "runbooks").glob("*.md")}
    assert runbooks == expected


def test_spend_and_workspace_alerts_carry_user_labels() -> None:
    for rule in RULES:
        if rule["alert"].startswith("AgentmeterUser"):
            assert "by (user)" in rule["expr"]
        if rule["alert"].startswith("AgentmeterWorkspace"):
            assert "group_left (user, workspace)" in rule["expr"]


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: f"{a.name}-{a.severity}")
def test_runbook_documents_every_threshold_and_duration(alert) -> None:
    text = (ALERTS_DIR / "runbooks" / f"{alert.name}.md").read_text(encoding="utf-8")
    assert text.startswith(f"# {alert.name}\n")
    for heading in (
        "## Meaning",
        "## Impact",
        "## Thresholds",
        "## How to confirm",
        "## What to do",
    ):
        assert heading in text
    assert "```promql" in text
    defaults = AlertSettings()
    assert alert.settings, "every alert names the settings its thresholds come from"
    for key in alert.settings:
        value = getattr(defaults, key)
        shown = num(value) if isinstance(value, float) else value
        assert f"`{key}`" in text, f"{alert.name} runbook does not name `{key}`"
        assert shown in text, f"{alert.name} runbook does not give {key}'s default {shown}"
    assert alert.for_ in text


def test_every_metric_the_rules_read_is_exposed_or_declared_external() -> None:
    used = rule_metric_names(load_rules().values())
    external = external_metrics()
    assert used - exposed_names() - external == set()
    assert not {name for name in external if name.startswith("agentmeter_")}
    assert "agentmeter_user_spend_usd" in used and "up" in used


def test_metric_name_extraction_skips_labels_functions_and_strings() -> None:
    expr = """
    (sum by (user, le) (rate(a_total{job="x", code=~"5.."}[5m] offset 1h)) / on (user)
      group_left (source) b{user="c"} > bool 0.8e1)
    * on () group_left () (max(c_seconds) - time())
    or label_replace(absent(up{job="y"}), "dst", "$1", "src_metric", "(.*)")
    unless histogram_quantile(0.99, d_bucket[1d:5m]) and nan < inf
    """
    assert metric_names(expr) == {"a_total", "b", "c_seconds", "up", "d_bucket"}


def test_a_selector_setting_changes_every_query_of_its_target() -> None:
    settings = AlertSettings().with_overrides(
        {"exporter_selector": 'job="exp"', "limiter_selector": 'job=~"lim.*"'}
    )
    text = "".join(render(doc) for doc in build_rules(settings).values())
    assert 'job="agentmeter-exporter"' not in text and 'job="agentmeter-limiter"' not in text
    assert 'agentmeter_user_spend_usd{job="exp"}' in text
    assert 'agentmeter_limiter_requests_total{job=~"lim.*"}' in text


def test_link_bases_are_single_settings() -> None:
    settings = AlertSettings().with_overrides(
        {"grafana_base_url": "https://g.example/", "runbook_base_url": "https://r.example/rb"}
    )
    for document in build_rules(settings).values():
        for rule in document["groups"][0]["rules"]:
            annotations = rule["annotations"]
            assert annotations["runbook_url"] == f"https://r.example/rb/{rule['alert']}.md"
            assert annotations.get("dashboard_url", "https://g.example/d/").startswith(
                "https://g.example/d/"
            )


def test_threshold_setting_changes_the_expression() -> None:
    settings = AlertSettings().with_overrides({"spend_near_limit_ratio": "0.7"})
    spend = render(build_rules(settings)["spend"])
    assert ">= 0.7 < 1" in spend and "70% or more" in spend


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(AlertSettingsError, match="unknown alert setting 'exporter_job'"):
        AlertSettings().with_overrides({"exporter_job": "x"})
    with pytest.raises(AlertSettingsError, match="'node_cpu_ratio' must be a float"):
        AlertSettings().with_overrides({"node_cpu_ratio": "high"})
    with pytest.raises(AlertSettingsError, match="'limiter_selector' must be a str"):
        AlertSettings().with_overrides({"limiter_selector": 3})


def test_every_alert_has_a_firing_and_a_quiet_promtool_test() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in (ALERTS_DIR / "tests").glob("*.test.yaml"):
        suite = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert suite["rule_files"] == [f"../rules/{path.name.removesuffix('.test.yaml')}.yaml"]
        for case in suite["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in RULES}
    assert names - fired == set(), "alerts without a firing promtool test"
    assert names - quiet == set(), "alerts without a quiet promtool test"


def test_cli_check_passes_on_the_committed_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate(["--check"]) == 0


def test_cli_check_fails_on_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate(["--out", str(tmp_path), "--set", "node_cpu_ratio=0.5"]) == 0
    assert generate(["--check", "--out", str(tmp_path)]) == 1
    assert "out of date" in capsys.readouterr().err


def test_cli_writes_rules_with_settings_from_a_file(tmp_path: Path) -> None:
    overrides = tmp_path / "alerts.yaml"
    overrides.write_text('coderd_selector: job="coder"\nnode_cpu_ratio: 0.75\n', encoding="utf-8")
    out = tmp_path / "rules"
    assert generate(["--out", str(out), "--settings", str(overrides)]) == 0
    compute = (out / "compute.yaml").read_text(encoding="utf-8")
    assert "> 0.75" in compute
    assert 'coderd_api_requests_processed_total{job="coder"' in (
        out / "controlplane.yaml"
    ).read_text(encoding="utf-8")


def test_cli_reports_bad_settings_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert generate(["--out", str(tmp_path), "--set", "nope=1"]) == 2
    assert capsys.readouterr().err == "error: unknown alert setting 'nope'\n"
    assert generate(["--out", str(tmp_path), "--set", "novalue"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n", encoding="utf-8")
    assert generate(["--out", str(tmp_path), "--settings", str(listed)]) == 2
    assert "expected a mapping" in capsys.readouterr().err
    assert generate(["--out", str(tmp_path), "--factor", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err
