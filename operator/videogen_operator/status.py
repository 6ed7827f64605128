"""Status as a pure function of what the operator observes: the spec's verdict, the Job, its
pods, Redis' progress and whether Redis answers. The one writer (reconcile.py) writes its result
whole, so nothing of an earlier attempt survives.

No API calls here, so every phase and reason is unit-tested from plain dicts.
"""

import datetime
from dataclasses import dataclass, field

from pydantic import ValidationError

from videogen_operator.job import spec_message
from videogen_operator.models import (
    OUTPUT_FIELDS,
    PROGRESS_FIELDS,
    RESULT_FIELDS,
    OutputStatus,
    Progress,
    VideoGenerationSpec,
)
from videogen_runner.progress import ProgressState
from videogen_runner.result import RunResult

# One condition per phase, plus two that kstatus (Flux's health checks, cli-utils' waits) goes by;
# Argo CD's script (docs/argocd-health.lua) reads the phase. Ready: True once the resource is at rest as asked
# (Succeeded, or Suspended while spec.suspend holds it), else False with the phase's own reason and
# message (kstatus shows them as InProgress: "ImagePullBackOff: Back-off pulling image …"). Stalled:
# True with Failed, kstatus' word for "will not progress" (Ready=False alone reads as in progress).
CONDITION_TYPES = ("Ready", "Queued", "Running", "Succeeded", "Failed", "Suspended", "Stalled")
PHASES_OF_CONDITION = {"Ready": ("Succeeded", "Suspended"), "Queued": ("Queued",), "Running": ("Running",),
                       "Succeeded": ("Succeeded",), "Failed": ("Failed",), "Suspended": ("Suspended",),
                       "Stalled": ("Failed",)}
WAITING_PROBLEMS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                    "CreateContainerError"}
TERMINAL = {"Succeeded", "Failed"}
NEEDS_AN_ADMIN = {"Inadmissible", "Deactivated"}  # Kueue holds that no waiting ends: Stalled, as kstatus reads it


def job_condition(job: dict, kind: str) -> dict | None:
    for condition in job.get("status", {}).get("conditions") or []:
        if condition["type"] == kind and condition["status"] == "True":
            return condition
    return None


def runner_state(pod: dict) -> dict:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status["name"] == "runner":
            return status.get("state") or {}
    return {}


def run_result(pod: dict) -> RunResult | str | None:
    """The runner's result from the termination message, or the raw text (a crash's log tail)."""
    message = runner_state(pod).get("terminated", {}).get("message")
    if not message:
        return None
    try:
        return RunResult.model_validate_json(message)
    except ValidationError:
        return message.strip()[-1000:]


def newest(pods: list[dict]) -> dict | None:
    return max(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), default=None)


def output_status(result: RunResult) -> dict:
    fields = {**result.output.model_dump(include=set(OUTPUT_FIELDS)), **result.model_dump(include=set(RESULT_FIELDS))}
    return OutputStatus.model_validate(fields).model_dump(by_alias=True, exclude_none=True)


