"""The operator's I/O: read what a VideoGeneration has (Job, pods, Redis progress), write its
status and events. The decisions are made by the pure builders (job.py) and status.py."""

import datetime
import logging
import threading

import kubernetes
import redis
from pydantic import ValidationError

from videogen_operator import job as jobs
from videogen_operator import metrics
from videogen_operator.models import GROUP, KIND, PLURAL, VERSION, VideoGenerationSpec
from videogen_operator.settings import Settings
from videogen_operator.status import TERMINAL, compute_status, conditions

log = logging.getLogger(__name__)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class InvalidSpec(Exception):
    """What only the operator can judge: the message names the field."""


def parse_spec(body: dict, settings: Settings) -> tuple[VideoGenerationSpec, object]:
    """The typed spec and the runner's request, or InvalidSpec naming the field."""
    meta = body["metadata"]
    try:
        spec = VideoGenerationSpec.model_validate(body["spec"])
        request = jobs.build_request(spec, meta["namespace"], meta["name"], settings)
    except ValidationError as e:
        problems = []
        for error in e.errors():
            where = ".".join(str(p) for p in error["loc"])
            problems.append(f"{'spec.' + where + ': ' if where else ''}{error['msg'].removeprefix('Value error, ')}")
        raise InvalidSpec("; ".join(problems)) from None
    if request.output.bucket is None:
        raise InvalidSpec("spec.output.bucket: no bucket given and the operator has no default")
    return spec, request


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
        self.tasks: dict[str, tuple[str, str]] = {}  # task id → (namespace, name), for Redis nudges
        self.lock = threading.Lock()

    # --- the Job -------------------------------------------------------------------------------

    def ensure_job(self, body: dict) -> str:
        """Creates the resource's one Job unless it exists (idempotent across restarts)."""
        spec, request = parse_spec(body, self.settings)
        manifest = jobs.build_job(body, spec, request, self.settings)
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            self.batch.create_namespaced_job(namespace, manifest)
        except kubernetes.client.ApiException as e:
            if e.status != 409:
                raise
            return name
        metrics.JOBS_CREATED.inc()
        self.event(body, "Normal", "JobCreated", f"created Job {name}")
        return name

    def set_suspended(self, body: dict, suspend: bool) -> None:
        """The user's suspend stops the Job; lifting it resumes only Jobs that Kueue does not hold."""
        spec = VideoGenerationSpec.model_validate(body["spec"])
        if not suspend and spec.queue_name:
            return  # Kueue admits (un-suspends) queued Jobs; the operator never does
        meta = body["metadata"]
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
            job_name = jobs.job_name(name)
            try:
                job = self.api_client.sanitize_for_serialization(self.batch.read_namespaced_job(job_name, namespace))
            except kubernetes.client.ApiException as e:
                if e.status != 404:
                    raise
                job = None
            pods = []
            if job is not None:
                listed = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}")
                pods = self.api_client.sanitize_for_serialization(listed)["items"]
            status = compute_status(spec, body["metadata"]["generation"], old, job, pods,
                                    self.progress(task), now())
            if status["phase"] in TERMINAL:
                self.tasks.pop(task, None)
            if _without_times(status) == _without_times(old):
                return
            self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                              {"status": status})
            if status["phase"] != old.get("phase"):
                self.transition(body, old.get("phase"), status)

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
        """The runner's latest state in Redis, or None when Redis is absent or down."""
        if self.redis is None:
            return None
        try:
            return self.redis.hgetall(f"{self.settings.redis_key_prefix}:task:{task}") or None
        except redis.RedisError as e:
            log.warning("progress unavailable from Redis: %s", e)
            return None

    def transition(self, body: dict, old_phase: str | None, status: dict) -> None:
        metrics.TRANSITIONS.labels(phase=status["phase"]).inc()
        if status["phase"] == "Succeeded" and status.get("output", {}).get("timings"):
            metrics.GENERATION_SECONDS.observe(status["output"]["timings"]["total"])
        kind = "Warning" if status["phase"] == "Failed" or status["reason"] in (
            "Unschedulable", "ErrImagePull", "ImagePullBackOff", "Retrying") else "Normal"
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
