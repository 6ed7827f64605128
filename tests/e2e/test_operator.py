"""The operator end to end on the real control plane: kubectl apply → Job → the runner as a
local process on the fake GPU node → MP4 in S3 → status; with real Redis and S3 servers."""

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.cluster import KubeError
from tests.support.services import S3_CREDENTIALS, Server, free_port, s3_client, wait_until
from videogen_runner.progress import ProgressState
from videogen_runner.result import RunResult, VideoOutput

ROOT = Path(__file__).parents[2]
CRD = ROOT / "crds" / "videogenerations.videogen.io.yaml"
BUCKET = "videos"
NAMESPACE = "videogen-system"  # the operator's own
RESYNC_SECONDS = 5  # the operator's periodic pass in these tests; a check that nothing happens waits longer
pytestmark = pytest.mark.cluster


def chart_token(cluster, kube_bin) -> str:
    """A token of the chart's own ServiceAccount, bound by the chart's own RBAC: the operator runs
    with exactly the permissions a `helm install` gives it."""
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    rendered = subprocess.run(
        [str(kube_bin / "helm"), "template", "vg", str(ROOT / "helm" / "videogen"), "--namespace", NAMESPACE,
         "--kube-version", "1.37.2",
         "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"],
        capture_output=True, text=True, check=True, timeout=60).stdout
    cluster.kubectl("apply", "-f", "-", input=rendered)  # each object in its own namespace
    return cluster.kubectl("create", "token", "vg-videogen", "-n", NAMESPACE, "--duration=2h").stdout.strip()


def chart_identity(cluster, kube_bin, folder: Path) -> Path:
    """A kubeconfig holding the chart ServiceAccount's token."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "operator", "user": {"token": chart_token(cluster, kube_bin)}}]
    for context in config["contexts"]:
        context["context"]["user"] = "operator"
    path = folder / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def prepare(cluster, s3_server) -> None:
    """The CRD installed and the bucket made."""
    cluster.kubectl("apply", "--server-side", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/videogenerations.videogen.io", "--timeout=30s")
    client = s3_client(s3_server.endpoint)
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)


def operator_settings(s3_server, redis_server) -> dict[str, str]:
    """The operator's settings in these tests: the test's S3 and Redis, fast resyncs, free ports."""
    return {"VIDEOGEN_S3_ENDPOINT_URL": s3_server.endpoint, "VIDEOGEN_S3_REGION": "us-east-1",
            "VIDEOGEN_S3_BUCKET": BUCKET, "VIDEOGEN_S3_CREDENTIALS_SECRET": "s3-credentials",
            "VIDEOGEN_REDIS_URL": redis_server.url, "VIDEOGEN_PROGRESS_INTERVAL_SECONDS": "0",
            "VIDEOGEN_RESYNC_SECONDS": str(RESYNC_SECONDS),
            "VIDEOGEN_ALLOWED_HOST_PATHS": json.dumps([tempfile.gettempdir()]),
            "VIDEOGEN_METRICS_PORT": str(free_port()), "VIDEOGEN_HEALTH_PORT": str(free_port())}


def healthy(env: dict[str, str]):
    health = f"http://127.0.0.1:{env['VIDEOGEN_HEALTH_PORT']}/healthz"
    return lambda: urllib.request.urlopen(health, timeout=2).status == 200


def local_operator(cluster, kube_bin, s3_server, redis_server, tmp_path_factory, **settings: str) -> Server:
    """The operator as its own process under the chart's identity, started; `settings` override
    the tests' VIDEOGEN_* settings."""
    prepare(cluster, s3_server)
    # The runner command stays the default `videogen-runner`, found on the pod executor's PATH (the
    # test interpreter's folder first): a full path under /tmp would be taken for the pod's /tmp.
    kubeconfig = chart_identity(cluster, kube_bin, tmp_path_factory.mktemp("identity"))
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), **operator_settings(s3_server, redis_server), **settings}
    server = Server("videogen-operator", [sys.executable, "-m", "videogen_operator.main"],
                    int(env["VIDEOGEN_HEALTH_PORT"]), healthy(env), tmp_path_factory.mktemp("operator") / "log", env)
    server.cluster = cluster
    server.start()
    return server


