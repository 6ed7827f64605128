"""The operator's one reconcile path, and its I/O.

For one VideoGeneration: the observations (the resource, its Job and pods from kopf's indexes,
fed by the watches; the runner's state in Redis) → the Job it needs (`job_action`) → its whole
status (status.py) → one write by its one writer, refused by the API server when made from a
stale snapshot (a PUT of the status subresource with the resourceVersion it was computed from).
No API read happens on an event: reads are the watches'.
"""

import asyncio
import datetime
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import kubernetes
import urllib3

from videogen_operator import job as jobs
from videogen_operator import metrics
from videogen_operator.kubeapi import KubeAPI
from videogen_operator.models import GROUP, KIND, PLURAL, VERSION, VideoGenerationSpec
from videogen_operator.progress import ProgressSource
from videogen_operator.settings import Settings
from videogen_operator.status import TERMINAL, Observation, compute_status, lost_job, transition_event
from videogen_runner.request import GenerationRequest

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name) of a VideoGeneration
RETRY_S = 5.0
LANES = {"jobs": 8, "status": 8, "events": 2}  # threads for the API calls of each kind


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_message(error: kubernetes.client.ApiException) -> str:
    """The API server's own sentence from an error (its Status body), not the escaped JSON."""
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{error.reason}: {error.body}"


def refusal(error: kubernetes.client.ApiException) -> str:
    """Why the API server refused a Job, each cause naming the resource's field it came from."""
    try:
        causes = json.loads(error.body)["details"]["causes"]
        return "; ".join(f"{jobs.resource_field(c['field'])}: {c.get('message', '')}" if c.get("field")
                         else c.get("message", "") for c in causes)
    except (TypeError, ValueError, KeyError, AttributeError):
        return api_message(error)


def key_of(meta: dict) -> Key:
    return meta["namespace"], meta["name"]


# --- what the indexes keep: only the fields the status needs, so that memory stays small ----------

def trim_videogeneration(body: dict) -> dict:
    meta = body["metadata"]
    keep = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp")
    return {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": {k: meta.get(k) for k in keep},
            "spec": dict(body.get("spec") or {}), "status": dict(body.get("status") or {})}


def trim_job(job: dict) -> dict:
    meta, status = job["metadata"], job.get("status") or {}
    return {"metadata": {"name": meta["name"], "uid": meta["uid"],
                         "owners": [o["uid"] for o in meta.get("ownerReferences") or []],
                         "deletionTimestamp": meta.get("deletionTimestamp")},
            "spec": {k: (job.get("spec") or {}).get(k) for k in ("suspend", "ttlSecondsAfterFinished")},
            "status": {k: status[k] for k in ("active", "failed", "succeeded", "startTime", "completionTime",
                                              "conditions") if k in status}}


def trim_pod(pod: dict) -> dict:
    meta, status = pod["metadata"], pod.get("status") or {}
    return {"metadata": {"name": meta["name"], "creationTimestamp": meta.get("creationTimestamp"),
                         "deletionTimestamp": meta.get("deletionTimestamp"),
                         "job": (meta.get("labels") or {}).get("batch.kubernetes.io/controller-uid")},
            "status": {"phase": status.get("phase"), "startTime": status.get("startTime"),
                       "conditions": [c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"],
                       "containerStatuses": [c for c in status.get("containerStatuses") or []
                                             if c.get("name") == "runner"]}}


def trim_workload(workload: dict) -> dict:
    """What status says of a Kueue Workload: whether it is active, and its conditions' words."""
    conditions = (workload.get("status") or {}).get("conditions") or []
    return {"active": (workload.get("spec") or {}).get("active", True),
            "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message")} for c in conditions]}


