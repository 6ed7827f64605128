"""The control plane itself: a real API server that serves CRDs and reports its version."""

import json
import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.videogen.dev
spec:
  group: test.videogen.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1}
            status:
              type: object
              properties:
                phase: {type: string}
"""


@pytest.mark.skipif(bool(os.environ.get("VIDEOGEN_TEST_KUBECONFIG")
                         or os.environ.get("KUBEBUILDER_ASSETS")),
                    reason="the API server is not one built by hack/controlplane.sh")
def test_server_reports_the_pinned_version(kube_apiserver):
    go_mod = (Path(__file__).parents[2] / "hack/controlplane/kube/go.mod").read_text()
    pinned = re.search(r"^require k8s.io/kubernetes (\S+)$", go_mod, re.M).group(1)
    version = json.loads(kube_apiserver.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == pinned
    assert version["clientVersion"]["gitVersion"] == pinned


def test_crd_objects_round_trip(kube_apiserver, kube_namespace):
    kube_apiserver.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    kube_apiserver.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                           "crd/widgets.test.videogen.dev")
    widget = ("apiVersion: test.videogen.dev/v1\nkind: Widget\n"
              "metadata: {name: w1}\nspec: {size: 3}\n")
    kube_apiserver.kubectl("-n", kube_namespace, "apply", "-f", "-", input=widget)
    got = json.loads(kube_apiserver.kubectl("-n", kube_namespace, "get", "widget", "w1",
                                            "-o", "json").stdout)
    assert got["spec"] == {"size": 3}

    invalid = widget.replace("w1", "w2").replace("size: 3", "size: 0")
    rejected = kube_apiserver.kubectl("-n", kube_namespace, "apply", "-f", "-", input=invalid,
                                      check=False)
    assert rejected.returncode != 0 and "spec.size" in rejected.stderr
