"""Status as a pure function of what the operator observes: the Job, its pods, Redis' progress.

No API calls here, so every phase and reason is unit-tested from plain dicts.
"""

from pydantic import ValidationError

from videogen_operator.models import VideoGenerationSpec
from videogen_runner.result import RunResult

# Stalled is kstatus' word for "will not progress": Flux's health checks (and kstatus users) see a
# failure through it, where Ready=False alone reads as still in progress.
CONDITION_TYPES = ("Ready", "Queued", "Running", "Succeeded", "Failed", "Suspended", "Stalled")
PHASE_OF_CONDITION = {"Ready": "Succeeded", "Queued": "Queued", "Running": "Running", "Succeeded": "Succeeded",
                      "Failed": "Failed", "Suspended": "Suspended", "Stalled": "Failed"}
WAITING_PROBLEMS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                    "CreateContainerError"}
TERMINAL = {"Succeeded", "Failed"}


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


def progress_from_redis(state: dict) -> dict:
    """The Redis hash (strings) as status.progress."""
    progress = {"stage": state.get("stage")}
    for field, key, kind in (("percent", "percent", float), ("step", "step", int),
                             ("totalSteps", "total_steps", int), ("etaSeconds", "eta_seconds", float)):
        if state.get(key) not in (None, ""):
            progress[field] = kind(float(state[key])) if kind is int else kind(state[key])
    return {k: v for k, v in progress.items() if v is not None}


def output_status(result: RunResult) -> dict:
    out = result.output
    return {"uri": out.uri, "bytes": out.bytes, "sha256": out.sha256, "frames": out.frames, "width": out.width,
            "height": out.height, "fps": out.fps, "seed": result.seed,
            "timings": result.timings.model_dump()}


def phase_of(spec: VideoGenerationSpec, job: dict | None, pods: list[dict],
             creation_failure: str | None = None) -> tuple[str, str, str]:
    """(phase, reason, message) from the Job, its pods, and the Job controller's latest complaint
    that it could not create a pod (a quota, an admission policy)."""
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
            return "Failed", result.reason or failed["reason"], result.message or failed.get("message", "")
        return "Failed", failed.get("reason", "JobFailed"), result or failed.get("message", "")
    if job.get("spec", {}).get("suspend"):
        if spec.suspend:
            return "Suspended", "Suspended", "spec.suspend is true"
        return "Queued", "WaitingForAdmission", f"waiting for Kueue to admit it from queue {spec.queue_name}"
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
        why = f"{result.reason}: {result.message}" if isinstance(result, RunResult) else (result or "pod failed")
        return "Pending", "Retrying", f"attempt failed ({why}); retrying"
    return "Running", "Finishing", "the runner has finished; waiting for the Job"


def compute_status(spec: VideoGenerationSpec, generation: int, old: dict, job: dict | None, pods: list[dict],
                   progress: dict | None, now: str, creation_failure: str | None = None) -> dict:
    """The whole status subresource for these observations."""
    if old.get("phase") in TERMINAL and job is None:
        return old  # the finished Job was cleaned up (TTL): the outcome stays
    phase, reason, message = phase_of(spec, job, pods, creation_failure)
    status = {"phase": phase, "reason": reason, "message": message[:2000], "observedGeneration": generation}
    if job is not None:
        job_status = job.get("status", {})
        status["jobName"] = job["metadata"]["name"]
        # The pods themselves, when the Job's counters lag behind them (they do, briefly).
        counted = sum(job_status.get(k) or 0 for k in ("active", "failed", "succeeded"))
        status["attempts"] = max(counted, len(pods))
        if job_status.get("startTime"):
            status["startTime"] = job_status["startTime"]
        finished = job_status.get("completionTime") or (job_condition(job, "Failed") or {}).get("lastTransitionTime")
        if phase in TERMINAL and finished:
            status["completionTime"] = finished

    if phase == "Succeeded":
        succeeded = [p for p in pods if p.get("status", {}).get("phase") == "Succeeded"]
        result = run_result(newest(succeeded)) if succeeded else None
        if isinstance(result, RunResult) and result.output:
            status["output"] = output_status(result)
        status["progress"] = {"stage": "succeeded", "percent": 100.0}
    elif phase == "Running" and progress:
        status["progress"] = progress_from_redis(progress)
    elif old.get("progress") and phase not in TERMINAL:
        status["progress"] = old["progress"]  # keep the last known progress through a retry or Redis outage

    status["conditions"] = conditions(phase, reason, message, old.get("conditions") or [], generation, now)
    return status


def conditions(phase: str, reason: str, message: str, old: list[dict], generation: int, now: str) -> list[dict]:
    """One condition per type; lastTransitionTime moves only when the status flips."""
    previous = {c["type"]: c for c in old}
    result = []
    for kind in CONDITION_TYPES:
        true = PHASE_OF_CONDITION[kind] == phase
        status = "True" if true else "False"
        was = previous.get(kind, {})
        result.append({
            "type": kind,
            "status": status,
            "reason": reason if true else f"Not{PHASE_OF_CONDITION[kind]}",
            "message": message[:1000] if true else "",
            "lastTransitionTime": was["lastTransitionTime"] if was.get("status") == status else now,
            "observedGeneration": generation,
        })
    return result
