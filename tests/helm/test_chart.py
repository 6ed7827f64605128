"""The Helm chart, rendered by real helm and checked by a real kube-apiserver."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
CHART = ROOT / "helm" / "videogen"
KUBE_VERSION = "1.37.2"


def helm(kube_bin, *args, check=True):
    result = subprocess.run([str(kube_bin / "helm"), *args], capture_output=True, text=True, timeout=60)
    if check and result.returncode:
        raise AssertionError(result.stderr)
    return result


def render(kube_bin, *sets) -> list[dict]:
    args = ["template", "vg", str(CHART), "--namespace", "videogen-system", "--kube-version", KUBE_VERSION]
    for value in sets:
        args += ["--set", value]
    return [d for d in yaml.safe_load_all(helm(kube_bin, *args).stdout) if d]


def for_tenants(document: dict) -> bool:
    """The roles for the teams (aggregated into admin, edit and view), not the operator's."""
    return any(label.startswith("rbac.authorization.k8s.io/aggregate-to-")
               for label in document["metadata"].get("labels") or {})


def operators(documents: list[dict]) -> list[dict]:
    """What the chart installs for the operator itself."""
    return [d for d in documents if not for_tenants(d)]


def test_generated_files_are_current():
    """values.schema.json and the chart's README follow values.yaml's values and comments."""
    assert subprocess.run([sys.executable, str(ROOT / "hack" / "helm_schema.py"), "--check"]).returncode == 0, \
        "run hack/generate.sh"
    assert (CHART / "files" / "videogenerations.videogen.io.yaml").read_text() == \
        (ROOT / "crds" / "videogenerations.videogen.io.yaml").read_text(), "run hack/generate.sh"


def test_lint_strict(kube_bin):
    helm(kube_bin, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)


def test_a_misspelt_value_fails(kube_bin):
    result = helm(kube_bin, "template", "vg", str(CHART), "--kube-version", KUBE_VERSION,
                  "--set", "operator.replica=2", check=False)
    assert result.returncode != 0 and "replica" in result.stderr


@pytest.mark.parametrize("value", ["operator.replicas=-1", "operator.resyncSeconds=0"])
def test_values_the_operator_cannot_run_with_are_refused(kube_bin, value):
    """A negative number of replicas means nothing; a 0 s resync would spin."""
    result = helm(kube_bin, "template", "vg", str(CHART), "--kube-version", KUBE_VERSION, "--set", value, check=False)
    assert result.returncode != 0 and value.split(".")[1].split("=")[0] in result.stderr


def test_defaults_watch_the_cluster_and_keep_the_crd(kube_bin):
    docs = {d["kind"]: d for d in operators(render(kube_bin))}
    assert docs["CustomResourceDefinition"]["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep", "argocd.argoproj.io/sync-options": "Delete=false,Prune=false"}
    assert "ClusterRole" in docs and docs["Role"]["metadata"]["namespace"] == "kube-system"  # the Lease's alone
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VIDEOGEN_NAMESPACES"] == "[]" and env["VIDEOGEN_RUNNER_IMAGE"] == "videogen-runner:0.1.0"
    pod_id = next(e for e in container["env"] if e["name"] == "POD_ID")  # kopf's identity, not the passwd database
    assert pod_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    rules = docs["ClusterRole"]["rules"]
    assert not any("secrets" in r["resources"] for r in rules)  # the operator never reads a Secret


