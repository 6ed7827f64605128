"""The operator's I/O: read what a VideoGeneration has (Job, pods, Redis progress), write its
status and events. The decisions are made by the pure builders (job.py) and status.py."""

import datetime
import json
import logging
import os
import threading
import time

import kopf
import kubernetes
import redis
from pydantic import ValidationError

from videogen_operator import job as jobs
from videogen_operator import metrics
from videogen_operator.models import GROUP, KIND, PLURAL, VERSION, VideoGenerationSpec
from videogen_operator.settings import Settings
from videogen_operator.status import TERMINAL, compute_status, conditions
from videogen_runner.request import describe, dotted

log = logging.getLogger(__name__)
REDIS_RETRY_S = 15.0


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        request = jobs.build_request(spec, meta["namespace"], meta["name"], settings)
    except ValidationError as e:
        raise InvalidSpec(describe(e, jobs.spec_field)) from None
    if request.output.bucket is None:
        raise InvalidSpec("spec.output.bucket: no bucket given and the operator has no default")
    # Who may create a VideoGeneration must not thereby run any image or read any node folder.
    if spec.runner_image and not settings.allow_image_override:
        raise InvalidSpec("spec.runnerImage: this operator does not allow image overrides")
    # Nor preempt other teams' GPU work with a priority class the platform did not hand out.
    if spec.priority_class_name and spec.priority_class_name not in settings.allowed_priority_classes:
        raise InvalidSpec(f"spec.priorityClassName: {spec.priority_class_name} is not allowed by this operator "
                          f"({settings.allowed_priority_classes or 'none allowed'})")
    if spec.model.host_path and not inside(spec.model.host_path, settings.allowed_host_paths):
        raise InvalidSpec(f"spec.model.hostPath: {spec.model.host_path} is not under an allowed folder "
                          f"({settings.allowed_host_paths or 'none allowed: use a pvc'})")
    return spec, request


def api_message(error: kubernetes.client.ApiException) -> str:
    """The API server's own sentence from an error (its Status body), not the escaped JSON."""
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{error.reason}: {error.body}"


def inside(path: str, folders: list[str]) -> bool:
    """Whether `path`, once `..` is resolved, is one of `folders` or below one."""
    path = os.path.normpath(path)
    return any(path == os.path.normpath(f) or path.startswith(os.path.normpath(f).rstrip("/") + "/") for f in folders)


