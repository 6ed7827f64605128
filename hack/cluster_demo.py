"""The whole system on this machine, for a newcomer (`bash hack/cluster-demo.sh`): the test
control plane (etcd, kube-apiserver, controller-manager, scheduler, a fake GPU node whose pods
run as local processes), redis-server, an S3 server and the operator under the chart's RBAC,
all from the test fixtures; then examples/tiny-cpu.yaml applied and followed to Succeeded, and
its MP4 fetched from S3. Run through pytest (the fixtures start and stop everything):

    python -m pytest -s -q -p tests.support.services -p tests.support.cluster hack/cluster_demo.py
"""

import os
from pathlib import Path

from tests.e2e import test_operator
from tests.e2e.test_operator import BUCKET, apply, get, tiny_manifest
from tests.support.services import s3_client

operator = test_operator.operator  # the fixtures: the operator, and a namespace with S3 credentials
namespace = test_operator.namespace
OUTPUT = Path(os.environ.get("VIDEOGEN_DEMO_OUTPUT", "tiny-cluster.mp4")).resolve()


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def test_the_tiny_example_from_apply_to_mp4(operator, namespace, tiny_models, s3_server):
    cluster = operator.cluster
    say(f"control plane {cluster.server} (kubeconfig {cluster.kubeconfig}), S3 {s3_server.endpoint}, "
        f"operator log {operator.log}")
    say(f"kubectl apply -n {namespace} -f examples/tiny-cpu.yaml (its model: a tiny random-weight TI2V-5B)")
    apply(cluster, namespace, tiny_manifest(tiny_models))
    watch = cluster.api().watch(f"/apis/videogen.io/v1alpha1/namespaces/{namespace}/videogenerations", 300,
                                fieldSelector="metadata.name=tiny")
    shown = None
    for event in watch:  # what `kubectl get vg -w` shows, one line per change
        status = event["object"].get("status") or {}
        progress = status.get("progress") or {}
        line = {"phase": status.get("phase"), "reason": status.get("reason"), "stage": progress.get("stage"),
                "percent": progress.get("percent")}
        if line != shown:
            say("tiny: " + (" ".join(f"{k} {v}" for k, v in line.items() if v is not None) or "no status yet"))
            shown = line
        if status.get("phase") in ("Succeeded", "Failed"):
            watch.close()
            break
    print(cluster.kubectl("get", "vg", "-n", namespace, "-o", "wide").stdout, flush=True)
    status = get(cluster, namespace, "vg", "tiny")["status"]
    assert status["phase"] == "Succeeded", status
    uri = status["output"]["uri"]
    key = uri.removeprefix(f"s3://{BUCKET}/")
    OUTPUT.write_bytes(s3_client(s3_server.endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read())
    say(f"the MP4 is {uri} ({status['output']['bytes']} bytes, sha256 {status['output']['sha256'][:12]}…); "
        f"a copy is in {OUTPUT}")