def phase_of(spec: VideoGenerationSpec, job: dict | None, pods: list[dict],
             creation_failure: str | None = None, workload: dict | None = None) -> tuple[str, str, str]:
    """(phase, reason, message) from the Job, its pods, the Job controller's latest complaint
    that it could not create a pod (a quota, an admission policy), and Kueue's Workload."""
    if job is None:
        if spec.suspend:
            return "Suspended", "Suspended", "spec.suspend is true"
        return "Pending", "Creating", "creating the Job"
    if job_condition(job, "Complete"):
        return "Succeeded", "Generated", "the video is in place"
    # FailureTarget comes before Failed when podFailurePolicy fails the Job: no retry follows.
    failed = job_condition(job, "Failed") or job_condition(job, "FailureTarget")
    if failed:
        failed_pods = [p for p in pods if p.get("status", {}).get("phase") == "Failed"]
        result = run_result(newest(failed_pods)) if failed_pods else None
        if failed.get("reason") == "DeadlineExceeded":  # the killed pod's own message is only a consequence
            return "Failed", "DeadlineExceeded", failed.get("message", "")
        if isinstance(result, RunResult):
            message = spec_message(result.message or failed.get("message", ""))
            return "Failed", result.reason or failed["reason"], message
        return "Failed", failed.get("reason", "JobFailed"), result or failed.get("message", "")
    if spec.suspend and job["metadata"].get("deletionTimestamp"):  # under Kueue, a stop deletes the Job
        return "Suspended", "Stopping", "spec.suspend is true: the runner saves its checkpoint and stops"
    if job.get("spec", {}).get("suspend"):
        if spec.suspend:
            return "Suspended", "Suspended", "spec.suspend is true"
        return ("Queued", *kueue_hold(spec.queue_name, workload))
    pod = newest(pods)
    if pod is None and creation_failure:
        return "Pending", "FailedCreate", creation_failure
    if pod is None or pod.get("metadata", {}).get("deletionTimestamp"):
        return "Pending", "Starting", "waiting for the runner's pod"
    status = pod.get("status", {})
    if status.get("phase") == "Pending":
        for condition in status.get("conditions") or []:
            if condition["type"] == "PodScheduled" and condition["status"] == "False":
                return "Pending", condition.get("reason", "Unschedulable"), condition.get("message", "")
        waiting = runner_state(pod).get("waiting") or {}
        if waiting.get("reason") in WAITING_PROBLEMS:
            return "Pending", waiting["reason"], waiting.get("message", "")
        return "Pending", "Starting", "the runner's pod is starting"
    if status.get("phase") == "Running":
        return "Running", "Generating", "the runner is generating"
    if status.get("phase") == "Failed":  # the Job controller is about to retry
        result = run_result(pod)
        why = (f"{result.reason}: {spec_message(result.message or '')}" if isinstance(result, RunResult)
               else result or "pod failed")
        return "Pending", "Retrying", f"attempt failed ({why}); retrying"
    return "Running", "Finishing", "the runner has finished; waiting for the Job"


def kueue_hold(queue: str | None, workload: dict | None) -> tuple[str, str]:
    """Why Kueue holds the Job, in Kueue's own words (its Workload's conditions): deactivated or
    inadmissible (no waiting ends it: someone must act), preempted (and waiting again), waiting
    for quota, or admitted (the Job is being started)."""
    if workload is None:
        return "WaitingForAdmission", f"waiting for Kueue to admit it from queue {queue}"
    # (status, reason, message) of each condition type; absent ones as ("Unknown", "", "").
    said = {c["type"]: (c.get("status"), c.get("reason") or "", c.get("message") or "") for c in workload["conditions"]}
    evicted, evicted_why, evicted_words = said.get("Evicted", ("Unknown", "", ""))
    reserved, reserved_why, reserved_words = said.get("QuotaReserved", ("Unknown", "", ""))
    if not workload["active"] or (evicted == "True" and evicted_why.startswith("Deactivated")):
        return "Deactivated", (evicted_words or "its Kueue Workload is deactivated") + \
            "; it runs once an admin reactivates its Workload (spec.active)"
    if reserved == "False" and reserved_why == "Inadmissible":
        return "Inadmissible", f"{reserved_words} (queue {queue}): Kueue admits it once that is fixed"
    if said.get("Admitted", ("",))[0] == "True":
        return "Admitted", f"admitted by Kueue from queue {queue}; the Job is starting"
    waiting = reserved_words if reserved == "False" else ""
    if evicted == "True" and evicted_why == "Preempted":
        return "Preempted", evicted_words + (f"; waiting again: {waiting}" if waiting else "")
    if waiting:
        return "WaitingForQuota", f"{waiting} (queue {queue})"
    return "WaitingForAdmission", f"waiting for Kueue to admit it from queue {queue}"