def job_action(o: Observation, status: dict, ttl: int | None = None) -> str | None:
    """What the Job needs: create, suspend, resume, delete, expire (its TTL, `ttl`), or nothing.
    Never a second Job for a resource whose first is gone (lost_job). A finished Job gets its TTL
    only once its outcome is in the status as stored (o.old), never before. The user's suspend only
    ever adds a stop: without Kueue it suspends the Job; with Kueue (which un-suspends what it
    admits) the Job is deleted, and created again on resume (its video resumes from the checkpoint
    the stopped runner saved)."""
    spec, job = o.spec, o.job
    if spec is None:
        return None
    if status["phase"] in TERMINAL:
        recorded = o.old.get("phase") in TERMINAL
        expires = job is not None and job["spec"].get("ttlSecondsAfterFinished") is None and ttl is not None
        return "expire" if recorded and expires and not job["metadata"].get("deletionTimestamp") else None
    if job is None:
        return None if lost_job(o) or (spec.suspend and spec.queue_name) else "create"
    if job["metadata"].get("deletionTimestamp"):
        return None
    if spec.queue_name:
        return "delete" if spec.suspend else None
    if bool(job["spec"].get("suspend")) != spec.suspend:
        return "suspend" if spec.suspend else "resume"
    return None


def uses_own_redis(spec: VideoGenerationSpec | None, settings: Settings) -> bool:
    """Live progress comes from the operator's Redis; a resource naming another has none in status."""
    return bool(settings.redis_url) and spec is not None and spec.reporting.redis_url in (None, settings.redis_url)


class Routine(Exception):
    """A routine API answer (gone meanwhile, namespace terminating, API server away): one line, a retry."""

    def __init__(self, message: str, retry: float | None):
        super().__init__(message)
        self.retry = retry


def routine(error: Exception) -> Routine | None:
    if isinstance(error, kubernetes.client.ApiException):
        if error.status == 404:
            return Routine("gone meanwhile", None)
        if error.status == 409:
            return Routine("changed meanwhile; again from the watch's newer copy", 1.0)
        if error.status == 403 and "being terminated" in (error.body or ""):
            return Routine("its namespace is being deleted", None)
        if error.status in (429, 500, 502, 503, 504):
            return Routine(f"API server answered {error.status} {error.reason}", RETRY_S)
        return None
    if isinstance(error, (urllib3.exceptions.HTTPError, OSError)):
        return Routine(f"API server unreachable ({type(error).__name__})", RETRY_S)
    return None


class Writers:
    """One writer per resource: nudges coalesce into the next pass; no lock shared by all."""

    def __init__(self, reconcile):
        self.reconcile = reconcile
        self.running: dict[Key, asyncio.Task] = {}
        self.again: set[Key] = set()  # a nudge came during a pass

    def nudge(self, key: Key) -> None:
        if key in self.running:
            self.again.add(key)
            return
        self.running[key] = asyncio.get_running_loop().create_task(self.run(key))

    def later(self, key: Key, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.nudge, key)

    async def run(self, key: Key) -> None:
        try:
            while True:
                await self.reconcile(key)
                if key not in self.again:
                    return
                self.again.discard(key)
        finally:
            del self.running[key]


@dataclass
class Remembered:
    """What the operator keeps about one resource (of one uid) between passes, beside kopf's
    indexes. All of it goes when the resource does (Reconciler.forget)."""

    uid: str
    written: tuple[str, dict] | None = None  # (resourceVersion written over, the answer), until the watch has it
    created: dict | None = None  # the Job just created, until the watch has it
    refused: str | None = None  # why the API server refused its Job
    failure: tuple[str, str] | None = None  # (Job uid, the Job controller's latest FailedCreate), until a pod exists
    task: str | None = None  # its Redis task id, while its runners' nudges matter
    progress_due: float = 0.0  # when a runner's next nudge may run the writer (monotonic)


