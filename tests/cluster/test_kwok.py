"""Scale smoke: many fake nodes and pods through the real scheduler and controllers, simulated
by kwok (nothing runs)."""

import json

import pytest

from tests.support.cluster import KWOK_ANNOTATION

pytestmark = pytest.mark.cluster

NODES, REPLICAS = 20, 50


def test_fifty_pods_run_on_twenty_kwok_nodes(kwok, kube_namespace):
    names = [f"kwok-{kube_namespace}-{i}" for i in range(NODES)]
    nodes = {"apiVersion": "v1", "kind": "List", "items": [{
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {KWOK_ANNOTATION: "fake"},
                     "labels": {"type": "kwok", "kubernetes.io/hostname": name}},
        "spec": {"taints": [{"key": KWOK_ANNOTATION, "value": "fake", "effect": "NoSchedule"}]},
    } for name in names]}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fake"},
        "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "fake"}},
                 "template": {"metadata": {"labels": {"app": "fake"}}, "spec": {
                     "nodeSelector": {"type": "kwok"},
                     "tolerations": [{"key": KWOK_ANNOTATION, "operator": "Exists"}],
                     "containers": [{"name": "main", "image": "ignored.local/nothing"}]}}},
    }
    try:
        kwok.kubectl("apply", "-f", "-", input=json.dumps(nodes))
        kwok.kubectl("wait", "--for=condition=Ready", "--timeout=60s",
                     *(f"node/{name}" for name in names))
        kwok.kubectl("-n", kube_namespace, "apply", "-f", "-", input=json.dumps(deployment))
        kwok.kubectl("-n", kube_namespace, "rollout", "status", "deployment/fake",
                     "--timeout=120s", timeout=150)
        pods = json.loads(kwok.kubectl("-n", kube_namespace, "get", "pods", "-o", "json").stdout)
        running = [p for p in pods["items"] if p["status"].get("phase") == "Running"]
        assert len(running) == REPLICAS
        assert {p["spec"]["nodeName"] for p in running} <= set(names)
    finally:
        kwok.kubectl("delete", "--wait=false", "--ignore-not-found",
                     *(f"node/{name}" for name in names))