@dataclass(frozen=True)
class Observation:
    """Everything the status is computed from, as the watches (and Redis) last showed it."""

    spec: VideoGenerationSpec | None  # None when the spec is invalid
    meta: dict  # the resource's metadata (creationTimestamp, generation)
    old: dict  # the status as written last
    job: dict | None = None  # its Job, owned by it
    workload: dict | None = None  # Kueue's Workload for that Job (trimmed: active, conditions), if any
    pods: list[dict] = field(default_factory=list)  # that Job's pods
    progress: ProgressState | None = None  # the runner's latest state in the operator's Redis
    live_progress: tuple[bool, str, str] | None = None  # (available, reason, message); None: no Redis to use
    creation_failure: str | None = None  # the Job controller's latest FailedCreate warning
    invalid: str | None = None  # InvalidSpec: the message, naming the field
    now: str = ""


def compute_status(o: Observation) -> dict:
    """The whole status subresource: whatever an earlier attempt wrote and this one does not, goes."""
    old = o.old
    generation = o.meta.get("generation")
    if old.get("phase") in TERMINAL and not (old["phase"] == "Succeeded" and not old.get("output") and o.job):
        return old  # final; the finished Job may be cleaned up (TTL): the outcome stays
    if o.invalid is not None:
        phase, reason, message = "Failed", "InvalidSpec", o.invalid
    elif o.job is None and lost_job(o) and o.spec is not None:
        phase, reason, message = "Failed", "JobLost", (
            f"its Job {o.old['jobName']} is gone and its outcome was never recorded (deleted by hand?); the video "
            "is not generated again: create a new resource to retry")
    else:
        phase, reason, message = phase_of(o.spec, o.job, o.pods, o.creation_failure, o.workload)
    status = {"phase": phase, "reason": reason, "message": message[:2000], "observedGeneration": generation}
    if old.get("jobName"):
        status["jobName"] = old["jobName"]
    attempts = max(old.get("attempts") or 0, len([p for p in o.pods if ran(p)]))
    if old.get("startTime"):
        status["startTime"] = old["startTime"]
    if o.job is not None:
        job_status = o.job.get("status", {})
        status["jobName"] = o.job["metadata"]["name"]
        attempts = max(attempts, (job_status.get("failed") or 0) + (job_status.get("succeeded") or 0))
        status["startTime"] = status.get("startTime") or job_status.get("startTime")
        finished = job_status.get("completionTime") or (job_condition(o.job, "Failed") or {}).get("lastTransitionTime")
        if phase in TERMINAL and finished:
            status["completionTime"] = finished
    if phase in TERMINAL and "completionTime" not in status:
        status["completionTime"] = o.now
    if attempts:
        status["attempts"] = attempts
    status = {k: v for k, v in status.items() if v is not None}

    result = finished_result(o)
    if phase == "Succeeded":
        if result is not None and result.output:
            status["output"] = output_status(result)
        status["progress"] = {"stage": "succeeded", "percent": 100.0}
    elif phase == "Running" and current_progress(o):
        status["progress"] = progress_status(current_progress(o))

    status["conditions"] = conditions(phase, reason, message, old.get("conditions") or [], generation, o.now)
    if o.live_progress is not None and phase not in TERMINAL:
        status["conditions"].append(live_progress_condition(o.live_progress, old.get("conditions") or [],
                                                            generation, o.now))
    return status


def lost_job(o: Observation) -> bool:
    """Whether a Job ran for this resource and is gone: creating another would generate the video
    twice. Status names every Job the operator created; a finished Job keeps its outcome until the
    operator has recorded it (it gets its TTL only then), so a Job that is gone before that was
    deleted by someone. Only what the Kubernetes API shows decides: Redis is written by runners of
    every namespace. A queued resource's Job deleted by `suspend` is not lost: resuming creates it anew."""
    return bool(o.old.get("jobName")) and o.old.get("phase") != "Suspended" and not (o.spec and o.spec.suspend)


def finished_result(o: Observation) -> RunResult | None:
    """The runner's result: the termination message of the newest succeeded pod (the kubelet
    writes it from the container's own file; nothing outside the pod can)."""
    succeeded = [p for p in o.pods if p.get("status", {}).get("phase") == "Succeeded"]
    result = run_result(newest(succeeded)) if succeeded else None
    return result if isinstance(result, RunResult) else None


