"""No GPU work thrown away, on the real control plane: a runner pod deleted mid-denoise (SIGTERM,
no disruption condition) is retried by its Job and the next pod resumes from its checkpoint,
making the video an uninterrupted run makes; S3 unreachable for 30 s around the upload is waited
out by the same pod. The operator runs under the chart's identity with short checkpoint intervals
(tiny models denoise in milliseconds a step)."""

import json
import time

import pytest

from tests.e2e.test_operator import apply, get, local_operator, status_of, tiny_manifest
from tests.e2e.test_operator import namespace as namespace  # noqa: F401 - the fixture
from tests.support.services import Outage, wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def s3_path(s3_server):
    """The operator's S3 endpoint, through a path the tests can cut."""
    return Outage(int(s3_server.endpoint.rsplit(":", 1)[1]))


@pytest.fixture(scope="module")
def operator(kube_cluster, kube_bin, pod_executor, redis_server, s3_server, s3_path, tmp_path_factory):
    server = local_operator(kube_cluster, kube_bin, s3_server, redis_server, tmp_path_factory,
                            VIDEOGEN_S3_ENDPOINT_URL=s3_path.endpoint, VIDEOGEN_CHECKPOINT_SECONDS="0.05")
    yield server
    server.stop()


def runner_result(redis_client, namespace, name) -> dict:
    return json.loads(redis_client.hget(f"videogen:task:{namespace}.{name}", "result"))


def step_of(redis_client, namespace, name) -> int:
    return int(redis_client.hget(f"videogen:task:{namespace}.{name}", "step") or 0)


def test_a_pod_stopped_mid_denoise_is_resumed_by_the_next_one(operator, namespace, tiny_models, redis_client):
    cluster = operator.cluster
    spec = {"sampling": {"steps": 60, "seed": 11}, "retries": 1}
    apply(cluster, namespace, tiny_manifest(tiny_models, "whole", **spec))
    apply(cluster, namespace, tiny_manifest(tiny_models, "stopped", **spec))

    wait_until(lambda: step_of(redis_client, namespace, "stopped") >= 20, 180, "step 20 of the run to stop")
    cluster.kubectl("delete", "pod", "-n", namespace, "-l", "job-name=videogen-stopped", "--wait=false")

    for name in ("whole", "stopped"):
        cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", f"vg/{name}", "--timeout=240s")
    whole, stopped = status_of(cluster, namespace, "whole"), status_of(cluster, namespace, "stopped")
    assert stopped["output"]["sha256"] == whole["output"]["sha256"]  # the very same video
    resumed = runner_result(redis_client, namespace, "stopped")
    assert resumed["resumed_from_step"] >= 20 and runner_result(redis_client, namespace, "whole").get(
        "resumed_from_step") is None
    assert stopped["output"]["resumedFromStep"] == resumed["resumed_from_step"] and "resumedFromStep" not in whole[
        "output"]
    assert stopped["attempts"] == 2  # a plain SIGTERM counts against retries (docs/operator.md)
    job = get(cluster, namespace, "jobs", "videogen-stopped")
    assert (job["status"].get("failed"), job["status"].get("succeeded")) == (1, 1)


def test_s3_unreachable_for_30_s_around_the_upload_is_waited_out(operator, namespace, tiny_models, redis_client,
                                                                 s3_path):
    cluster = operator.cluster
    apply(cluster, namespace, tiny_manifest(tiny_models, "outage", sampling={"steps": 8, "seed": 3}))
    wait_until(lambda: redis_client.hget(f"videogen:task:{namespace}.outage", "stage") == "denoising", 180,
               "denoising")
    with s3_path.cut():
        time.sleep(30)
        assert status_of(cluster, namespace, "outage")["phase"] == "Running"
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", "vg/outage", "--timeout=240s")
    status = status_of(cluster, namespace, "outage")
    assert status["attempts"] == 1 and status["output"]["timings"]["upload"] > 5
    history = [f["stage"] for _, f in redis_client.xrange(f"videogen:task:{namespace}.outage:events")]
    assert history.count("loading") == 1 and "succeeded" == history[-1]  # generated once