def test_settings_reach_the_operator(kube_bin):
    docs = render(kube_bin, "operator.watchNamespaces={team-a,team-b}", "s3.endpointUrl=http://minio:9000",
                  "s3.bucket=videos", "redis.url=redis://redis:6379/0", "redis.operatorPasswordSecret=redis-auth",
                  "crds.enabled=false", "runner.defaultMemory=96Gi", "operator.resyncSeconds=30",
                  "runner.allowedPriorityClasses={batch-low}", "runner.serviceAccountName=s3-writer",
                  "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom",
                  "operator.priorityClassName=system-cluster-critical", "runner.checkpointClaim=vg-checkpoints",
                  "runner.checkpointSeconds=0")
    kinds = [d["kind"] for d in docs]
    assert "CustomResourceDefinition" not in kinds and kinds.count("Role") == 2
    [discovery] = [d for d in operators(docs) if d["kind"] == "ClusterRole"]  # cluster-wide, what kopf discovers
    assert {tuple(r["resources"]) for r in discovery["rules"]} == {("customresourcedefinitions",), ("namespaces",)}
    assert all(r["verbs"] == ["list", "watch"] for r in discovery["rules"])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["VIDEOGEN_NAMESPACES"]["value"]) == ["team-a", "team-b"]
    assert env["VIDEOGEN_S3_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert env["VIDEOGEN_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "redis-auth"
    assert env["VIDEOGEN_DEFAULT_MEMORY"]["value"] == "96Gi" and "VIDEOGEN_DEFAULT_CPU" not in env
    assert float(env["VIDEOGEN_RESYNC_SECONDS"]["value"]) == 30
    assert json.loads(env["VIDEOGEN_ALLOWED_PRIORITY_CLASSES"]["value"]) == ["batch-low"]
    assert env["VIDEOGEN_RUNNER_SERVICE_ACCOUNT"]["value"] == "s3-writer"
    assert env["VIDEOGEN_CHECKPOINT_CLAIM"]["value"] == "vg-checkpoints"
    assert float(env["VIDEOGEN_CHECKPOINT_SECONDS"]["value"]) == 0  # 0 is a setting: no checkpoints
    assert float(env["VIDEOGEN_UPLOAD_RETRY_SECONDS"]["value"]) == 300
    assert deployment["spec"]["template"]["spec"]["priorityClassName"] == "system-cluster-critical"
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    service = next(d for d in docs if d["kind"] == "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_the_schema_carries_the_comments_and_defaults_of_values_yaml():
    schema = json.loads((CHART / "values.schema.json").read_text())
    cpu = schema["properties"]["runner"]["properties"]["defaultCpu"]
    assert "quantity" in cpu["description"] and cpu["default"] == ""
    assert "runner.defaultCpu" in (CHART / "README.md").read_text()


def test_numbers_given_with_set_are_quantities(kube_bin):
    deployment = next(d for d in render(kube_bin, "runner.defaultCpu=8", "runner.scratchSize=64")
                      if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VIDEOGEN_DEFAULT_CPU"] == "8" and env["VIDEOGEN_SCRATCH_SIZE"] == "64"


def test_the_crd_is_labelled_as_the_crd(kube_bin):
    docs = {d["kind"]: d for d in render(kube_bin)}
    crd_labels = docs["CustomResourceDefinition"]["metadata"]["labels"]
    selector = docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert crd_labels["app.kubernetes.io/component"] == "crd" and not selector.items() <= crd_labels.items()


def test_names_pod_settings_extra_env_and_volumes_are_configurable(kube_bin):
    volume = "operator.extraVolumes[0].name=ca,operator.extraVolumes[0].configMap.name=s3-ca"
    docs = render(kube_bin, "fullnameOverride=video-operator", "operator.podSecurityContext.runAsUser=1000",
                  "operator.securityContext.readOnlyRootFilesystem=false", volume,
                  "operator.extraVolumeMounts[0].name=ca,operator.extraVolumeMounts[0].mountPath=/etc/s3-ca",
                  "operator.extraEnv[0].name=AWS_CA_BUNDLE,operator.extraEnv[0].value=/etc/s3-ca/ca.crt")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["metadata"]["name"] == "video-operator"
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    assert pod["volumes"] == [{"name": "ca", "configMap": {"name": "s3-ca"}}]
    assert container["volumeMounts"] == [{"name": "ca", "mountPath": "/etc/s3-ca"}]
    assert {"name": "AWS_CA_BUNDLE", "value": "/etc/s3-ca/ca.crt"} in container["env"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert [d["metadata"]["name"] for d in operators(docs) if d["kind"] == "ClusterRole"] == \
        ["videogen-system-video-operator"]
    names = {d["metadata"]["name"] for d in render(kube_bin, "nameOverride=vgen")}
    assert "vg-vgen" in names


@pytest.mark.cluster
def test_two_teams_install_releases_of_the_same_name(kube_apiserver, kube_bin):
    """Cluster-scoped names carry the release's namespace; one release owns the CRD. The first may
    take over the CRD that other tests applied; the second takes over nothing (a clash of names
    would fail its install: "exists and cannot be imported")."""
    k = kube_apiserver
    for team, crds, adopt in [("team-a", "true", ["--take-ownership"]), ("team-b", "false", [])]:
        k.kubectl("create", "namespace", team, check=False)
        result = helm(kube_bin, "install", "vg", str(CHART), "--kubeconfig", str(k.kubeconfig), "--namespace", team,
                      "--set", "operator.replicas=0", "--set", f"crds.enabled={crds}", "--set",
                      f"operator.watchNamespaces={{{team}}}", *adopt)
        assert "kubectl get vg -w" in result.stdout  # NOTES.txt
    roles = k.kubectl("get", "clusterroles", "-o", "name").stdout.split()
    assert {"clusterrole.rbac.authorization.k8s.io/team-a-vg-videogen-discovery",
            "clusterrole.rbac.authorization.k8s.io/team-b-vg-videogen-discovery"} <= set(roles)
    for team in ("team-a", "team-b"):
        helm(kube_bin, "uninstall", "vg", "--kubeconfig", str(k.kubeconfig), "--namespace", team)


@pytest.mark.cluster
def test_installs_and_grants_the_operator_exactly_what_it_needs(kube_apiserver, kube_bin, kube_namespace):
    k = kube_apiserver
    helm(kube_bin, "install", "vg", str(CHART), "--kubeconfig", str(k.kubeconfig), "--namespace", kube_namespace,
         "--set", "operator.replicas=0", "--take-ownership")
    assert k.kubectl("get", "crd", "videogenerations.videogen.io").returncode == 0
    account = f"system:serviceaccount:{kube_namespace}:vg-videogen"
    allowed = [("create", "jobs.batch"), ("watch", "pods"),
               ("list", "videogenerations.videogen.io"), ("create", "events"), ("list", "events")]
    for verb, resource in allowed:
        answer = k.kubectl("auth", "can-i", verb, resource, "--as", account, "-n", "default", check=False).stdout
        assert answer.strip() == "yes", (verb, resource)
    for verb, resource in [("get", "secrets"), ("create", "pods"), ("delete", "videogenerations.videogen.io"),
                           ("update", "videogenerations.videogen.io")]:
        answer = k.kubectl("auth", "can-i", verb, resource, "--as", account, "-n", "default", check=False).stdout
        assert answer.strip() == "no", (verb, resource)
    helm(kube_bin, "uninstall", "vg", "--kubeconfig", str(k.kubeconfig), "--namespace", kube_namespace)
    assert k.kubectl("get", "crd", "videogenerations.videogen.io").returncode == 0  # kept


def test_two_replicas_by_default_with_a_disruption_budget(kube_bin):
    docs = {d["kind"]: d for d in render(kube_bin)}
    assert docs["Deployment"]["spec"]["replicas"] == 2
    assert docs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == \
        docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert "PodDisruptionBudget" not in {d["kind"] for d in render(kube_bin, "operator.replicas=1")}
