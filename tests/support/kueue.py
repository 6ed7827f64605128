"""Kueue beside the test control plane, as a platform team runs it: the manager that
hack/controlplane.sh builds from its module, its CRDs as released, and its webhooks for Jobs and
its own kinds served on 127.0.0.1 with a certificate of the tests' own (Kueue's internal
certificate management off), only the batch/job integration, no visibility API server.

Webhooks for Jobs see only Jobs with a queue name, so the rest of the suite never waits on Kueue."""

import base64
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from tests.support.cluster import Cluster, _certificate, _key, _Process, _url_ok, _write_key, free_port, wait_until

API = "kueue.x-k8s.io/v1beta2"
# The webhooks of the batch/job integration and of Kueue's own kinds; the others (pods,
# deployments, …) would make every such object's creation wait on Kueue.
WEBHOOKS = {"mjob.kb.io", "vjob.kb.io", "mworkload.kb.io", "vworkload.kb.io", "mclusterqueue.kb.io",
            "vclusterqueue.kb.io", "vcohort.kb.io", "mresourceflavor.kb.io", "vresourceflavor.kb.io"}
JOB_WEBHOOKS = {"mjob.kb.io", "vjob.kb.io"}
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITIES = {"low": 10, "high": 1000}  # WorkloadPriorityClasses every test may use


class Kueue:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    def apply(self, *objects: dict) -> None:
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                    "items": list(objects)}))

    def queue(self, namespace: str, gpus: int, name: str = "gpus", cohort: str | None = None) -> str:
        """A ClusterQueue of `gpus` nvidia.com/gpu for this namespace alone (preempting by priority,
        and in a `cohort`, borrowing what the others leave unused and reclaiming its own), and its
        LocalQueue `name` there."""
        cluster_queue = f"cq-{namespace}"
        self.apply(
            {"apiVersion": API, "kind": "ClusterQueue", "metadata": {"name": cluster_queue}, "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                **({"cohortName": cohort} if cohort else {}),
                "preemption": {"withinClusterQueue": "LowerPriority", "reclaimWithinCohort": "Any"},
                "resourceGroups": [{"coveredResources": ["nvidia.com/gpu"], "flavors": [
                    {"name": "default-flavor", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": gpus}]}]}]}},
            {"apiVersion": API, "kind": "LocalQueue", "metadata": {"name": name, "namespace": namespace},
             "spec": {"clusterQueue": cluster_queue}})
        return name


def serving_certificate(folder: Path) -> str:
    """tls.crt and tls.key for 127.0.0.1 in `folder`; returns the CA, base64 (a caBundle)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, leaf_key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kueue-test-ca")])
    ca = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    leaf = _certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kueue-webhook")]), leaf_key, ca_name,
                        ca_key, server=True, sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    (folder / "tls.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    _write_key(folder / "tls.key", leaf_key)
    return base64.b64encode(ca.public_bytes(serialization.Encoding.PEM)).decode()


def webhook_configurations(path: Path, port: int, ca_bundle: str) -> list[dict]:
    """Kueue's webhook configurations, pointed at the local manager."""
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for document in documents:
        document["metadata"]["name"] = "kueue-" + document["metadata"]["name"]
        document["webhooks"] = [w for w in document["webhooks"] if w["name"] in WEBHOOKS]
        for webhook in document["webhooks"]:
            webhook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{webhook['clientConfig']['service']['path']}",
                                       "caBundle": ca_bundle}
            if webhook["name"] in JOB_WEBHOOKS:
                webhook["objectSelector"] = {"matchExpressions": [{"key": QUEUE_LABEL, "operator": "Exists"}]}
    return documents


@pytest.fixture(scope="session")
def kueue(kube_cluster: Cluster, kube_bin: Path, tmp_path_factory) -> Iterator[Kueue]:
    work = tmp_path_factory.mktemp("kueue")
    ca_bundle = serving_certificate(work / "certs")
    kube_cluster.kubectl("apply", "--server-side", "-f", str((kube_bin / "kueue-manifests").resolve()))
    kube_cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    webhook_port, health_port = free_port(), free_port()
    configurations = webhook_configurations(kube_bin / "kueue-webhooks.yaml", webhook_port, ca_bundle)
    config = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(work / "certs")},
        "metrics": {"bindAddress": "0"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": ["batch/job"]},
        "featureGates": {"VisibilityOnDemand": False},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    process = _Process("kueue", [str(kube_bin / "kueue"), f"--config={work / 'config.yaml'}",
                                 f"--kubeconfig={kube_cluster.kubeconfig}", "--zap-log-level=2"],
                       work / "kueue.log", env={"KUEUE_METRICS_CERT_DIR": str(work / "certs")})
    try:
        wait_until("kueue /readyz", lambda: _url_ok(f"http://127.0.0.1:{health_port}/readyz"), alive=[process])
        kube_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(configurations))
        kueue = Kueue(kube_cluster)
        kueue.apply({"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": "default-flavor"}},
                    *({"apiVersion": API, "kind": "WorkloadPriorityClass", "metadata": {"name": name}, "value": value,
                       "description": f"{name} priority"} for name, value in PRIORITIES.items()))
        yield kueue
    finally:
        for configuration in configurations:  # no Job may wait on a stopped Kueue
            kube_cluster.kubectl("delete", configuration["kind"], configuration["metadata"]["name"],
                                 "--ignore-not-found", check=False)
        process.stop()