@pytest.fixture(scope="module")
def operator(kube_cluster, kube_bin, pod_executor, redis_server, s3_server, tmp_path_factory):
    server = local_operator(kube_cluster, kube_bin, s3_server, redis_server, tmp_path_factory)
    yield server
    server.stop()
    # Routine events (deleted meanwhile, namespaces being deleted, restarts, outages) are one line each.
    assert "Traceback" not in server.log.read_text(errors="replace")


def namespace_secrets(cluster, namespace: str) -> None:
    """What the chart asks of each tenant namespace: the default S3 credentials Secret."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials"},
              "stringData": {k: v for k, v in S3_CREDENTIALS.items() if k.startswith("AWS_") and "KEY" in k}}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(secret))


def team_namespace(cluster, name: str) -> str:
    """A team's namespace as the chart finds it: its default ServiceAccount and the S3 Secret."""
    api = cluster.api()
    api.create("/api/v1/namespaces", {"metadata": {"name": name}})
    with contextlib.suppress(KubeError):  # unless the controller-manager was quicker
        api.create(f"/api/v1/namespaces/{name}/serviceaccounts", {"metadata": {"name": "default"}})
    namespace_secrets(cluster, name)
    return name


@pytest.fixture
def namespace(kube_namespace, kube_cluster):
    namespace_secrets(kube_cluster, kube_namespace)
    return kube_namespace


