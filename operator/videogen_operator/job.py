"""Builders: a VideoGeneration becomes the runner's request and one Job manifest (plain dicts).

Pure functions of the resource and the settings, so tests compare their whole output.
"""

import functools
import hashlib
import os
import re

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from videogen_operator.models import GROUP, PLACEMENT, VideoGenerationSpec
from videogen_operator.settings import Settings
from videogen_runner.errors import PERMANENT_EXIT_CODES
from videogen_runner.request import GenerationRequest, Loc, describe, dotted

MODEL_MOUNT = "/models"
SCRATCH = "/tmp"
COMPILE_CACHE = "/var/cache/videogen/inductor"
CHECKPOINTS = "/var/lib/videogen/checkpoints"
OUTPUT_PATH = f"{SCRATCH}/videogen/output.mp4"
NAME_LABEL = f"{GROUP}/name"
MANAGED_BY = {"app.kubernetes.io/managed-by": "videogen-operator", "app.kubernetes.io/name": "videogen-runner"}
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # on the Workload Kueue makes for a Job
KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
RUNNER_UID = 10001


def short_name(prefix: str, name: str, limit: int = 63, sep: str = "-") -> str:
    """prefix-name, cut to `limit` with a hash suffix when too long (names must stay unique)."""
    full = f"{prefix}{sep}{name}"
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: limit - 9].rstrip('-.')}-{digest}"


def job_name(name: str) -> str:
    return short_name("videogen", name)


def task_id(namespace: str, name: str) -> str:
    """The id in Redis and S3 keys: <namespace>.<name>, readable and unique in the cluster."""
    return short_name(namespace, name, 128, sep=".")


def uses_operator_credentials(spec: VideoGenerationSpec, settings: Settings) -> bool:
    """Whether the pod reaches S3 as the operator's identity (its Secret, or the runner pods'
    ServiceAccount), rather than with a Secret the resource brought."""
    own = spec.output.credentials_secret
    return own is None or own == settings.s3_credentials_secret


def tenant_prefix(spec: VideoGenerationSpec, namespace: str, settings: Settings) -> str:
    """The folder every key lies under: the namespace's, whenever the operator's identity is used,
    so that no namespace can write or read another's objects through it."""
    return f"{namespace}/" if uses_operator_credentials(spec, settings) else ""


# Job fields that come from the spec: the API server names the Job's field when it refuses one,
# and the status names the resource's.
JOB_PLACE = {"spec.template.spec.nodeSelector": "spec.nodeSelector",
             "spec.template.spec.tolerations": "spec.tolerations",
             "spec.template.spec.priorityClassName": "spec.priorityClassName",
             "spec.template.spec.containers[0].image": "spec.runnerImage",
             "spec.template.spec.containers[0].resources": "spec.resources",
             "spec.template.spec.volumes[0].persistentVolumeClaim": "spec.model.pvc",
             "spec.template.spec.volumes[0].hostPath.path": "spec.model.hostPath",
             "spec.activeDeadlineSeconds": "spec.deadlineSeconds",
             "spec.backoffLimit": "spec.retries"}


def resource_field(job_field: str) -> str:
    """The resource's field that a field of its Job was built from (the Job's own path otherwise)."""
    for place, field in JOB_PLACE.items():
        if job_field == place or job_field.startswith((place + ".", place + "[")):
            return field + job_field.removeprefix(place)
    return job_field


def spec_field(loc: Loc) -> str:
    """The spec's path (spec.video.frames, spec.loras[0].path) of a field of the runner's request."""
    parts = PLACEMENT.get(str(loc[0]), loc[:1]) + tuple(loc[1:]) if loc else ()
    return "spec." + dotted(tuple(p if isinstance(p, int) else to_camel(p) for p in parts))


FIELD_AT_START = re.compile(r"([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*|\[\d+\])*): ")
SET_BY_THE_OPERATOR = {("output", "path"), ("output", "prefix")}


def spec_message(message: str) -> str:
    """A runner's message, which starts with the request's field it is about (`image: …`), as the
    resource's (`spec.image: …`); one about a field the operator sets is left as it is."""
    match = FIELD_AT_START.match(message)
    if not match:
        return message
    loc = tuple(int(part) if part.isdigit() else part for part in re.findall(r"[a-z0-9_]+", match[1]))
    if (loc[0] not in PLACEMENT and loc[0] not in VideoGenerationSpec.model_fields) or loc[:2] in SET_BY_THE_OPERATOR:
        return message
    return f"{spec_field(loc)}: {message[match.end():]}"


