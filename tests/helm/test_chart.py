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


def test_generated_files_are_current():
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


@pytest.mark.parametrize("value", ["operator.replicas=2", "operator.resyncSeconds=0"])
def test_values_the_operator_cannot_run_with_are_refused(kube_bin, value):
    """No leader election: two replicas would both handle every resource; a 0 s resync would spin."""
    result = helm(kube_bin, "template", "vg", str(CHART), "--kube-version", KUBE_VERSION, "--set", value, check=False)
    assert result.returncode != 0 and value.split(".")[1].split("=")[0] in result.stderr


def test_defaults_watch_the_cluster_and_keep_the_crd(kube_bin):
    docs = {d["kind"]: d for d in render(kube_bin)}
    assert docs["CustomResourceDefinition"]["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep", "argocd.argoproj.io/sync-options": "Delete=false,Prune=false"}
    assert "ClusterRole" in docs and "Role" not in docs
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
                  "operator.priorityClassName=system-cluster-critical")
    kinds = [d["kind"] for d in docs]
    assert "CustomResourceDefinition" not in kinds and kinds.count("Role") == 2
    [discovery] = [d for d in docs if d["kind"] == "ClusterRole"]  # cluster-wide, only what kopf discovers
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
    assert deployment["spec"]["template"]["spec"]["priorityClassName"] == "system-cluster-critical"
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    service = next(d for d in docs if d["kind"] == "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


@pytest.mark.cluster
def test_installs_and_grants_the_operator_exactly_what_it_needs(kube_apiserver, kube_bin, kube_namespace):
    k = kube_apiserver
    helm(kube_bin, "install", "vg", str(CHART), "--kubeconfig", str(k.kubeconfig), "--namespace", kube_namespace,
         "--set", "operator.replicas=0", "--take-ownership")
    assert k.kubectl("get", "crd", "videogenerations.videogen.io").returncode == 0
    account = f"system:serviceaccount:{kube_namespace}:vg-videogen"
    allowed = [("create", "jobs.batch"), ("patch", "videogenerations.videogen.io/status"), ("watch", "pods"),
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
