"""The Job builder and the request it carries: plain dicts, compared on what matters."""

import json

import pytest
from pydantic import ValidationError

from videogen_operator.job import build_job, build_request, job_name, job_ttl, resource_field, spec_message, task_id
from videogen_operator.models import VideoGenerationSpec
from videogen_operator.settings import Settings

SETTINGS = Settings(runner_image="runner:1", s3_bucket="videos", s3_endpoint_url="http://s3:9000",
                    s3_credentials_secret="s3-creds", redis_url="redis://redis:6379/0",
                    redis_password_secret="redis-auth", job_ttl_seconds=3600)


def body(**spec):
    return {"apiVersion": "videogen.io/v1alpha1", "kind": "VideoGeneration",
            "metadata": {"name": "fox", "namespace": "team-a", "uid": "u-1",
                         "labels": {"argocd.argoproj.io/instance": "x"}},
            "spec": {"model": {"preset": "t2v-a14b", "pvc": {"claimName": "models"}, "path": "Wan2.2-T2V-A14B"},
                     "prompt": "a fox", **spec}}


def build(**spec):
    b = body(**spec)
    parsed = VideoGenerationSpec.model_validate(b["spec"])
    request = build_request(parsed, "team-a", "fox", SETTINGS)
    return build_job(b, parsed, request, SETTINGS), request


def test_request_applies_defaults_and_operator_settings():
    _, request = build(video={"frames": 33}, sampling={"seed": 3}, loras=[{"path": "loras/a.safetensors"}])
    assert request.task_id == "team-a.fox"
    assert request.model.path == "/models/Wan2.2-T2V-A14B"
    assert (request.frames, request.steps, request.guidance_scale_2, request.seed) == (33, 40, 3.0, 3)
    assert request.loras[0].path == "/models/loras/a.safetensors"
    assert (request.output.bucket, request.output.endpoint_url) == ("videos", "http://s3:9000")
    assert request.output.path == "/tmp/videogen/output.mp4"
    assert request.reporting.redis_url == "redis://redis:6379/0"


def test_job_is_secure_owned_and_carries_no_resource_labels():
    job, request = build()
    assert job["metadata"]["name"] == "videogen-fox"
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "videogen.io/v1alpha1", "kind": "VideoGeneration",
                                                   "name": "fox", "uid": "u-1", "controller": True,
                                                   "blockOwnerDeletion": True}]
    assert "argocd.argoproj.io/instance" not in job["metadata"]["labels"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                             "runAsNonRoot": True, "runAsUser": 10001,
                                             "capabilities": {"drop": ["ALL"]}}
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["volumes"][0] == {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    env = {e["name"]: e for e in container["env"]}
    assert json.loads(env["VIDEOGEN_REQUEST"]["value"]) == json.loads(request.model_dump_json(exclude_none=True))
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY", "optional": False}
    assert "testing" not in json.dumps(job) and "password" not in env["VIDEOGEN_REQUEST"]["value"]


def test_job_policies_come_from_the_spec_and_the_runner_exit_codes():
    job, _ = build(retries=4, deadlineSeconds=3600, ttlSecondsAfterFinished=60)
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (4, 3600)
    # No TTL at creation: a finished Job stays until the operator has recorded its outcome.
    assert "ttlSecondsAfterFinished" not in spec
    given = VideoGenerationSpec.model_validate(body(ttlSecondsAfterFinished=60)["spec"])
    assert job_ttl(given, SETTINGS) == 60
    assert job_ttl(VideoGenerationSpec.model_validate(body()["spec"]), SETTINGS) == 3600
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "runner", "operator": "In",
                                                              "values": [10, 11, 12]}}
    assert rules[1]["action"] == "Ignore"
    assert spec["suspend"] is False


def test_kueue_jobs_start_suspended_with_the_queue_label():
    job, _ = build(queueName="gpu-batch", priorityClassName="low")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-batch"
    assert job["spec"]["template"]["spec"]["priorityClassName"] == "low"
    assert "kueue.x-k8s.io/priority-class" not in job["metadata"]["labels"]
    job, _ = build(queueName="gpu-batch", workloadPriorityClassName="high")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"  # Kueue reads the Job's label


def test_two_gpus_get_shared_memory_and_host_path_weights():
    job, _ = build(model={"preset": "t2v-a14b", "hostPath": "/mnt/models", "path": "a14b"}, resources={"gpus": 2})
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][0] == {"name": "model", "hostPath": {"path": "/mnt/models", "type": "Directory"}}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_long_names_stay_valid_and_unique():
    long = "x" * 250
    assert len(job_name(long)) <= 63 and job_name(long) != job_name(long[:-1])
    assert len(task_id("ns", long)) <= 128 and task_id("ns", long) != task_id("ns", long[:-1])


def test_request_errors_name_the_field():
    b = body(output={"key": "{task_id}/{nope}"})
    with pytest.raises(ValidationError, match="unknown template fields"):
        build_request(VideoGenerationSpec.model_validate(b["spec"]), "team-a", "fox", SETTINGS)


def test_the_job_fields_the_api_server_refuses_are_named_as_the_resources():
    job, _ = build(nodeSelector={"gpu": "h100"}, tolerations=[{"key": "gpu", "operator": "Exists"}])
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "h100"}  # where the table says it is
    assert resource_field("spec.template.spec.nodeSelector") == "spec.nodeSelector"
    assert resource_field("spec.template.spec.tolerations[0].key") == "spec.tolerations[0].key"
    assert resource_field("spec.template.spec.containers[0].resources.limits") == "spec.resources.limits"
    assert resource_field("spec.template.spec.nodeSelectorX") == "spec.template.spec.nodeSelectorX"
    assert resource_field("spec.template.spec.securityContext") == "spec.template.spec.securityContext"


