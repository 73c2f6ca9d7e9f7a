"""The chart lints strictly and renders the workloads an operator expects, for every values case."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import chart_render as cr

CASES = cr.values_cases()


@pytest.fixture(scope="module")
def default_objects() -> list[dict[str, Any]]:
    return cr.manifests()


def _env(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or name -> (secret, key, optional) for secret references."""
    env: dict[str, Any] = {}
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        env[item["name"]] = (
            (ref["name"], ref["key"], ref.get("optional", False)) if ref else item["value"]
        )
    return env


@pytest.mark.parametrize("case", sorted(CASES))
def test_lint_strict_finds_nothing(case: str) -> None:
    assert cr.lint(CASES[case]) == []


def test_ci_values_files_exist_for_the_switchable_integrations() -> None:
    assert {"no-operator-values", "full-values", "existing-policy-values"} <= set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_object_is_named_and_namespaced_in_the_release(case: str) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for obj in cr.manifests(CASES[case]):
        assert obj["metadata"]["name"]
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"]
        elif obj["kind"] == "ConfigMap" and "dashboard" in obj["metadata"]["name"]:
            continue  # may live in Grafana's namespace (dashboards.namespace)
        else:
            assert obj["metadata"]["namespace"] == cr.NAMESPACE, obj["metadata"]["name"]


def test_limiter_statefulset_keeps_a_spool_volume_per_replica(default_objects: list) -> None:
    limiter = cr.one(default_objects, "StatefulSet", "agentmeter-limiter")
    spec = limiter["spec"]
    assert spec["replicas"] == 2
    assert spec["serviceName"] == "agentmeter-limiter-headless"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain", "whenScaled": "Retain"}
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spool"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in claim["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = _env(container)
    assert mounts["spool"] == env["AGENTMETER_LIMITER_SPOOL_DIR"] == "/var/lib/agentmeter/spool"
    assert container["args"] == ["limiter", "--listen", "0.0.0.0:8787"]
    assert container["ports"] == [{"name": "http", "containerPort": 8787, "protocol": "TCP"}]


def test_limiter_reads_every_credential_from_secrets(default_objects: list) -> None:
    limiter = cr.one(default_objects, "StatefulSet", "agentmeter-limiter")
    env = _env(limiter["spec"]["template"]["spec"]["containers"][0])
    assert env["AGENTMETER_DATABASE_URL"] == ("agentmeter", "database-url", False)
    assert env["AGENTMETER_ADMIN_TOKEN"] == ("agentmeter", "admin-token", False)
    assert env["AGENTMETER_OPENAI_API_KEY"] == ("agentmeter", "openai-api-key", True)
    assert env["AGENTMETER_ANTHROPIC_API_KEY"] == ("agentmeter", "anthropic-api-key", True)
    assert env["AGENTMETER_CONFIG"] == "/etc/agentmeter/config/agentmeter.yaml"
    assert "AGENTMETER_OPENAI_BASE_URL" not in env
    assert "AGENTMETER_LIMITER_TRUSTED_HEADER_SECRET" not in env


def test_env_names_are_settings_agentmeter_reads(default_objects: list) -> None:
    from agentmeter.config import CONFIG_ENV, env_variables

    known = set(env_variables()) | {CONFIG_ENV}
    for case in CASES.values():
        for obj in cr.manifests(case):
            pod = obj.get("spec", {}).get("template", {}).get("spec")
            for container in cr.iter_containers(pod or {}):
                assert set(_env(container)) <= known, container["name"]