def build_request(spec: VideoGenerationSpec, namespace: str, name: str, settings: Settings) -> GenerationRequest:
    """The runner's request; raises pydantic's ValidationError when the runner would refuse it."""
    written = spec.model_dump()
    placed = {field: functools.reduce(dict.__getitem__, place, written) for field, place in PLACEMENT.items()}
    output = spec.output
    return GenerationRequest.model_validate({
        **placed,
        "task_id": task_id(namespace, name),
        "model": {"preset": spec.model.preset, "path": f"{MODEL_MOUNT}/{spec.model.path}".rstrip("/")},
        "loras": [{"path": f"{MODEL_MOUNT}/{lora.path}", "weight": lora.weight, "experts": lora.experts}
                  for lora in spec.loras],
        "output": {
            "path": OUTPUT_PATH,
            "bucket": output.bucket or settings.s3_bucket,
            **({"key": output.key} if output.key else {}),
            "prefix": tenant_prefix(spec, namespace, settings),
            "endpoint_url": output.endpoint_url or settings.s3_endpoint_url,
            "region": output.region or settings.s3_region,
            "upload_retry_seconds": settings.upload_retry_seconds,
        },
        "checkpoints": {"every_seconds": settings.checkpoint_seconds,
                        **({"folder": f"{CHECKPOINTS}/{task_id(namespace, name)}"}
                           if settings.checkpoint_claim else {})},
        "reporting": {"redis_url": spec.reporting.redis_url or settings.redis_url,
                      "key_prefix": settings.redis_key_prefix, "namespace": namespace},
    })


class InvalidSpec(Exception):
    """What only the operator can judge: the message names the field."""


def parse_spec(body: dict, settings: Settings) -> tuple[VideoGenerationSpec, object]:
    """The typed spec and the runner's request, or InvalidSpec naming the field."""
    meta = body["metadata"]
    try:
        spec = VideoGenerationSpec.model_validate(body["spec"])
    except ValidationError as e:
        raise InvalidSpec(describe(e, lambda loc: "spec." + dotted(loc))) from None
    try:
        request = build_request(spec, meta["namespace"], meta["name"], settings)
    except ValidationError as e:
        raise InvalidSpec(describe(e, spec_field)) from None
    if request.output.bucket is None:
        raise InvalidSpec("spec.output.bucket: no bucket given and the operator has no default")
    # Who may create a VideoGeneration must not thereby run any image or read any node folder.
    if spec.runner_image and not settings.allow_image_override:
        raise InvalidSpec("spec.runnerImage: this operator does not allow image overrides")
    # Nor preempt other teams' GPU work with a priority class the platform did not hand out.
    if spec.priority_class_name and spec.priority_class_name not in settings.allowed_priority_classes:
        raise InvalidSpec(f"spec.priorityClassName: {spec.priority_class_name} is not allowed by this operator "
                          f"({settings.allowed_priority_classes or 'none allowed'})")
    if spec.workload_priority_class_name and \
            spec.workload_priority_class_name not in settings.allowed_workload_priority_classes:
        raise InvalidSpec(f"spec.workloadPriorityClassName: {spec.workload_priority_class_name} is not allowed by "
                          f"this operator ({settings.allowed_workload_priority_classes or 'none allowed'})")
    if spec.model.host_path and not inside(spec.model.host_path, settings.allowed_host_paths):
        raise InvalidSpec(f"spec.model.hostPath: {spec.model.host_path} is not under an allowed folder "
                          f"({settings.allowed_host_paths or 'none allowed: use a pvc'})")
    return spec, request


def inside(path: str, folders: list[str]) -> bool:
    """Whether `path`, once `..` is resolved, is one of `folders` or below one."""
    path = os.path.normpath(path)
    return any(path == os.path.normpath(f) or path.startswith(os.path.normpath(f).rstrip("/") + "/") for f in folders)


def job_ttl(spec: VideoGenerationSpec, settings: Settings) -> int | None:
    """The finished Job's time to live, given to it once its outcome is in the resource's status:
    a Job that vanished before the operator read it would leave the outcome unknown."""
    return spec.ttl_seconds_after_finished if spec.ttl_seconds_after_finished is not None else settings.job_ttl_seconds


def secret_env(variable: str, secret: str, key: str, optional: bool = False) -> dict:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}