def current_progress(o: Observation) -> ProgressState | None:
    """Redis' state when it can be the running pod's own: written since that pod started (a retry
    never shows the failed attempt's last step, a hash planted before never shows) and not later
    than now (a stamp from the future is forged; CLOCK_SKEW_S allows for the runner's node clock).
    Progress only: nothing read from Redis decides a phase, an output or a Job."""
    pod, state = newest(o.pods), o.progress
    started = (pod or {}).get("status", {}).get("startTime")
    if state is None or state.status != "running" or not started or not o.now:
        return None
    return state if seconds(started) <= state.updated_at <= seconds(o.now) + CLOCK_SKEW_S else None


def seconds(stamp: str) -> float:
    """Unix seconds of an RFC 3339 time as the API server writes it."""
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def ran(pod: dict) -> bool:
    """Whether the pod's runner started (an unschedulable or refused pod is no attempt)."""
    state = runner_state(pod)
    return bool(state.get("running") or state.get("terminated"))


def progress_status(state: ProgressState) -> dict:
    fields = state.model_dump(include=set(PROGRESS_FIELDS))
    return Progress.model_validate(fields).model_dump(by_alias=True, exclude_none=True)


def live_progress_condition(live: tuple[bool, str, str], old: list[dict], generation: int, now: str) -> dict:
    available, reason, message = live
    status = "True" if available else "False"
    was = next((c for c in old if c["type"] == "ProgressAvailable"), {})
    return {"type": "ProgressAvailable", "status": status, "reason": reason, "message": message[:1000],
            "lastTransitionTime": was["lastTransitionTime"] if was.get("status") == status else now,
            "observedGeneration": generation}


CLOCK_SKEW_S = 60.0
WARNING_REASONS = {"Unschedulable", "FailedCreate", "ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                   "CreateContainerConfigError", "CreateContainerError", "Retrying", "Preempted", *NEEDS_AN_ADMIN}


def transition_event(old: dict, new: dict) -> tuple[str, str, str] | None:
    """The Kubernetes event (type, reason, message) a status change deserves: one per phase
    change (but into Pending), or per new problem within a phase; Warning for failures and problems."""
    if (new["phase"], new["reason"]) == (old.get("phase"), old.get("reason")):
        return None
    if new["phase"] in (old.get("phase"), "Pending") and new["reason"] not in WARNING_REASONS:
        return None  # the way to the pod (Creating, Starting) is no news
    kind = "Warning" if new["phase"] == "Failed" or new["reason"] in WARNING_REASONS else "Normal"
    return kind, new["reason"], f"{old.get('phase') or 'New'} → {new['phase']}: {new['message']}"


def conditions(phase: str, reason: str, message: str, old: list[dict], generation: int, now: str) -> list[dict]:
    """One condition per type; lastTransitionTime moves only when the status flips. A true condition
    carries the phase's reason and message, a false one says Not<phase>; but Ready always carries
    the phase's reason, and Ready and Stalled, which kstatus shows by their message alone, put the
    reason in front of it ("ImagePullBackOff: Back-off pulling image …"), as Argo CD's script does."""
    previous = {c["type"]: c for c in old}
    result = []
    for kind in CONDITION_TYPES:
        true = phase in PHASES_OF_CONDITION[kind] or (kind == "Stalled" and reason in NEEDS_AN_ADMIN)
        status = "True" if true else "False"
        was = previous.get(kind, {})
        told = true or kind == "Ready"
        said = f"{reason}: {message}" if kind in ("Ready", "Stalled") and message else message
        result.append({
            "type": kind,
            "status": status,
            "reason": reason if told else f"Not{PHASES_OF_CONDITION[kind][0]}",
            "message": said[:1000] if told else "",
            "lastTransitionTime": was["lastTransitionTime"] if was.get("status") == status else now,
            "observedGeneration": generation,
        })
    return result
