"""values.schema.json refuses bad values before anything renders; values.yaml documents each key."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.support import chart_render as cr

BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "replicas as a word": ({"limiter": {"replicas": "two"}}, "/limiter/replicas"),
    "no replicas at all": ({"limiter": {"replicas": 0}}, "/limiter/replicas"),
    "empty database secret name": ({"database": {"existingSecret": ""}},
                                   "/database/existingSecret"),
    "missing database secret name": ({"database": {"existingSecret": None}}, "/database"),
    "missing admin token secret name": ({"adminToken": {"existingSecret": None}}, "/adminToken"),
    "empty secret key": ({"adminToken": {"key": ""}}, "/adminToken/key"),
    "secret name that is no Kubernetes name": ({"database": {"existingSecret": "My_Secret"}},
                                               "/database/existingSecret"),
    "misspelt key": ({"limiter": {"replica": 3}}, "/limiter"),
    "unknown top-level key": ({"limter": {}}, ""),
    "policy enabled without a policy": ({"policy": {"enabled": True}}, "/policy/content"),
    "policy enabled with empty text": ({"policy": {"enabled": True, "content": ""}},
                                       "/policy/content"),
    "policy without the migration job": (
        {"policy": {"enabled": True, "existingConfigMap": "p"}, "migration": {"enabled": False}},
        "/migration/enabled"),
    "retention policy value": (
        {"limiter": {"persistence": {"retentionPolicy": {"whenDeleted": "Keep"}}}},
        "/limiter/persistence/retentionPolicy/whenDeleted"),
    "scrape interval": ({"serviceMonitor": {"interval": "often"}}, "/serviceMonitor/interval"),
    "image digest": ({"image": {"digest": "latest"}}, "/image/digest"),
    "service port": ({"limiter": {"service": {"port": 70000}}}, "/limiter/service/port"),
    "provider base URL": ({"providers": {"openai": {"baseUrl": "api.openai.com"}}},
                          "/providers/openai/baseUrl"),
    "pdb budget": ({"limiter": {"podDisruptionBudget": {"maxUnavailable": "half"}}},
                   "/limiter/podDisruptionBudget/maxUnavailable"),
    "autoscaling target": ({"limiter": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}},
                           "/limiter/autoscaling/targetCPUUtilizationPercentage"),
}


def _helm() -> Any:
    return cr._helm()


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_refused_with_the_key_named(case: str) -> None:
    values, where = BAD_VALUES[case]
    helm = _helm()
    with pytest.raises(helm.HelmValuesError) as refused:
        cr.render(values)
    assert f"at '{where}" in str(refused.value)
    assert any(where in problem for problem in cr.lint(values))


def test_optional_credentials_may_be_left_out() -> None:
    values = {"providers": {"openai": {"existingSecret": ""}, "anthropic": {"existingSecret": ""}}}
    objects = cr.manifests(values)
    env = cr.one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"]
    names = {item["name"] for item in env}
    assert "AGENTMETER_OPENAI_API_KEY" not in names
    assert "AGENTMETER_ANTHROPIC_API_KEY" not in names


def test_schema_lists_exactly_the_keys_of_values_yaml() -> None:
    """No key only in the schema (undocumented) and none only in values.yaml (unchecked)."""
    import yaml

    schema = json.loads((cr.CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    values = yaml.safe_load((cr.CHART_DIR / "values.yaml").read_text(encoding="utf-8"))

    def walk(node: dict[str, Any], data: Any, path: str) -> list[str]:
        problems: list[str] = []
        props = node.get("properties")
        # Only the chart's own objects; Kubernetes objects (resources, ...) are passed through.
        if props is None or "required" not in node or not isinstance(data, dict):
            return problems
        if set(props) != set(data):
            problems.append(f"{path or '/'}: schema {sorted(props)} != values {sorted(data)}")
        for key in set(props) & set(data):
            problems.extend(walk(props[key], data[key], f"{path}/{key}"))
        return problems

    assert walk(schema, values, "") == []


KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w./-]*):(\s|$)")


def test_every_value_is_documented_in_place() -> None:
    """Each key in values.yaml has its own comment on the line(s) just above it."""
    lines = (cr.CHART_DIR / "values.yaml").read_text(encoding="utf-8").splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if not match:
            continue
        above = lines[number - 1].strip() if number else ""
        if not above.startswith("#"):
            undocumented.append(f"line {number + 1}: {match['key']}")
    assert undocumented == []


def test_the_chart_offers_one_upstream_per_kind_of_the_registry() -> None:
    from limiter.relay.registry import KINDS

    values = cr.load_values(cr.CHART_DIR / "values.yaml")
    schema = json.loads((cr.CHART_DIR / "values.schema.json").read_text())
    assert set(values["providers"]) == set(KINDS)
    assert set(schema["properties"]["providers"]["properties"]) == set(KINDS)