@pytest.mark.parametrize("message, shown", [
    ("image: images.example resolves to 127.0.0.1 (loopback)", "spec.image: images.example resolves to 127.0.0.1"),
    ("frames: must be 4k+1", "spec.video.frames: must be 4k+1"),
    ("guidance_scale_2: too big", "spec.sampling.guidanceScale2: too big"),
    ("loras[1].path: no LoRA", "spec.loras[1].path: no LoRA"),
    ("model.path: no diffusers model at /models/x", "spec.model.path: no diffusers model at /models/x"),
    ("output.path: cannot write into /tmp", "output.path: cannot write into /tmp"),  # the operator's, not the spec's
    ("task_id: odd", "task_id: odd"),
    ("stopped by SIGTERM", "stopped by SIGTERM"),
    ("RuntimeError: x: y", "RuntimeError: x: y"),
])
def test_a_runners_message_names_the_resources_field(message, shown):
    assert spec_message(message).startswith(shown)


def test_a_compile_cache_claim_keeps_compiled_kernels_for_later_pods():
    settings = SETTINGS.model_copy(update={"compile_cache_claim": "torch-cache"})
    b = body()
    parsed = VideoGenerationSpec.model_validate(b["spec"])
    job = build_job(b, parsed, build_request(parsed, "team-a", "fox", settings), settings)
    pod = job["spec"]["template"]["spec"]
    assert {"name": "compile-cache", "persistentVolumeClaim": {"claimName": "torch-cache"}} in pod["volumes"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["TORCHINDUCTOR_CACHE_DIR"] == "/var/cache/videogen/inductor"
    assert env["TRITON_CACHE_DIR"] == "/var/cache/videogen/inductor/triton"
    mount = {"name": "compile-cache", "mountPath": "/var/cache/videogen/inductor"}
    assert mount in pod["containers"][0]["volumeMounts"]
    default_env = {e["name"]: e.get("value") for e in build()[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert default_env["TORCHINDUCTOR_CACHE_DIR"] == "/tmp/inductor"
    assert default_env["TRITON_CACHE_DIR"] == "/tmp/inductor/triton"  # never the read-only home


def test_default_secrets_go_only_to_the_default_endpoints():
    job, _ = build(output={"endpointUrl": "http://elsewhere:9000"}, reporting={"redisUrl": "redis://elsewhere:6379/0"})
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "AWS_SECRET_ACCESS_KEY" not in names and "REDIS_PASSWORD" not in names


def test_an_operator_older_than_its_crd_ignores_fields_it_does_not_know():
    """Helm upgrades the CRD before the operator's pod rolls: a new field must not fail resources."""
    _, request = build(acceleration={"someFutureFlag": True}, sampling={"steps": 12, "futureSolverOption": 3})
    assert request.steps == 12


def test_pods_without_cpu_or_memory_get_the_operators_defaults():
    settings = SETTINGS.model_copy(update={"default_cpu": "8", "default_memory": "96Gi"})
    b = body(resources={"gpus": 1, "memory": "120Gi"})
    parsed = VideoGenerationSpec.model_validate(b["spec"])
    container = build_job(b, parsed, build_request(parsed, "team-a", "fox", settings), settings)[
        "spec"]["template"]["spec"]["containers"][0]
    # The resource's own memory wins; the default CPU fills the gap: requests = limits (Guaranteed).
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1", "cpu": "8", "memory": "120Gi"}
    assert container["resources"]["requests"] == container["resources"]["limits"]


def test_runner_pods_get_the_platforms_service_account_and_pull_secrets():
    settings = SETTINGS.model_copy(update={"runner_service_account": "s3-writer",
                                           "runner_image_pull_secrets": [{"name": "regcred"}]})
    b = body()
    parsed = VideoGenerationSpec.model_validate(b["spec"])
    pod = build_job(b, parsed, build_request(parsed, "team-a", "fox", settings), settings)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "s3-writer" and pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["automountServiceAccountToken"] is False  # IRSA / workload identity need no API token
    default_pod = build()[0]["spec"]["template"]["spec"]
    assert "serviceAccountName" not in default_pod and "imagePullSecrets" not in default_pod


def test_checkpoints_go_to_s3_by_default_or_to_the_platforms_claim():
    _, request = build()
    assert (request.checkpoints.every_seconds, request.checkpoints.folder) == (60.0, None)
    assert request.output.upload_retry_seconds == 300.0
    settings = SETTINGS.model_copy(update={"checkpoint_claim": "vg-checkpoints", "checkpoint_seconds": 30})
    b = body()
    parsed = VideoGenerationSpec.model_validate(b["spec"])
    request = build_request(parsed, "team-a", "fox", settings)
    assert (request.checkpoints.every_seconds, request.checkpoints.folder) == (
        30, "/var/lib/videogen/checkpoints/team-a.fox")
    pod = build_job(b, parsed, request, settings)["spec"]["template"]["spec"]
    assert {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "vg-checkpoints"}} in pod["volumes"]
    assert {"name": "checkpoints", "mountPath": "/var/lib/videogen/checkpoints"} in pod["containers"][0]["volumeMounts"]