def build_job(body: dict, spec: VideoGenerationSpec, request: GenerationRequest, settings: Settings) -> dict:
    """The Job that runs the runner once (plus retries of retryable failures)."""
    meta = body["metadata"]
    labels = {**MANAGED_BY, NAME_LABEL: meta["name"]}  # never the resource's own labels: GitOps
    if spec.queue_name:
        labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    if spec.workload_priority_class_name:
        labels[KUEUE_PRIORITY_LABEL] = spec.workload_priority_class_name

    # 1. The container: the request as JSON, secrets only as secretKeyRef env vars.
    #    Compiled kernels (Inductor's, and Triton's for the VAE) go to a writable cache: the root
    #    filesystem, home included, is read-only.
    compile_cache = COMPILE_CACHE if settings.compile_cache_claim else f"{SCRATCH}/inductor"
    env = [{"name": "VIDEOGEN_REQUEST", "value": request.model_dump_json(exclude_none=True)},
           {"name": "HF_HUB_OFFLINE", "value": "1"},
           {"name": "TORCHINDUCTOR_CACHE_DIR", "value": compile_cache},
           {"name": "TRITON_CACHE_DIR", "value": f"{compile_cache}/triton"}]
    # The operator's default credentials go only to the operator's default endpoints.
    credentials = spec.output.credentials_secret or (
        settings.s3_credentials_secret if spec.output.endpoint_url is None else None)
    if credentials:
        env += [secret_env("AWS_ACCESS_KEY_ID", credentials, "AWS_ACCESS_KEY_ID"),
                secret_env("AWS_SECRET_ACCESS_KEY", credentials, "AWS_SECRET_ACCESS_KEY")]
    if spec.reporting.password_secret:
        password = spec.reporting.password_secret
        env.append(secret_env("REDIS_PASSWORD", password.name, password.key))
    elif settings.redis_password_secret and spec.reporting.redis_url is None:
        # The namespace's Redis user (ACLs fence it to its own keys and channel), or the default user.
        env += [secret_env(variable, settings.redis_password_secret, variable, optional=True)
                for variable in ("REDIS_USERNAME", "REDIS_PASSWORD")]

    limits = {}
    if spec.resources.gpus:
        limits[spec.resources.gpu_resource] = str(spec.resources.gpus)
    for resource in ("cpu", "memory"):  # the resource's own, else the operator's default
        if amount := getattr(spec.resources, resource) or getattr(settings, f"default_{resource}"):
            limits[resource] = amount
    container = {
        "name": "runner",
        "image": spec.runner_image or settings.runner_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": settings.runner_command,
        "env": env,
        "resources": {"limits": limits, "requests": dict(limits)},
        "volumeMounts": [{"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True},
                         {"name": "scratch", "mountPath": SCRATCH}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "runAsUser": RUNNER_UID, "capabilities": {"drop": ["ALL"]}},
    }

    # 2. Volumes: the weights read-only, a writable scratch (the root filesystem is read-only).
    model = ({"persistentVolumeClaim": {"claimName": spec.model.pvc.claim_name, "readOnly": True}}
             if spec.model.pvc else {"hostPath": {"path": spec.model.host_path, "type": "Directory"}})
    volumes = [{"name": "model", **model}, {"name": "scratch", "emptyDir": {"sizeLimit": settings.scratch_size}}]
    if settings.compile_cache_claim:  # compiled kernels shared by later pods
        volumes.append({"name": "compile-cache", "persistentVolumeClaim": {"claimName": settings.compile_cache_claim}})
        container["volumeMounts"].append({"name": "compile-cache", "mountPath": COMPILE_CACHE})
    if settings.checkpoint_claim:  # checkpoints (and a video whose upload failed) outlive the pod
        volumes.append({"name": "checkpoints", "persistentVolumeClaim": {"claimName": settings.checkpoint_claim}})
        container["volumeMounts"].append({"name": "checkpoints", "mountPath": CHECKPOINTS})
    if spec.resources.gpus > 1:  # NCCL between GPUs needs more shared memory than the default 64 MiB
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        container["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})

    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUNNER_UID, "fsGroup": RUNNER_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
        **({"nodeSelector": spec.node_selector} if spec.node_selector else {}),
        **({"tolerations": [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]}
           if spec.tolerations else {}),
        **({"priorityClassName": spec.priority_class_name} if spec.priority_class_name else {}),
        **({"serviceAccountName": settings.runner_service_account} if settings.runner_service_account else {}),
        **({"imagePullSecrets": settings.runner_image_pull_secrets} if settings.runner_image_pull_secrets else {}),
    }

    # 3. The Job: permanent exit codes fail it at once, disruptions don't count as attempts.
    #    No TTL yet: the Job stays until the operator has recorded its outcome (job_ttl).
    deadline = spec.deadline_seconds or settings.deadline_seconds
    job_spec = {
        "backoffLimit": spec.retries,
        # Kueue admits a queued Job by un-suspending it; the operator only ever adds a stop.
        "suspend": spec.suspend or bool(spec.queue_name),
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "runner", "operator": "In",
                                                  "values": PERMANENT_EXIT_CODES}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        **({"activeDeadlineSeconds": deadline} if deadline else {}),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [{"apiVersion": body["apiVersion"], "kind": body["kind"], "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": job_spec,
    }