def tiny_manifest(tiny_models, name="tiny", **spec) -> dict:
    manifest = yaml.safe_load((ROOT / "examples" / "tiny-cpu.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["model"] = {"preset": "ti2v-5b", "hostPath": str(tiny_models["ti2v-5b"].parent),
                                 "path": tiny_models["ti2v-5b"].name}
    manifest["spec"].update(spec)
    return manifest


def apply(cluster, namespace, manifest):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def get(cluster, namespace, kind, name=None, selector=None):
    args = ["get", kind, "-n", namespace, "-o", "json", *([name] if name else [])]
    args += ["-l", selector] if selector else []
    return json.loads(cluster.kubectl(*args).stdout)


def status_of(cluster, namespace, name):
    return get(cluster, namespace, "vg", name).get("status") or {}


def test_tiny_example_succeeds_with_the_video_in_s3(operator, namespace, tiny_models, s3_server, redis_client):
    cluster = operator.cluster
    apply(cluster, namespace, tiny_manifest(tiny_models, sampling={"steps": 40, "seed": 7}))
    stages, phases = set(), []
    watch = cluster.api().watch(f"/apis/videogen.io/v1alpha1/namespaces/{namespace}/videogenerations", 180,
                                fieldSelector="metadata.name=tiny")
    for event in watch:  # every status the operator wrote, as `kubectl get vg -w` shows them
        status = event["object"].get("status") or {}
        stages.add((status.get("progress") or {}).get("stage"))
        if not phases or phases[-1] != status.get("phase"):
            phases.append(status.get("phase"))
        if status.get("phase") in ("Succeeded", "Failed"):
            watch.close()
            break
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", "vg/tiny", "--timeout=10s")

    status = status_of(cluster, namespace, "tiny")
    assert status["phase"] == "Succeeded", status
    output = status["output"]
    assert output["uri"] == f"s3://{BUCKET}/{namespace}/{namespace}.tiny.mp4"  # under the namespace's folder
    key = f"{namespace}/{namespace}.tiny.mp4"
    body = s3_client(s3_server.endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert output["sha256"] == hashlib.sha256(body).hexdigest() and output["bytes"] == len(body)
    assert (output["frames"], output["width"], output["height"], output["fps"], output["seed"]) == (9, 64, 64, 24, 7)
    assert output["timings"]["denoise"] > 0
    assert status["attempts"] == 1 and status["jobName"] == "videogen-tiny"
    assert status["startTime"] and status["completionTime"] and status["observedGeneration"] == 1
    assert "Running" in phases and phases[-1] == "Succeeded"
    assert {"denoising", "succeeded"} <= stages
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    events = get(cluster, namespace, "events")["items"]
    assert {"JobCreated", "Generated"} <= {e["reason"] for e in events}
    # Every stage went through Redis for outside consumers.
    history = [f["stage"] for _, f in redis_client.xrange(f"videogen:task:{namespace}.tiny:events")]
    assert [s for i, s in enumerate(history) if i == 0 or history[i - 1] != s] == [
        "loading", "encoding", "denoising", "decoding", "exporting", "uploading", "succeeded"]
    printed = cluster.kubectl("get", "vg", "-n", namespace).stdout
    assert "Succeeded" in printed and "ti2v-5b" in printed

    # The Job is the resource's only child and carries none of its labels (GitOps-safe).
    job = get(cluster, namespace, "jobs", "videogen-tiny")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "VideoGeneration"
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [10, 11, 12]


def test_without_redis_the_status_is_still_complete(operator, namespace, tiny_models, redis_server):
    with redis_server.stopped():
        apply(operator.cluster, namespace, tiny_manifest(tiny_models, "no-redis"))
        operator.cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", "vg/no-redis",
                                 "--timeout=180s")
    status = status_of(operator.cluster, namespace, "no-redis")
    assert status["output"]["uri"].endswith(f"/{namespace}/{namespace}.no-redis.mp4")
    assert len(status["output"]["sha256"]) == 64
    assert status["progress"] == {"stage": "succeeded", "percent": 100.0}


def test_progress_available_follows_redis(operator, namespace, tiny_models, redis_server):
    def available(name):
        conditions = {c["type"]: c for c in status_of(operator.cluster, namespace, name).get("conditions", [])}
        return (conditions.get("ProgressAvailable") or {}).get("status"), conditions.get("ProgressAvailable")

    apply(operator.cluster, namespace, tiny_manifest(tiny_models, "held", suspend=True))  # unfinished for good
    wait_until(lambda: available("held")[0] == "True", 60, "ProgressAvailable")
    with redis_server.stopped():
        wait_until(lambda: available("held")[0] == "False", 60, "ProgressAvailable=False")
        assert available("held")[1]["reason"] == "RedisUnavailable"
    wait_until(lambda: available("held")[0] == "True", 60, "ProgressAvailable again")


def metric(operator, line: str) -> float:
    port = operator.env["VIDEOGEN_METRICS_PORT"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(m.split()[-1]) for m in text.splitlines() if m.startswith(line + " "))


def test_metrics_count_jobs_and_transitions(operator, namespace, tiny_models):
    created, suspended = metric(operator, "videogen_jobs_created_total"), metric(
        operator, 'videogen_phase_transitions_total{phase="Suspended"}')
    apply(operator.cluster, namespace, tiny_manifest(tiny_models, "counted", suspend=True))
    operator.cluster.kubectl("wait", "-n", namespace, "--for=condition=Suspended", "vg/counted", "--timeout=60s")
    assert metric(operator, "videogen_jobs_created_total") == created + 1
    assert metric(operator, 'videogen_phase_transitions_total{phase="Suspended"}') == suspended + 1


def test_a_runner_failure_ends_failed_with_its_reason(operator, namespace, tiny_models, tmp_path):
    manifest = tiny_manifest(tiny_models, "missing-model")
    manifest["spec"]["model"] = {"preset": "ti2v-5b", "hostPath": str(tmp_path), "path": "nothing-here"}
    apply(operator.cluster, namespace, manifest)
    operator.cluster.kubectl("wait", "-n", namespace, "--for=condition=Failed", "vg/missing-model", "--timeout=120s")
    status = status_of(operator.cluster, namespace, "missing-model")
    assert status["reason"] == "ModelNotFound" and "model.path" in status["message"]
    assert status["attempts"] == 1  # a permanent exit code is not retried


@pytest.mark.parametrize("name, spec, field", [
    ("bad-key", {"output": {"key": "{task_id}/{secret}.mp4"}}, "spec.output.key"),
    ("own-image", {"runnerImage": "somewhere/else:latest"}, "spec.runnerImage"),
    ("node-secrets", {"model": {"preset": "ti2v-5b", "hostPath": "/var/lib/kubelet", "path": "pods"}},
     "spec.model.hostPath: /var/lib/kubelet is not under an allowed folder"),
    ("jump-the-queue", {"priorityClassName": "system-cluster-critical"}, "spec.priorityClassName"),
    ("bad-selector", {"nodeSelector": {"gpu": "not a label value!"}}, "spec.nodeSelector: Invalid value"),
])
def test_what_only_the_operator_can_judge_is_invalid_spec(operator, namespace, tiny_models, name, spec, field):
    apply(operator.cluster, namespace, tiny_manifest(tiny_models, name, **spec))
    operator.cluster.kubectl("wait", "-n", namespace, "--for=condition=Failed", f"vg/{name}", "--timeout=60s")
    status = status_of(operator.cluster, namespace, name)
    assert status["reason"] == "InvalidSpec" and field in status["message"]
    assert get(operator.cluster, namespace, "jobs")["items"] == []


def test_unschedulable_pods_show_in_status(operator, namespace, tiny_models):
    apply(operator.cluster, namespace, tiny_manifest(tiny_models, "too-big", resources={"gpus": 8}))
    wait_until(lambda: status_of(operator.cluster, namespace, "too-big").get("reason") == "Unschedulable", 60,
               "Unschedulable status")
    status = status_of(operator.cluster, namespace, "too-big")
    assert status["phase"] == "Pending" and "nvidia.com/gpu" in status["message"]


def test_a_pod_refused_by_a_quota_shows_in_status(operator, namespace, tiny_models):
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
             "spec": {"hard": {"pods": "0"}}}
    apply(operator.cluster, namespace, quota)
    apply(operator.cluster, namespace, tiny_manifest(tiny_models, "over-quota"))
    wait_until(lambda: status_of(operator.cluster, namespace, "over-quota").get("reason") == "FailedCreate", 60,
               "FailedCreate status")
    status = status_of(operator.cluster, namespace, "over-quota")
    assert status["phase"] == "Pending" and "quota" in status["message"]


