"""Every rendered manifest is valid Kubernetes for each version the chart supports.

Built-in kinds go through kubernetes-validate in strict mode (unknown fields are errors). The
Prometheus Operator's kinds have no schema there, so their structure is asserted field by field.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.support import chart_render as cr

CASES = cr.values_cases()


def supported_versions() -> list[str]:
    """Each minor inside Chart.yaml's kubeVersion range `>=1.A.0-0 <1.B.0-0`, as '1.N.0'."""
    chart = yaml.safe_load((cr.CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))
    match = re.fullmatch(r">=1\.(\d+)\.0-0 <1\.(\d+)\.0-0", chart["kubeVersion"])
    assert match, f"kubeVersion {chart['kubeVersion']!r} is not a closed range of minors"
    low, high = int(match[1]), int(match[2])
    return [f"1.{minor}.0" for minor in range(low, high)]


VERSIONS = supported_versions()


def _validator() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        from tests.support.requirements import missing

        missing("the kubernetes-validate package")
    return kubernetes_validate


def test_supported_range_is_covered_by_kubernetes_validate() -> None:
    validator = _validator()
    available = {validator.utils.major_minor(v) for v in validator.utils.all_versions()}
    assert len(VERSIONS) >= 4
    missing = [v for v in VERSIONS if validator.utils.major_minor(v) not in available]
    assert missing == [], "kubernetes-validate has no schemas for these; upgrade it"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_builtin_manifests_pass_strict_validation(case: str, version: str) -> None:
    validator = _validator()
    builtin = [obj for obj in cr.manifests(CASES[case]) if not cr.is_custom(obj)]
    assert len(builtin) >= 8
    for obj in builtin:
        try:
            validator.validate(obj, version, strict=True)
        except validator.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc.message}")


def test_strict_validation_catches_an_unknown_field() -> None:
    """Guards the guard: a misspelt field must not pass silently."""
    validator = _validator()
    limiter = cr.one(cr.manifests(), "StatefulSet")
    limiter["spec"]["replica"] = 2
    with pytest.raises(validator.ValidationError):
        validator.validate(limiter, VERSIONS[0], strict=True)


def test_only_the_operator_kinds_are_left_to_field_checks() -> None:
    kinds = {(obj["apiVersion"], obj["kind"]) for obj in cr.manifests() if cr.is_custom(obj)}
    assert kinds == {("monitoring.coreos.com/v1", "ServiceMonitor"),
                     ("monitoring.coreos.com/v1", "PrometheusRule")}


def _service_monitors(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in cr.find(cr.manifests(values), "ServiceMonitor")}


@pytest.mark.parametrize(("case", "prefix"), [("default", "agentmeter"), ("full-values", "meter")])
def test_service_monitors_are_well_formed(case: str, prefix: str) -> None:
    values = CASES[case]
    objects = cr.manifests(values)
    monitors = _service_monitors(values)
    assert set(monitors) == {f"{prefix}-limiter", f"{prefix}-exporter"}
    interval, timeout = ("15s", "5s") if case == "full-values" else ("30s", "10s")
    for component, port, job in (("limiter", "http", "agentmeter-limiter"),
                                 ("exporter", "metrics", "agentmeter-exporter")):
        monitor = monitors[f"{prefix}-{component}"]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["namespace"] == cr.NAMESPACE
        assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
        spec = monitor["spec"]
        assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
        assert spec["namespaceSelector"] == {"matchNames": [cr.NAMESPACE]}
        # The selector matches exactly one Service: the headless one must not be scraped twice.
        wanted = spec["selector"]["matchLabels"]
        matching = [svc["metadata"]["name"] for svc in cr.find(objects, "Service")
                    if wanted.items() <= svc["metadata"]["labels"].items()]
        assert matching == [f"{prefix}-{component}"]
        service = cr.one(objects, "Service", f"{prefix}-{component}")
        assert [p["name"] for p in service["spec"]["ports"]] == [port]
        assert spec["endpoints"] == [{
            "port": port,
            "path": "/metrics",
            "interval": interval,
            "scrapeTimeout": timeout,
            "relabelings": [{"action": "replace", "targetLabel": "job", "replacement": job}],
        }]
    if case == "full-values":
        for monitor in monitors.values():
            assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_job_names_are_settable() -> None:
    monitors = _service_monitors({"serviceMonitor": {"limiterJob": "gw", "exporterJob": "exp"}})
    jobs = {name: m["spec"]["endpoints"][0]["relabelings"][0]["replacement"]
            for name, m in monitors.items()}
    assert jobs == {"agentmeter-limiter": "gw", "agentmeter-exporter": "exp"}


def test_no_exporter_monitor_without_the_exporter() -> None:
    assert set(_service_monitors({"exporter": {"enabled": False}})) == {"agentmeter-limiter"}


def test_prometheus_rule_is_well_formed() -> None:
    rule = cr.one(cr.manifests(CASES["full-values"]), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == "meter"
    assert rule["metadata"]["namespace"] == cr.NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["spec"]) == {"groups"}
    assert isinstance(rule["spec"]["groups"], list)
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit", "labels",
                              "query_offset", "partial_response_strategy"}
        assert group["name"]
        for item in group["rules"]:
            assert ("alert" in item) != ("record" in item)
            assert isinstance(item["expr"], str | int)
            assert set(item) <= {"alert", "record", "expr", "for", "keep_firing_for",
                                 "labels", "annotations"}


@pytest.mark.parametrize("case", ["no-operator-values"])
def test_operator_kinds_can_be_switched_off(case: str) -> None:
    assert [obj for obj in cr.manifests(CASES[case]) if cr.is_custom(obj)] == []
