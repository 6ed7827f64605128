"""The operator from its image, as the chart's Deployment runs it: the chart's command, env and
user, every capability dropped, a read-only root filesystem, and the API reached as a pod
reaches it (the in-cluster config: the chart ServiceAccount's token, the CA and the namespace
mounted at /var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST/PORT); the
runner's pods run on the local pod executor."""

import base64
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.e2e import test_operator
from tests.e2e.test_operator import (
    NAMESPACE,
    ROOT,
    apply,
    chart_token,
    healthy,
    operator_settings,
    prepare,
    status_of,
    tiny_manifest,
)
from tests.support.images import Container, Mount
from tests.support.services import Server, wait_until

pytestmark = pytest.mark.cluster
namespace = test_operator.namespace  # the fixture: a test namespace with the S3 credentials' Secret
SERVICE_ACCOUNT = "/run/secrets/kubernetes.io/serviceaccount"  # /var/run links to /run


def chart_pod(kube_bin) -> dict:
    rendered = subprocess.run(
        [str(kube_bin / "helm"), "template", "vg", str(ROOT / "helm" / "videogen"), "--namespace", NAMESPACE,
         "--kube-version", "1.37.2", "--show-only", "templates/deployment.yaml"],
        capture_output=True, text=True, check=True, timeout=60).stdout
    return yaml.safe_load(rendered)["spec"]["template"]["spec"]


def service_account_volume(cluster, kube_bin, folder: Path) -> Path:
    """What the kubelet mounts for the pod's ServiceAccount."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    (folder / "token").write_text(chart_token(cluster, kube_bin))
    (folder / "ca.crt").write_bytes(base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]))
    (folder / "namespace").write_text(NAMESPACE)
    for path in [folder, *folder.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


@pytest.fixture(scope="module")
def operator_in_image(kube_cluster, kube_bin, pod_executor, redis_server, s3_server, images, tmp_path_factory):
    prepare(kube_cluster, s3_server)
    pod = chart_pod(kube_bin)
    [spec] = pod["containers"]
    # What this run emulates of the chart's settings must be what the chart asks for.
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    server_url = urlparse(kube_cluster.server)
    env = {e["name"]: e["value"] for e in spec["env"] if "value" in e}
    env |= {"POD_ID": "vg-videogen-0", "KUBERNETES_SERVICE_HOST": server_url.hostname,
            "KUBERNETES_SERVICE_PORT": str(server_url.port), **operator_settings(s3_server, redis_server)}
    volume = service_account_volume(kube_cluster, kube_bin, tmp_path_factory.mktemp("serviceaccount"))
    account = f"system:serviceaccount:{NAMESPACE}:vg-videogen"  # the RBAC just applied, in force
    wait_until(lambda: kube_cluster.kubectl("auth", "can-i", "watch", "videogenerations.videogen.io", "--as",
                                            account, check=False).stdout.strip() == "yes", 30, "the chart's RBAC")
    container = Container(images, images.operator)
    command = container.command(spec["command"], user=user, env=env, mounts=[Mount(volume, SERVICE_ACCOUNT)])
    server = Server("videogen-operator (image)", command, int(env["VIDEOGEN_HEALTH_PORT"]), healthy(env),
                    tmp_path_factory.mktemp("operator-image") / "log")
    server.cluster = kube_cluster
    try:
        server.start()
        yield server
    finally:
        server.stop()
        container.remove()


def test_the_tiny_example_succeeds_with_the_operator_in_its_image(operator_in_image, namespace, tiny_models):
    cluster = operator_in_image.cluster
    apply(cluster, namespace, tiny_manifest(tiny_models, "from-image"))
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", "vg/from-image", "--timeout=180s",
                    timeout=200)
    status = status_of(cluster, namespace, "from-image")
    assert status["output"]["uri"].endswith(f"{namespace}.from-image.mp4") and status["attempts"] == 1
    log = operator_in_image.log.read_text()
    assert "getpwuid" not in log and "Traceback" not in log