def test_full_values_split_credentials_and_set_upstreams() -> None:
    objects = cr.manifests(CASES["full-values"])
    limiter = cr.one(objects, "StatefulSet", "meter-limiter")
    env = _env(limiter["spec"]["template"]["spec"]["containers"][0])
    assert env["AGENTMETER_DATABASE_URL"] == ("agentmeter-postgres", "url", False)
    assert env["AGENTMETER_ADMIN_TOKEN"] == ("agentmeter-admin", "token", False)
    assert env["AGENTMETER_OPENAI_API_KEY"] == ("agentmeter-openai", "api-key", False)
    assert env["AGENTMETER_OPENAI_BASE_URL"] == "https://llm-proxy.internal.example"
    assert "AGENTMETER_ANTHROPIC_API_KEY" not in env
    assert env["AGENTMETER_LIMITER_TRUSTED_HEADER_SECRET"] == (
        "agentmeter-proxy", "trusted-header-secret", False)
    assert env["AGENTMETER_LOG_LEVEL"] == "debug"
    assert list(env)[-1] == "AGENTMETER_LOG_LEVEL"  # extraEnv last: it wins over the chart's
    image = limiter["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "ghcr.io/agentmeter/agentmeter@sha256:" + "0123456789abcdef" * 4


def test_probes_use_health_and_readiness_routes(default_objects: list) -> None:
    limiter = cr.one(default_objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    exporter = cr.one(default_objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert limiter["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert limiter["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert exporter["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert exporter["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_container_is_non_root_read_only_without_capabilities(case: str) -> None:
    pods = 0
    for obj in cr.manifests(CASES[case]):
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod is None:
            continue
        pods += 1
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in cr.iter_containers(pod):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert set(container["resources"]) >= {"requests", "limits"}
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pods >= 2


def test_exporter_is_one_replica_with_kubernetes_settings(default_objects: list) -> None:
    exporter = cr.one(default_objects, "Deployment", "agentmeter-exporter")
    assert exporter["spec"]["replicas"] == 1
    assert exporter["spec"]["strategy"] == {"type": "Recreate"}
    pod = exporter["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "agentmeter"
    assert pod["automountServiceAccountToken"] is True
    env = _env(pod["containers"][0])
    assert env["AGENTMETER_EXPORTER_KUBERNETES_ENABLED"] == "true"
    assert env["AGENTMETER_EXPORTER_KUBERNETES_WORKSPACE_SELECTOR"] == "com.coder.resource=true"
    assert "AGENTMETER_EXPORTER_KUBERNETES_KUBECONFIG" not in env  # in-cluster configuration
    assert env["AGENTMETER_LEDGER_MESSAGE_RETENTION_DAYS"] == "0"  # keep every message
    assert pod["containers"][0]["args"] == ["exporter", "--listen", "0.0.0.0:9787"]
    limiter_pod = cr.one(default_objects, "StatefulSet")["spec"]["template"]["spec"]
    assert limiter_pod["automountServiceAccountToken"] is False


def test_exporter_without_kubernetes_gets_no_token() -> None:
    objects = cr.manifests(CASES["no-operator-values"])
    pod = cr.one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "agentmeter-runner"
    assert _env(pod["containers"][0])["AGENTMETER_EXPORTER_KUBERNETES_ENABLED"] == "false"
    assert cr.find(objects, "ServiceAccount") == []


def test_services_select_their_pods(default_objects: list) -> None:
    for name, workload_kind, port in (("agentmeter-limiter", "StatefulSet", "http"),
                                      ("agentmeter-exporter", "Deployment", "metrics")):
        service = cr.one(default_objects, "Service", name)
        workload = cr.one(default_objects, workload_kind, name)
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert workload["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
        assert service["spec"]["ports"][0]["targetPort"] == port
    headless = cr.one(default_objects, "Service", "agentmeter-limiter-headless")
    assert headless["spec"]["clusterIP"] == "None"


def test_pdb_by_default_and_hpa_only_when_enabled(default_objects: list) -> None:
    pdb = cr.one(default_objects, "PodDisruptionBudget", "agentmeter-limiter")
    limiter = cr.one(default_objects, "StatefulSet")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == limiter["spec"]["selector"]
    assert cr.find(default_objects, "HorizontalPodAutoscaler") == []

    objects = cr.manifests(CASES["full-values"])
    hpa = cr.one(objects, "HorizontalPodAutoscaler", "meter-limiter")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "meter-limiter"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    # The autoscaler owns the replica count: the StatefulSet must not reset it on upgrade.
    assert "replicas" not in cr.one(objects, "StatefulSet")["spec"]
    assert cr.one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == "50%"


def test_pdb_can_be_switched_off() -> None:
    objects = cr.manifests({"limiter": {"podDisruptionBudget": {"enabled": False}}})
    assert cr.find(objects, "PodDisruptionBudget") == []


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(default_objects: list) -> None:
    job = cr.one(default_objects, "Job", "agentmeter-migration")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert "initContainers" not in pod
    (container,) = pod["containers"]
    assert container["args"] == ["db", "upgrade"]
    assert _env(container)["AGENTMETER_DATABASE_URL"] == ("agentmeter", "database-url", False)
    # The release's ServiceAccount does not exist yet when a pre-install hook runs.
    assert "serviceAccountName" not in pod
    config = cr.one(default_objects, "ConfigMap", "agentmeter-migration")
    assert config["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(config["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"])
    assert config["data"] == {"agentmeter.yaml": "{}\n"}


def test_policy_is_applied_after_the_upgrade_from_the_chart() -> None:
    objects = cr.manifests(CASES["full-values"])
    pod = cr.one(objects, "Job", "meter-migration")["spec"]["template"]["spec"]
    (migrate,) = pod["initContainers"]
    (apply,) = pod["containers"]
    assert migrate["args"] == ["db", "upgrade"]
    assert apply["args"] == ["apply", "-f", "/etc/agentmeter/policy.yaml"]
    mount = next(m for m in apply["volumeMounts"] if m["name"] == "policy")
    assert (mount["mountPath"], mount["subPath"]) == ("/etc/agentmeter/policy.yaml", "policy.yaml")
    assert all(m["name"] != "policy" for m in migrate["volumeMounts"])
    volume = next(v for v in pod["volumes"] if v["name"] == "policy")
    assert volume["configMap"]["name"] == "meter-migration"
    import yaml

    hook_config = cr.one(objects, "ConfigMap", "meter-migration")
    assert yaml.safe_load(hook_config["data"]["policy.yaml"]) == CASES["full-values"]["policy"][
        "content"]
    assert yaml.safe_load(hook_config["data"]["agentmeter.yaml"]) == CASES["full-values"]["config"]


def test_policy_from_an_existing_configmap() -> None:
    objects = cr.manifests(CASES["existing-policy-values"])
    pod = cr.one(objects, "Job")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "policy")
    assert volume["configMap"]["name"] == "agentmeter-policy"
    assert "policy.yaml" not in cr.one(objects, "ConfigMap", "agentmeter-migration")["data"]


def test_migration_can_be_switched_off() -> None:
    objects = cr.manifests({"migration": {"enabled": False}})
    assert cr.find(objects, "Job") == []
    assert cr.find(objects, "ConfigMap", "agentmeter-migration") == []


def test_config_file_changes_roll_the_pods() -> None:
    def checksums(values: dict[str, Any]) -> set[str]:
        objects = cr.manifests(values)
        return {
            obj["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for obj in objects if obj["kind"] in {"StatefulSet", "Deployment"}
        }

    before = checksums({})
    after = checksums({"config": {"limiter": {"fail_mode": "closed"}}})
    assert len(before) == len(after) == 1
    assert before != after


def test_config_file_is_the_config_value() -> None:
    import yaml

    config = {"limiter": {"enforcement": "strict"}, "exporter": {"max_users": 10}}
    objects = cr.manifests({"config": config})
    data = cr.one(objects, "ConfigMap", "agentmeter-config")["data"]
    assert yaml.safe_load(data["agentmeter.yaml"]) == config


def test_config_file_loads_in_agentmeter(tmp_path) -> None:
    """The rendered file and the chart's environment make a Config agentmeter accepts."""
    import yaml

    from agentmeter.config import load_config

    objects = cr.manifests(CASES["full-values"])
    text = cr.one(objects, "ConfigMap", "meter-config")["data"]["agentmeter.yaml"]
    path = tmp_path / "agentmeter.yaml"
    path.write_text(text, encoding="utf-8")
    exporter = cr.one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    environ = {k: v for k, v in _env(exporter).items() if isinstance(v, str)}
    environ["AGENTMETER_DATABASE_URL"] = "postgresql://agentmeter@db:5432/agentmeter"
    config = load_config(path, environ)
    assert config.limiter.fail_mode == "closed"
    assert config.exporter.max_users == 5000
    assert config.exporter.kubernetes.enabled is True
    assert config.exporter.kubernetes.namespace == "coder-workspaces"
    assert config.exporter.kubernetes.kubeconfig is None
    assert config.ledger.message_retention_days == 400
    assert yaml.safe_load(text) == CASES["full-values"]["config"]


def test_notes_tell_where_the_services_are() -> None:
    notes = cr.render()["agentmeter/templates/NOTES.txt"]
    assert "http://agentmeter-limiter.agentmeter.svc:8787" in notes
    assert "http://agentmeter-exporter.agentmeter.svc:9787/metrics" in notes
    assert "agentmeter keys create" in notes
    notes = cr.render(CASES["no-operator-values"])["agentmeter/templates/NOTES.txt"]
    assert "agentmeter-limiter and agentmeter-exporter" in notes


def test_example_policy_reaches_the_job_as_a_mapping_or_verbatim() -> None:
    import yaml

    text = (cr.REPO_ROOT / "examples" / "policy.yaml").read_text(encoding="utf-8")
    for content in (yaml.safe_load(text), text):
        objects = cr.manifests({"policy": {"enabled": True, "content": content}})
        data = cr.one(objects, "ConfigMap", "agentmeter-migration")["data"]["policy.yaml"]
        assert yaml.safe_load(data) == yaml.safe_load(text)
        if isinstance(content, str):
            assert data == text  # comments and layout kept


def test_coder_url_reaches_every_pod_and_the_sync_token_only_the_exporter() -> None:
    objects = cr.manifests(CASES["full-values"])
    limiter = _env(cr.one(objects, "StatefulSet", "meter-limiter")
                   ["spec"]["template"]["spec"]["containers"][0])
    exporter = _env(cr.one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert limiter["AGENTMETER_CODER_URL"] == exporter["AGENTMETER_CODER_URL"] == (
        "https://coder.example.com")
    assert "AGENTMETER_CODER_TOKEN" not in limiter
    assert exporter["AGENTMETER_CODER_TOKEN"] == ("agentmeter-coder", "token", False)
    assert exporter["AGENTMETER_CODER_SYNC_SECONDS"] == "300"


def test_coder_sync_without_a_token_secret_is_refused() -> None:
    helm = cr._helm()
    with pytest.raises(helm.HelmError) as refused:
        cr.render({"coder": {"url": "https://coder.example.com", "syncSeconds": 60}})
    assert "coder.tokenSecret.existingSecret" in str(refused.value)


CODER_WITH_CA = {"url": "https://coder.internal", "syncSeconds": 60,
                 "tokenSecret": {"existingSecret": "agentmeter-coder"},
                 "caBundle": {"secretName": "coder-ca", "key": "bundle.pem"}}


def _pods(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pod spec of every workload the chart renders, by workload name."""
    return {obj["metadata"]["name"]: obj["spec"]["template"]["spec"]
            for obj in cr.manifests(values) if obj["kind"] in ("StatefulSet", "Deployment", "Job")}


def _coder_ca_file(pod: dict[str, Any]) -> str | None:
    """The file the pod's container reads as coder.ca_file, checked against the pod's volumes:
    the path lies in the coder-ca mount and names the one item that volume projects."""
    (container,) = pod["containers"]
    ca_file = _env(container).get("AGENTMETER_CODER_CA_FILE")
    mounts = [m for m in container["volumeMounts"] if m["name"] == "coder-ca"]
    volumes = [v for v in pod["volumes"] if v["name"] == "coder-ca"]
    if ca_file is None:
        assert mounts == [] and volumes == []
        return None
    (mount,), (volume,) = mounts, volumes
    assert mount["readOnly"] is True
    source = volume.get("secret") or volume["configMap"]
    (item,) = source["items"]
    assert ca_file == f"{mount['mountPath']}/{item['path']}"
    return str(ca_file)


def test_a_coder_ca_bundle_is_mounted_where_ca_file_points_in_the_pods_that_call_coder() -> None:
    from agentmeter.config import load_config

    pods = _pods({"coder": CODER_WITH_CA})
    limiter, exporter = pods["agentmeter-limiter"], pods["agentmeter-exporter"]
    assert _coder_ca_file(limiter) == _coder_ca_file(exporter) == (
        "/etc/agentmeter/coder-ca/ca.crt")
    for pod in (limiter, exporter):
        (volume,) = [v for v in pod["volumes"] if v["name"] == "coder-ca"]
        assert volume["secret"] == {"secretName": "coder-ca",
                                    "items": [{"key": "bundle.pem", "path": "ca.crt"}]}
    assert _coder_ca_file(pods["agentmeter-migration"]) is None  # it never calls Coder
    env = _env(limiter["containers"][0])
    config = load_config(environ={name: value for name, value in env.items()
                                  if isinstance(value, str) and name != "AGENTMETER_CONFIG"})
    assert config.coder.ca_file == "/etc/agentmeter/coder-ca/ca.crt"
    assert config.coder.url == "https://coder.internal"


def test_a_coder_ca_bundle_may_come_from_a_configmap() -> None:
    objects = cr.manifests(CASES["full-values"])
    limiter = cr.one(objects, "StatefulSet", "meter-limiter")["spec"]["template"]["spec"]
    assert _coder_ca_file(limiter) == "/etc/agentmeter/coder-ca/ca.crt"
    (volume,) = [v for v in limiter["volumes"] if v["name"] == "coder-ca"]
    assert volume["configMap"] == {"name": "coder-ca-bundle",
                                   "items": [{"key": "ca.pem", "path": "ca.crt"}]}


def test_without_a_coder_ca_bundle_nothing_is_mounted() -> None:
    without_ca = {**CODER_WITH_CA, "caBundle": {"secretName": "", "configMapName": ""}}
    for values in ({}, {"coder": without_ca}):
        for name, pod in _pods(values).items():
            assert _coder_ca_file(pod) is None, name


def test_an_exporter_that_does_not_sync_gets_no_coder_ca_bundle() -> None:
    pods = _pods({"coder": {**CODER_WITH_CA, "syncSeconds": 0}})
    assert _coder_ca_file(pods["agentmeter-limiter"]) == "/etc/agentmeter/coder-ca/ca.crt"
    assert _coder_ca_file(pods["agentmeter-exporter"]) is None


@pytest.mark.parametrize(("ca_bundle", "url", "message"), [
    ({"secretName": "coder-ca", "configMapName": "coder-ca"}, "https://coder.internal",
     "coder.caBundle: set secretName or configMapName, not both"),
    ({"configMapName": "coder-ca"}, "", "coder.caBundle needs coder.url"),
])
def test_a_coder_ca_bundle_that_cannot_work_is_refused(ca_bundle: dict[str, str], url: str,
                                                       message: str) -> None:
    helm = cr._helm()
    with pytest.raises(helm.HelmError) as refused:
        cr.render({"coder": {"url": url, "caBundle": ca_bundle}})
    assert message in str(refused.value)
