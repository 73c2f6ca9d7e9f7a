"""The exporter may read pods, nodes and their metrics, and nothing else; the limiter nothing."""

from __future__ import annotations

import pytest

from tests.support import chart_render as cr

CASES = cr.values_cases()


def test_cluster_role_grants_exactly_the_reads_the_exporter_needs() -> None:
    role = cr.one(cr.manifests(), "ClusterRole", "agentmeter-exporter")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
        # metrics.k8s.io has no watch: the exporter polls it.
        {"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"], "verbs": ["get", "list"]},
    ]
    assert "aggregationRule" not in role


def test_binding_gives_the_role_to_the_exporter_pod_only() -> None:
    objects = cr.manifests()
    binding = cr.one(objects, "ClusterRoleBinding", "agentmeter-exporter")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "agentmeter-exporter"}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "agentmeter", "namespace": cr.NAMESPACE}]
    account = cr.one(objects, "ServiceAccount", "agentmeter")
    exporter = cr.one(objects, "Deployment")["spec"]["template"]["spec"]
    limiter = cr.one(objects, "StatefulSet")["spec"]["template"]["spec"]
    job = cr.one(objects, "Job")["spec"]["template"]["spec"]
    assert exporter["serviceAccountName"] == account["metadata"]["name"]
    assert exporter["automountServiceAccountToken"] is True
    assert limiter["automountServiceAccountToken"] is False
    assert job["automountServiceAccountToken"] is False


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_other_permissions_in_any_case(case: str) -> None:
    kinds = {obj["kind"] for obj in cr.manifests(CASES[case])}
    assert not kinds & {"Role", "RoleBinding"}
    for role in cr.find(cr.manifests(CASES[case]), "ClusterRole"):
        verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
        resources = {res for rule in role["rules"] for res in rule["resources"]}
        assert verbs <= {"get", "list", "watch"}
        assert resources == {"pods", "nodes"}


@pytest.mark.parametrize("values", [
    {"exporter": {"kubernetes": {"enabled": False}}},
    {"exporter": {"enabled": False}},
    {"rbac": {"create": False}},
], ids=["kubernetes-off", "exporter-off", "rbac-off"])
def test_no_cluster_role_when_nothing_reads_the_api(values: dict) -> None:
    objects = cr.manifests(values)
    assert cr.find(objects, "ClusterRole") == []
    assert cr.find(objects, "ClusterRoleBinding") == []


def test_existing_service_account_is_bound_by_name() -> None:
    objects = cr.manifests({"serviceAccount": {"create": False, "name": "shared"}})
    assert cr.find(objects, "ServiceAccount") == []
    binding = cr.one(objects, "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == "shared"
    exporter = cr.one(objects, "Deployment")["spec"]["template"]["spec"]
    assert exporter["serviceAccountName"] == "shared"
