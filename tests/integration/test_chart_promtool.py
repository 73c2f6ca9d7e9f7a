"""The rules as the chart ships them (after Helm's YAML round trip) still load in real Prometheus
tooling: `promtool check rules` on the PrometheusRule's groups and on the plain rules ConfigMap."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import chart_render as cr
from tests.support.requirements import require_binary

pytestmark = pytest.mark.prometheus


def _check(promtool: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_prometheus_rule_groups_pass_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    rule = cr.one(cr.manifests(), "PrometheusRule")
    groups = rule["spec"]["groups"]
    sources = sorted((cr.REPO_ROOT / "alerts" / "rules").glob("*.yaml"))
    source_rules = sum(len(group["rules"]) for source in sources
                       for group in yaml.safe_load(source.read_text(encoding="utf-8"))["groups"])
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    result = _check(promtool, path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {source_rules} rules found" in result.stdout


def test_rules_configmap_files_pass_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    config_map = cr.one(cr.manifests({"rulesConfigMap": {"enabled": True}}), "ConfigMap",
                        "agentmeter-rules")
    for name, text in (config_map.get("data") or {}).items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        result = _check(promtool, path)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


def test_promtool_refuses_a_broken_rendered_rule(tmp_path: Path) -> None:
    """Guards the guard: a rule the chart mangled would not pass."""
    promtool = require_binary("promtool")
    path = tmp_path / "broken.yaml"
    path.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 'sum('\n",
                    encoding="utf-8")
    assert _check(promtool, path).returncode != 0