def test_suspend_stops_and_resume_finishes(operator, namespace, tiny_models, redis_client):
    cluster = operator.cluster
    apply(cluster, namespace, tiny_manifest(tiny_models, "pausable", sampling={"steps": 60, "seed": 1}))
    wait_until(lambda: (status_of(cluster, namespace, "pausable").get("progress") or {}).get("stage") == "denoising",
               120, "denoising")
    cluster.kubectl("patch", "vg", "pausable", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_until(lambda: status_of(cluster, namespace, "pausable").get("phase") == "Suspended", 60, "Suspended")
    wait_until(lambda: not get(cluster, namespace, "pods", selector="job-name=videogen-pausable")["items"], 60,
               "the pod gone")
    assert get(cluster, namespace, "jobs", "videogen-pausable")["spec"]["suspend"] is True
    cluster.kubectl("patch", "vg", "pausable", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", "vg/pausable", "--timeout=240s")


def runs_of(redis_client, namespace, name) -> int:
    """How many times a runner started for the resource: its `loading` stages in Redis' history."""
    return [f["stage"] for _, f in redis_client.xrange(f"videogen:task:{namespace}.{name}:events")].count("loading")


def forge_result(redis_client, namespace, name, status="succeeded", updated_at=None) -> None:
    """What a runner of another namespace could write with the shared password (no ACLs): a finished
    state for this resource's task, pointing at its own object."""
    forged = RunResult(task_id=f"{namespace}.{name}", status=status, exit_code=0 if status == "succeeded" else 10,
                       reason=None if status == "succeeded" else "Forged", message="FORGED-BY-B",
                       output=VideoOutput(uri="s3://videos/b/forged.mp4", path="/o", bytes=7, sha256="cd" * 32,
                                          frames=9, width=64, height=64, fps=24) if status == "succeeded" else None)
    state = ProgressState(task_id=forged.task_id, updated_at=updated_at or time.time(), stage=status, status=status,
                          result=forged.model_dump_json(exclude_none=True), message="FORGED-BY-B")
    redis_client.delete(f"videogen:task:{forged.task_id}")
    redis_client.hset(f"videogen:task:{forged.task_id}", mapping=state.to_hash())


def job_succeeded(cluster, namespace, name) -> bool:
    return (get(cluster, namespace, "jobs", f"videogen-{name}").get("status") or {}).get("succeeded") == 1


def test_a_job_finished_during_an_outage_is_read_from_the_api_whatever_redis_says(operator, namespace, tiny_models,
                                                                                   redis_client, s3_server):
    cluster = operator.cluster
    apply(cluster, namespace, tiny_manifest(tiny_models, "outage", sampling={"steps": 40, "seed": 3},
                                            ttlSecondsAfterFinished=0))
    wait_until(lambda: status_of(cluster, namespace, "outage").get("phase") == "Running", 120, "Running")
    with operator.stopped():  # the Job completes while no operator runs; another tenant forges its result
        wait_until(lambda: job_succeeded(cluster, namespace, "outage"), 180, "the Job complete")
        time.sleep(3)  # a TTL of 0 would have removed it by now: it has none until its outcome is recorded
        assert job_succeeded(cluster, namespace, "outage")
        forge_result(redis_client, namespace, "outage")
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", "vg/outage", "--timeout=60s")
    status = status_of(cluster, namespace, "outage")
    key = f"{namespace}/{namespace}.outage.mp4"
    body = s3_client(s3_server.endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert status["output"]["uri"] == f"s3://{BUCKET}/{key}" and status["attempts"] == 1
    assert status["output"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert "FORGED" not in json.dumps(status)
    wait_until(lambda: not get(cluster, namespace, "jobs")["items"], 60, "the Job removed by its TTL, once recorded")
    time.sleep(RESYNC_SECONDS + 3)  # a periodic pass and more: time enough for a second Job, if any were made
    assert get(cluster, namespace, "jobs")["items"] == [] and runs_of(redis_client, namespace, "outage") == 1


def test_a_job_deleted_by_hand_during_an_outage_ends_job_lost(operator, namespace, tiny_models, redis_client):
    """Its outcome was never recorded and the Job that held it is gone: Failed with a clear reason,
    whatever Redis says, and the video is not generated a second time (the operator reads no S3)."""
    cluster = operator.cluster
    apply(cluster, namespace, tiny_manifest(tiny_models, "forgotten", sampling={"steps": 40, "seed": 3}))
    wait_until(lambda: status_of(cluster, namespace, "forgotten").get("phase") == "Running", 120, "Running")
    with operator.stopped():
        wait_until(lambda: job_succeeded(cluster, namespace, "forgotten"), 180, "the Job complete")
        cluster.kubectl("delete", "job", "videogen-forgotten", "-n", namespace, "--wait=true", "--timeout=30s")
        forge_result(redis_client, namespace, "forgotten")
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Failed", "vg/forgotten", "--timeout=60s")
    status = status_of(cluster, namespace, "forgotten")
    assert (status["phase"], status["reason"], status["attempts"]) == ("Failed", "JobLost", 1)
    assert "not generated again" in status["message"] and "output" not in status
    time.sleep(RESYNC_SECONDS + 3)  # a periodic pass and more: time enough for a second Job, if any were made
    assert get(cluster, namespace, "jobs")["items"] == [] and runs_of(redis_client, namespace, "forgotten") == 1


@pytest.mark.parametrize("planted", ["succeeded", "failed"])
def test_a_result_planted_before_the_resource_exists_decides_nothing(operator, namespace, tiny_models, redis_client,
                                                                     s3_server, planted):
    """Task ids are predictable (<namespace>.<name>): another tenant plants a finished state, stamped
    in the future, before the resource is created. The resource runs its own Job to its own outcome."""
    cluster = operator.cluster
    name = f"planted-{planted}"
    forge_result(redis_client, namespace, name, planted, updated_at=time.time() + 10**6)
    apply(cluster, namespace, tiny_manifest(tiny_models, name))
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", f"vg/{name}", "--timeout=120s")
    status = status_of(cluster, namespace, name)
    key = f"{namespace}/{namespace}.{name}.mp4"
    body = s3_client(s3_server.endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert status["output"]["sha256"] == hashlib.sha256(body).hexdigest() and "FORGED" not in json.dumps(status)
    assert runs_of(redis_client, namespace, name) == 1


def test_killing_the_active_replica_mid_run_leaves_one_job(operator, namespace, tiny_models, redis_client,
                                                            tmp_path):
    cluster = operator.cluster
    standby_env = {**operator.env, "POD_ID": "standby", "VIDEOGEN_METRICS_PORT": str(free_port()),
                   "VIDEOGEN_HEALTH_PORT": str(free_port())}
    standby = Server("videogen-operator-standby", operator.command, int(standby_env["VIDEOGEN_HEALTH_PORT"]),
                     healthy(standby_env), tmp_path / "standby.log", standby_env)
    standby.start()
    try:
        apply(cluster, namespace, tiny_manifest(tiny_models, "failover", sampling={"steps": 60, "seed": 5}))
        wait_until(lambda: (status_of(cluster, namespace, "failover").get("progress") or {}).get("stage")
                   == "denoising", 120, "denoising")
        job_uid = get(cluster, namespace, "jobs", "videogen-failover")["metadata"]["uid"]
        operator.process.kill()  # no clean shutdown: the standby waits for the Lease to expire
        operator.process.wait(10)
        killed = time.monotonic()
        wait_until(lambda: "the Lease" in (tmp_path / "standby.log").read_text(), 30, "the standby leading")
        assert time.monotonic() - killed <= 15
        cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", "vg/failover", "--timeout=180s")
        jobs = get(cluster, namespace, "jobs")["items"]
        assert [j["metadata"]["uid"] for j in jobs] == [job_uid] and runs_of(redis_client, namespace, "failover") == 1
        assert status_of(cluster, namespace, "failover")["attempts"] == 1
    finally:
        operator.process = None
        operator.start()
        standby.stop()


def test_restart_during_a_run_creates_no_second_job_and_delete_cleans_up(operator, namespace, tiny_models,
                                                                          redis_client):
    cluster = operator.cluster
    apply(cluster, namespace, tiny_manifest(tiny_models, "restarted", sampling={"steps": 60, "seed": 2}))
    wait_until(lambda: status_of(cluster, namespace, "restarted").get("phase") == "Running", 120, "Running")
    operator.stop()
    operator.start()  # resumes every resource while its Job runs: no other Job, no second run
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", "vg/restarted", "--timeout=180s")
    jobs = get(cluster, namespace, "jobs")["items"]
    assert [j["metadata"]["name"] for j in jobs] == ["videogen-restarted"]
    assert runs_of(redis_client, namespace, "restarted") == 1
    assert status_of(cluster, namespace, "restarted")["attempts"] == 1

    cluster.kubectl("delete", "vg", "restarted", "-n", namespace, "--wait=true", "--timeout=30s")
    wait_until(lambda: not get(cluster, namespace, "jobs")["items"], 60, "the Job garbage-collected")
    wait_until(lambda: not get(cluster, namespace, "pods")["items"], 60, "the pods garbage-collected")