class Reconciler:
    """Shared by the kopf handlers and the Redis subscriber thread."""

    def __init__(self, settings: Settings, api_client=None):
        self.settings = settings
        self.api_client = api_client or kubernetes.client.ApiClient()
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.batch = kubernetes.client.BatchV1Api(self.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.redis = (redis.Redis.from_url(settings.redis_url, password=settings.redis_password,
                                           socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
                      if settings.redis_url else None)
        self.redis_skip_until = 0.0
        self.tasks: dict[str, tuple[str, str]] = {}  # task id → (namespace, name), for Redis nudges
        self.lock = threading.Lock()

    # --- the Job -------------------------------------------------------------------------------

    def ensure_job(self, body: dict) -> None:
        """Creates the resource's one Job unless it exists (idempotent across restarts)."""
        spec, request = parse_spec(body, self.settings)
        if spec.suspend and spec.queue_name:
            return  # Kueue would admit it: a queued resource gets its Job only once resumed
        manifest = jobs.build_job(body, spec, request, self.settings)
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            self.batch.create_namespaced_job(namespace, manifest)
        except kubernetes.client.ApiException as e:
            if e.status in (400, 422):
                raise InvalidSpec(f"the Job was refused: {api_message(e)}"[:1000]) from None
            if e.status != 409:
                raise
            if self.job_of(body) is None:  # a Job of an earlier resource of the same name, still being deleted
                raise kopf.TemporaryError(f"Job {name} belongs to an earlier resource; waiting for its deletion",
                                          delay=5) from None
            return
        metrics.JOBS_CREATED.inc()
        self.event(body, "Normal", "JobCreated", f"created Job {name}")

    def job_of(self, body: dict) -> dict | None:
        """The resource's Job as a plain dict, or None (absent, or owned by another resource)."""
        meta = body["metadata"]
        try:
            job = self.batch.read_namespaced_job(jobs.job_name(meta["name"]), meta["namespace"])
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
            return None
        job = self.api_client.sanitize_for_serialization(job)
        owners = [o["uid"] for o in job["metadata"].get("ownerReferences") or []]
        return job if meta["uid"] in owners else None

    def set_suspended(self, body: dict, suspend: bool) -> None:
        """The user's suspend only ever adds a stop. Without Kueue it suspends the Job; with Kueue
        (which un-suspends what it admits) the Job is deleted, and created again on resume."""
        spec = VideoGenerationSpec.model_validate(body["spec"])
        meta = body["metadata"]
        if spec.queue_name:
            if not suspend:
                self.ensure_job(body)
                return
            try:
                self.batch.delete_namespaced_job(jobs.job_name(meta["name"]), meta["namespace"],
                                                 propagation_policy="Background")
            except kubernetes.client.ApiException as e:
                if e.status != 404:
                    raise
            return
        try:
            self.batch.patch_namespaced_job(jobs.job_name(meta["name"]), meta["namespace"],
                                            {"spec": {"suspend": suspend}})
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise

    # --- status --------------------------------------------------------------------------------

    def refresh(self, namespace: str, name: str) -> None:
        """Recomputes and writes the status from the current Job, pods and progress."""
        with self.lock:  # one writer at a time, so transitions and events are not doubled
            try:
                body = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except kubernetes.client.ApiException as e:
                if e.status == 404:
                    return
                raise
            old = body.get("status") or {}
            if old.get("reason") == "InvalidSpec":
                return
            spec = VideoGenerationSpec.model_validate(body["spec"])
            task = jobs.task_id(namespace, name)
            self.tasks[task] = (namespace, name)
            job = self.job_of(body)
            pods = []
            if job is not None:
                selector = f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}"
                pods = self.api_client.sanitize_for_serialization(
                    self.core.list_namespaced_pod(namespace, label_selector=selector))["items"]
            # A Job without pods may be refused them (not while it is suspended: then none are due).
            failure = None
            if job is not None and not pods and not job["spec"].get("suspend"):
                failure = self.creation_failure(namespace, job)
            status = compute_status(spec, body["metadata"]["generation"], old, job, pods,
                                    self.progress(task), now(), failure)
            if status["phase"] in TERMINAL:
                self.tasks.pop(task, None)
            if _without_times(status) == _without_times(old):
                return
            self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                              {"status": status})
            if status["phase"] != old.get("phase"):
                self.transition(body, old.get("phase"), status)

    def creation_failure(self, namespace: str, job: dict) -> str | None:
        """The Job controller's latest FailedCreate warning for this Job (a quota, an admission
        policy refused the pod), which the Job's own status does not carry."""
        selector = f"involvedObject.uid={job['metadata']['uid']},reason=FailedCreate"
        try:
            events = self.core.list_namespaced_event(namespace, field_selector=selector).items
        except kubernetes.client.ApiException as e:
            log.warning("events of job %s unavailable: %s", job["metadata"]["name"], e.reason)
            return None
        latest = max(events, default=None,
                     key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp or ""))
        return latest.message if latest is not None else None

    def fail_invalid(self, body: dict, message: str) -> None:
        meta = body["metadata"]
        old = body.get("status") or {}
        status = {"phase": "Failed", "reason": "InvalidSpec", "message": message,
                  "observedGeneration": meta.get("generation"), "completionTime": now(),
                  "conditions": conditions("Failed", "InvalidSpec", message, old.get("conditions") or [],
                                           meta.get("generation"), now())}
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"],
                                                          {"status": status})
        self.transition(body, (body.get("status") or {}).get("phase"), status)

    def progress(self, task: str) -> dict | None:
        """The runner's latest state in Redis, or None when Redis is absent or down (then it is
        skipped for a while, so that an outage does not slow every status update)."""
        if self.redis is None or time.monotonic() < self.redis_skip_until:
            return None
        try:
            return self.redis.hgetall(f"{self.settings.redis_key_prefix}:task:{task}") or None
        except redis.RedisError as e:
            self.redis_skip_until = time.monotonic() + REDIS_RETRY_S
            log.warning("progress unavailable from Redis (%s); retrying in %.0f s", e, REDIS_RETRY_S)
            return None

    def transition(self, body: dict, old_phase: str | None, status: dict) -> None:
        metrics.TRANSITIONS.labels(phase=status["phase"]).inc()
        if status["phase"] == "Succeeded" and status.get("output", {}).get("timings"):
            metrics.GENERATION_SECONDS.observe(status["output"]["timings"]["total"])
        kind = "Warning" if status["phase"] == "Failed" or status["reason"] in (
            "Unschedulable", "FailedCreate", "ErrImagePull", "ImagePullBackOff", "Retrying") else "Normal"
        self.event(body, kind, status["reason"], f"{old_phase or 'New'} → {status['phase']}: {status['message']}")

    def event(self, body: dict, kind: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        stamp = datetime.datetime.now(datetime.UTC)
        event = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "type": kind, "reason": reason, "message": message[:1024],
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "source": {"component": "videogen-operator"}, "reportingComponent": "videogen-operator",
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], event)
        except kubernetes.client.ApiException as e:
            log.warning("event not posted: %s", e.reason)


def _without_times(status: dict) -> dict:
    """Status minus transition times, to skip writes that would change nothing else."""
    return {k: ([{kk: vv for kk, vv in c.items() if kk != "lastTransitionTime"} for c in v]
                if k == "conditions" else v) for k, v in status.items()}