class Reconciler:
    def __init__(self, settings: Settings, indexes, leading=lambda namespace: True, api_client=None):
        self.settings = settings
        self.indexes = indexes  # kopf's: videogenerations, jobs and pods by (namespace, name)
        self.leading = leading
        if api_client is None:  # one pooled connection for each thread of the lanes below
            configuration = kubernetes.client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = sum(LANES.values())
            api_client = kubernetes.client.ApiClient(configuration)
        self.api = KubeAPI(api_client)  # plain JSON: no typed API classes, no model objects
        # The client is synchronous: its calls run in threads, in lanes, so that creating Jobs never
        # waits behind status writes, nor those behind events (which nobody waits for).
        self.lanes = {lane: ThreadPoolExecutor(size, thread_name_prefix=lane) for lane, size in LANES.items()}
        self.redis = ProgressSource(settings) if settings.redis_url else None
        self.writers = Writers(self.reconcile)
        self.remembered: dict[Key, Remembered] = {}
        self.tasks: dict[str, Key] = {}  # Redis task id → resource (an index of remembered[*].task)
        self.ready = False  # kopf has filled the indexes (its handlers run only then)

    async def call(self, lane: str, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self.lanes[lane], lambda: fn(*args, **kwargs))

    # --- observations -------------------------------------------------------------------------

    def resource(self, key: Key) -> dict | None:
        """The resource as last seen: the watch's copy, or the answer to our own write when the
        watch has not delivered it yet."""
        found = list(self.indexes["videogenerations"].get(key, []))
        if not found:
            return None
        body = found[0]
        memory = self.memory(key, body["metadata"]["uid"])
        if memory.written and memory.written[0] == body["metadata"]["resourceVersion"]:
            return memory.written[1]
        memory.written = None  # the watch caught up
        return body

    def memory(self, key: Key, uid: str) -> Remembered:
        """What is remembered about the resource of this uid (an earlier namesake's is dropped)."""
        memory = self.remembered.get(key)
        if memory is None or memory.uid != uid:
            self.forget(key)
            memory = self.remembered[key] = Remembered(uid)
        return memory

    def job(self, key: Key, uid: str) -> dict | None:
        """Its Job: the watch's copy if owned by this resource (not by an earlier one of the same name)."""
        owned = [j for j in self.indexes["jobs"].get(key, []) if uid in j["metadata"]["owners"]]
        memory = self.memory(key, uid)
        if owned:
            memory.created = None
            return owned[0]
        return memory.created

    def pods(self, key: Key, job: dict | None) -> list[dict]:
        if job is None:
            return []
        return [p for p in self.indexes["pods"].get(key, []) if p["metadata"]["job"] == job["metadata"]["uid"]]

    def parse(self, body: dict) -> tuple[VideoGenerationSpec | None, GenerationRequest | None, str | None]:
        """The spec and the runner's request, built once per reconcile; or why not (InvalidSpec)."""
        try:
            spec, request = jobs.parse_spec(body, self.settings)
        except jobs.InvalidSpec as e:
            return None, None, str(e)
        return spec, request, None

    async def observe(self, key: Key, body: dict, parsed: tuple) -> Observation:
        meta, old = body["metadata"], body.get("status") or {}
        spec, _, invalid = parsed
        memory = self.memory(key, meta["uid"])
        invalid = invalid or memory.refused  # the API server refused its Job
        job = self.job(key, meta["uid"])
        pods = self.pods(key, job)
        workload = next(iter(self.indexes["workloads"].get(job["metadata"]["uid"], [])), None) if job else None
        progress = live = None
        if uses_own_redis(spec, self.settings) and old.get("phase") not in TERMINAL:
            memory.task = jobs.task_id(*key)
            self.tasks[memory.task] = key
            progress = await self.redis.state(memory.task)
            live = self.redis.live
        failure = None
        if job is not None and memory.failure and memory.failure[0] == job["metadata"]["uid"]:
            failure = None if pods else memory.failure[1]
            if pods:
                memory.failure = None  # a complaint counts until the pod exists
        return Observation(spec=spec, meta=meta, old=old, job=job, pods=pods, workload=workload, progress=progress,
                           live_progress=live, creation_failure=failure, invalid=invalid, now=now())

    async def look_for_failures(self) -> None:
        """The Job controller's latest FailedCreate warning for each Job without a pod (a quota, an
        admission policy refused the pod), which the Job's own status does not carry: one list of
        such events per namespace that has one of these Jobs, on the periodic pass only."""
        podless: dict[str, dict[str, Key]] = {}  # namespace → Job uid → resource
        for key in self.unfinished():
            body = self.resource(key)
            job = self.job(key, body["metadata"]["uid"]) if body else None
            if job is not None and not job["spec"].get("suspend") and not self.pods(key, job) and self.leading(key[0]):
                podless.setdefault(key[0], {})[job["metadata"]["uid"]] = key
        for namespace, uids in podless.items():
            try:
                answer = await self.call("events", self.api.list_namespaced_event, namespace,
                                         field_selector="involvedObject.kind=Job,reason=FailedCreate")
            except Exception as e:  # noqa: BLE001 - the next period asks again
                log.warning("FailedCreate events of %s not listed: %s", namespace, routine(e) or type(e).__name__)
                continue
            latest: dict[str, tuple[str, str]] = {}
            for event in answer.get("items") or []:
                uid = event.get("involvedObject", {}).get("uid")
                stamp = event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get(
                    "creationTimestamp") or ""
                if uid in uids and stamp >= latest.get(uid, ("",))[0]:
                    latest[uid] = (stamp, event.get("message") or "")
            for uid, (_, message) in latest.items():
                if (memory := self.remembered.get(uids[uid])) is not None:
                    memory.failure = (uid, message)

    # --- the one reconcile path ---------------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        try:
            await self.reconcile_once(key)
        except Exception as e:  # noqa: BLE001 - routine answers are one line; the rest are bugs
            known = routine(e)
            if known is None:
                log.exception("reconciling %s/%s failed", *key)
                self.writers.later(key, RETRY_S)
                return
            log.warning("%s/%s: %s", *key, known)
            if known.retry is not None:
                self.writers.later(key, known.retry)

    async def reconcile_once(self, key: Key) -> None:
        body = self.resource(key)
        if body is None or not self.ready or not self.leading(key[0]):
            return
        # 1. Observe.
        parsed = self.parse(body)
        o = await self.observe(key, body, parsed)
        # 2. The Job it needs.
        status = compute_status(o)
        action = job_action(o, status, jobs.job_ttl(o.spec, self.settings) if o.spec else None)
        if action is not None:
            await self.act(action, key, body, parsed)
            o = await self.observe(key, body, parsed)
            status = compute_status(o)
        # 3. The whole status, written over the version it was computed from.
        if _without_times(status) == _without_times(o.old):
            return
        meta = body["metadata"]
        answer = await self.call(
            "status",
            self.api.replace_namespaced_custom_object_status, GROUP, VERSION, key[0], PLURAL, key[1],
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "status": status,
             "metadata": {"name": key[1], "namespace": key[0], "resourceVersion": meta["resourceVersion"]}})
        memory = self.memory(key, meta["uid"])
        memory.written = (meta["resourceVersion"], trim_videogeneration(answer))
        if status["phase"] in TERMINAL and memory.task:
            self.tasks.pop(memory.task, None)
            memory.task = None
        await self.transition(body, o.old, status)

    async def act(self, action: str, key: Key, body: dict, parsed: tuple) -> None:
        name, (spec, request, _) = jobs.job_name(key[1]), parsed
        if action == "create":
            await self.create_job(body, spec, request)
        elif action == "delete":
            await self.call("jobs", self.api.delete_namespaced_job, name, key[0],
                            propagation_policy="Background")
        elif action == "expire":
            await self.call("jobs", self.api.patch_namespaced_job, name, key[0],
                            {"spec": {"ttlSecondsAfterFinished": jobs.job_ttl(spec, self.settings)}})
        else:
            await self.call("jobs", self.api.patch_namespaced_job, name, key[0],
                            {"spec": {"suspend": action == "suspend"}})

    async def create_job(self, body: dict, spec: VideoGenerationSpec, request: GenerationRequest) -> None:
        """Creates the resource's one Job unless it exists (its name is deterministic)."""
        meta = body["metadata"]
        manifest = jobs.build_job(body, spec, request, self.settings)
        try:
            created = await self.call("jobs", self.api.create_namespaced_job, meta["namespace"], manifest)
        except kubernetes.client.ApiException as e:
            if e.status in (400, 422):
                self.memory(key_of(meta), meta["uid"]).refused = f"the Job was refused: {refusal(e)}"[:1000]
                return
            if e.status != 409:
                raise
            # Ours and not yet watched, or an earlier resource's still being deleted: its deletion nudges.
            return
        self.memory(key_of(meta), meta["uid"]).created = trim_job(created)
        metrics.JOBS_CREATED.inc()
        self.event(body, "Normal", "JobCreated", f"created Job {manifest['metadata']['name']}")

    # --- events and metrics -------------------------------------------------------------------

    async def transition(self, body: dict, old: dict, status: dict) -> None:
        if status["phase"] != old.get("phase"):
            metrics.TRANSITIONS.labels(phase=status["phase"]).inc()
            if status["phase"] == "Succeeded" and (status.get("output") or {}).get("timings"):
                metrics.GENERATION_SECONDS.observe(status["output"]["timings"]["total"])
        event = transition_event(old, status)
        if event is not None:
            self.event(body, *event)

    def event(self, body: dict, kind: str, reason: str, message: str) -> None:
        """Posted in the events lane; nothing waits for it."""
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

        def post():
            try:
                self.api.create_namespaced_event(meta["namespace"], event)
            except Exception as e:  # noqa: BLE001 - an event is best effort
                log.warning("event %s of %s/%s not posted: %s", reason, meta["namespace"], meta["name"],
                            getattr(e, "reason", None) or type(e).__name__)

        self.lanes["events"].submit(post)

    # --- what nudges the writers --------------------------------------------------------------

    def unfinished(self) -> list[Key]:
        """Resources whose writer has work left: not yet terminal, or a finished Job without its TTL."""
        return [key for key, found in self.indexes["videogenerations"].items() for body in found
                if (body.get("status") or {}).get("phase") not in TERMINAL
                or any(j["spec"].get("ttlSecondsAfterFinished") is None for j in self.indexes["jobs"].get(key, []))]

    def nudge_all(self) -> None:
        for key in self.unfinished():
            self.writers.nudge(key)

    def forget(self, key: Key, uid: str | None = None) -> None:
        """Everything remembered about the resource (of `uid`, when given: a namesake created since
        keeps its own): it is gone."""
        memory = self.remembered.get(key)
        if memory is None or (uid is not None and memory.uid != uid):
            return
        del self.remembered[key]
        if memory.task:
            self.tasks.pop(memory.task, None)

    def progress_nudged(self, task: str) -> None:
        """A runner's nudge: its resource's writer, at most once per progress interval."""
        key = self.tasks.get(task)
        memory = self.remembered.get(key) if key else None
        if memory is None:
            return
        wait = memory.progress_due - time.monotonic()
        memory.progress_due = time.monotonic() + max(wait, 0.0) + self.settings.progress_interval_seconds
        if wait > 0:
            self.writers.later(key, wait)
        else:
            self.writers.nudge(key)

    async def resync(self) -> None:
        """Every resync interval, every unfinished resource again, from the indexes, after one list
        of FailedCreate events per namespace with a Job that has no pod.

        One task for all resources, not `@kopf.timer`: kopf's timers are per object and always
        put kopf's finalizer on it (a deletion then waits for the operator). Measured with 1,000
        resources on the bench's control plane (a bare kopf operator, 150 s): a timer on each
        took 299 MiB peak RSS, 1,013 API requests (a finalizer PATCH each) and 5.6 CPU-s; an
        index and one loop 86 MiB, 14 requests and 3.6 CPU-s."""
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            if self.ready:
                await self.look_for_failures()
            self.nudge_all()


def _without_times(status: dict) -> dict:
    """Status minus transition times, to skip writes that would change nothing else."""
    return {k: ([{kk: vv for kk, vv in c.items() if kk != "lastTransitionTime"} for c in v]
                if k == "conditions" else v) for k, v in status.items()}
