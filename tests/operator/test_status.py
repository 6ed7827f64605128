"""Status as a pure function of the observations: the spec's verdict, the Job, its pods, Redis."""

from videogen_operator.models import VideoGenerationSpec
from videogen_operator.reconcile import job_action
from videogen_operator.status import CONDITION_TYPES, Observation, compute_status, transition_event
from videogen_runner.progress import ProgressState
from videogen_runner.result import RunResult, Timings, VideoOutput

SPEC = VideoGenerationSpec.model_validate({"model": {"preset": "ti2v-5b", "hostPath": "/m"}, "prompt": "p"})
NOW = "2026-11-26T10:00:00Z"


def job(conditions=(), suspend=False, **status):
    return {"metadata": {"name": "videogen-x"}, "spec": {"suspend": suspend},
            "status": {"conditions": [{"type": t, "status": "True", **extra} for t, extra in conditions], **status}}


def pod(phase, created="2026-11-26T09:00:00Z", state=None, conditions=None):
    if state is None and phase == "Running":
        state = {"running": {"startedAt": created}}
    return {"metadata": {"name": f"p-{created}", "creationTimestamp": created},
            "status": {"phase": phase, "conditions": conditions or [], "startTime": created,
                       "containerStatuses": [{"name": "runner", "state": state or {}}]}}


def terminated(result: RunResult):
    return {"terminated": {"exitCode": result.exit_code, "message": result.termination_message()}}


META = {"generation": 1, "creationTimestamp": "2026-11-26T08:00:00Z"}
AT_9 = 1795683600.0  # 2026-11-26T09:00:00Z, when the test pods start


def observe(job_=None, pods=(), progress=None, old=None, spec=SPEC, creation_failure=None, now=NOW, **more):
    return Observation(spec=spec, meta=META, old=old or {}, job=job_, pods=list(pods), progress=progress,
                       creation_failure=creation_failure, now=now, **more)


def status(*args, **kwargs):
    return compute_status(observe(*args, **kwargs))


def redis_state(**fields):
    return ProgressState.model_validate({"task_id": "t", "updated_at": AT_9 + 60, "stage": "denoising", **fields})


def test_no_job_yet_is_pending():
    s = status()
    assert (s["phase"], s["reason"]) == ("Pending", "Creating")
    assert {c["type"]: c["status"] for c in s["conditions"]} == {
        "Ready": "False", "Queued": "False", "Running": "False", "Succeeded": "False", "Failed": "False",
        "Suspended": "False", "Stalled": "False"}


def test_running_shows_progress_from_redis():
    hash_ = {"task_id": "t", "updated_at": str(AT_9 + 60), "stage": "denoising", "step": "12", "total_steps": "40",
             "percent": "32.0", "eta_seconds": "84.5"}
    s = status(job(active=1, startTime="t0"), [pod("Running")], ProgressState.from_hash(hash_))
    assert s["phase"] == "Running" and s["attempts"] == 1 and s["startTime"] == "t0"
    assert s["progress"] == {"stage": "denoising", "step": 12, "totalSteps": 40, "percent": 32.0, "etaSeconds": 84.5}


def test_succeeded_reports_the_output_from_the_termination_message():
    result = RunResult(task_id="t", status="succeeded", exit_code=0, seed=5,
                       output=VideoOutput(uri="s3://b/k.mp4", path="/tmp/o.mp4", bytes=100, sha256="ab" * 32,
                                          frames=121, width=1280, height=704, fps=24),
                       timings=Timings(denoise=80.0, total=95.0))
    s = status(job([("Complete", {})], succeeded=1, completionTime="t9"), [pod("Succeeded", state=terminated(result))])
    assert s["phase"] == "Succeeded" and s["completionTime"] == "t9"
    assert s["output"]["uri"] == "s3://b/k.mp4" and s["output"]["seed"] == 5 and s["output"]["timings"]["total"] == 95.0
    assert s["progress"] == {"stage": "succeeded", "percent": 100.0}
    assert {c["type"]: c["status"] for c in s["conditions"]}["Ready"] == "True"
    assert "resumedFromStep" not in s["output"]
    resumed = result.model_copy(update={"resumed_from_step": 17})
    s = status(job([("Complete", {})], succeeded=1, failed=1), [pod("Succeeded", state=terminated(resumed))])
    assert s["output"]["resumedFromStep"] == 17


def test_failed_takes_the_runners_reason():
    result = RunResult(task_id="t", status="failed", exit_code=11, reason="ModelNotFound", message="model.path: none")
    s = status(job([("Failed", {"reason": "PodFailurePolicy", "lastTransitionTime": "t5"})], failed=1),
               [pod("Failed", state=terminated(result))])
    assert (s["phase"], s["reason"], s["message"]) == ("Failed", "ModelNotFound", "spec.model.path: none")
    assert s["completionTime"] == "t5"


def test_failed_without_a_result_keeps_the_jobs_reason_and_the_log_tail():
    crashed = {"terminated": {"exitCode": 139, "message": "Segmentation fault (core dumped)\n"}}
    s = status(job([("Failed", {"reason": "BackoffLimitExceeded", "message": "too many"})], failed=3),
               [pod("Failed", state=crashed)])
    assert (s["reason"], s["message"]) == ("BackoffLimitExceeded", "Segmentation fault (core dumped)")
    assert s["attempts"] == 3


def test_unschedulable_and_image_pull_problems_are_shown():
    unschedulable = pod("Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}])
    s = status(job(active=1), [unschedulable])
    assert (s["phase"], s["reason"]) == ("Pending", "Unschedulable") and "Insufficient" in s["message"]
    pulling = pod("Pending", state={"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}})
    s = status(job(active=1), [pulling])
    assert (s["reason"], s["message"]) == ("ImagePullBackOff", "Back-off pulling image")


def test_a_retry_says_why_and_keeps_nothing_of_the_failed_attempt():
    failure = RunResult(task_id="t", status="failed", exit_code=20, reason="UploadFailed", message="s3 down")
    old = status(job(active=1), [pod("Running")], redis_state(step=150, total_steps=150, percent=95.0))
    s = status(job(failed=1), [pod("Failed", state=terminated(failure))], old=old)
    assert (s["phase"], s["reason"]) == ("Pending", "Retrying") and "UploadFailed: s3 down" in s["message"]
    assert "progress" not in s and s["attempts"] == 1
    # The second pod runs: Redis still holds the first attempt's last state until its runner writes.
    second = [pod("Failed", state=terminated(failure)), pod("Running", created="2026-11-26T09:10:00Z")]
    s = status(job(failed=1, active=1), second, redis_state(stage="failed", status="failed"), old=s)
    assert s["phase"] == "Running" and "progress" not in s and s["attempts"] == 2
    s = status(job(failed=1, active=1), second, redis_state(stage="loading", updated_at=AT_9 + 700, percent=0), old=s)
    assert s["progress"] == {"stage": "loading", "percent": 0.0}


def test_suspended_and_queued():
    suspended = VideoGenerationSpec.model_validate({**SPEC.model_dump(by_alias=True), "suspend": True})
    assert status(job(suspend=True), spec=suspended)["phase"] == "Suspended"
    queued = VideoGenerationSpec.model_validate({**SPEC.model_dump(by_alias=True), "queueName": "gpus"})
    s = status(job(suspend=True), spec=queued)
    assert (s["phase"], s["reason"]) == ("Queued", "WaitingForAdmission") and "gpus" in s["message"]


def test_transition_time_moves_only_when_a_condition_flips():
    first = status(job(active=1), [pod("Running")])
    later = status(job(active=1), [pod("Running")], old=first, now="2026-11-26T11:00:00Z")
    assert [c["lastTransitionTime"] for c in later["conditions"]] == [NOW] * len(CONDITION_TYPES)
    done = status(job([("Complete", {})]), [pod("Succeeded")], old=later, now="2026-11-26T12:00:00Z")
    times = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
    assert times["Succeeded"] == times["Running"] == "2026-11-26T12:00:00Z" and times["Queued"] == NOW


def test_a_finished_resource_keeps_its_outcome_when_the_job_is_cleaned_up():
    result = RunResult(task_id="t", status="succeeded", exit_code=0, seed=1,
                       output=VideoOutput(uri="s3://b/k.mp4", path="/o", bytes=1, sha256="0" * 64, frames=9,
                                          width=64, height=64, fps=24))
    done = status(job([("Complete", {})]), [pod("Succeeded", state=terminated(result))])
    assert status(None, [], old=done, now="later") == done  # Job gone after its TTL


def test_a_failure_target_is_final_and_a_deadline_says_so():
    s = status(job([("FailureTarget", {"reason": "PodFailurePolicy", "message": "exit 11"})]), [pod("Failed")])
    assert s["phase"] == "Failed"
    killed = RunResult(task_id="t", status="failed", exit_code=143, reason="Terminated", message="SIGTERM")
    s = status(job([("Failed", {"reason": "DeadlineExceeded", "message": "Job was active longer than specified"})]),
               [pod("Failed", state=terminated(killed))])
    assert (s["reason"], s["message"]) == ("DeadlineExceeded", "Job was active longer than specified")


def test_suspended_without_a_job_is_suspended():
    suspended = VideoGenerationSpec.model_validate({**SPEC.model_dump(by_alias=True), "suspend": True,
                                                    "queueName": "gpus"})
    assert status(None, spec=suspended)["phase"] == "Suspended"


def test_a_failure_is_stalled_for_kstatus_readers():
    s = status(job([("Failed", {"reason": "BackoffLimitExceeded", "message": "too many"})], failed=3))
    conditions = {c["type"]: c for c in s["conditions"]}
    assert conditions["Stalled"]["status"] == "True" and conditions["Stalled"]["reason"] == "BackoffLimitExceeded"
    assert conditions["Ready"]["status"] == "False"
    assert {c["type"]: c["status"] for c in status(job(active=1), [pod("Running")])["conditions"]}["Stalled"] == "False"


def test_ready_is_true_at_rest_as_asked_and_otherwise_says_why():
    """kstatus (Flux, cli-utils' waits) reads Ready: False is InProgress with its message, True is
    Current; so it carries the phase's reason and message, and is True for Succeeded and Suspended."""
    def ready(s):
        return next(c for c in s["conditions"] if c["type"] == "Ready")

    pulling = pod("Pending", state={"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}})
    assert ready(status(job(active=1), [pulling])) | {"lastTransitionTime": None} == {
        "type": "Ready", "status": "False", "reason": "ImagePullBackOff",
        "message": "ImagePullBackOff: Back-off pulling image", "lastTransitionTime": None, "observedGeneration": 1}
    queued = VideoGenerationSpec.model_validate({**SPEC.model_dump(by_alias=True), "queueName": "gpus"})
    r = ready(status(job(suspend=True), spec=queued))
    assert (r["status"], r["reason"]) == ("False", "WaitingForAdmission") and "queue gpus" in r["message"]
    running = ready(status(job(active=1), [pod("Running")]))
    assert (running["status"], running["message"]) == ("False", "Generating: the runner is generating")
    failed = status(job([("Failed", {"reason": "BackoffLimitExceeded", "message": "too many"})], failed=3))
    assert (ready(failed)["status"], ready(failed)["reason"]) == ("False", "BackoffLimitExceeded")
    stalled = next(c for c in failed["conditions"] if c["type"] == "Stalled")
    assert stalled["message"] == "BackoffLimitExceeded: too many"

    suspended = VideoGenerationSpec.model_validate({**SPEC.model_dump(by_alias=True), "suspend": True})
    at_rest = status(job(suspend=True), spec=suspended)
    assert (ready(at_rest)["status"], ready(at_rest)["reason"]) == ("True", "Suspended")
    assert {c["type"] for c in at_rest["conditions"] if c["status"] == "True"} == {"Ready", "Suspended"}
    # Resumed: Ready flips back to False, and its transition time moves.
    resumed = status(job(active=1), [pod("Running")], old=at_rest, now="2026-11-26T11:00:00Z")
    assert (ready(resumed)["status"], ready(resumed)["lastTransitionTime"]) == ("False", "2026-11-26T11:00:00Z")
    done = status(job([("Complete", {})]), [pod("Succeeded")], old=resumed, now="2026-11-26T12:00:00Z")
    assert (ready(done)["status"], ready(done)["reason"]) == ("True", "Generated")
    assert {c["type"] for c in done["conditions"] if c["status"] == "True"} == {"Ready", "Succeeded"}


def test_a_pod_the_job_cannot_create_shows_why():
    quota = 'pods "videogen-x-abcde" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=1'
    s = status(job(active=0), creation_failure=quota)
    assert (s["phase"], s["reason"], s["message"]) == ("Pending", "FailedCreate", quota)
    # Once a pod exists, its own state wins over an older complaint.
    assert status(job(active=1), [pod("Running")], creation_failure=quota)["reason"] == "Generating"


def test_an_invalid_spec_fails_whatever_was_written_before():
    why = "spec.output.key: unknown field {secret}"
    s = status(old={"phase": "Pending", "reason": "Creating", "progress": {"stage": "loading"}}, spec=None, invalid=why)
    assert (s["phase"], s["reason"], s["message"]) == ("Failed", "InvalidSpec", why)
    assert "progress" not in s and s["completionTime"] == NOW
    assert transition_event({"phase": "Pending", "reason": "Creating"}, s)[0:2] == ("Warning", "InvalidSpec")
    # Final: a later pass (a resync from an older copy included) computes the same status.
    assert status(job(active=1), [pod("Running")], old=s) == s


FORGED = RunResult(task_id="t", status="succeeded", exit_code=0, seed=3,
                   output=VideoOutput(uri="s3://videos/b/forged.mp4", path="/o", bytes=7, sha256="cd" * 32,
                                      frames=9, width=64, height=64, fps=24))


def test_a_job_gone_before_its_outcome_was_recorded_ends_job_lost_whatever_redis_says():
    running = status(job(active=1, startTime="t0"), [pod("Running")])
    forged = redis_state(stage="succeeded", status="succeeded", result=FORGED.model_dump_json())
    for progress in (forged, None):
        o = observe(None, [], progress, old=running)
        s = compute_status(o)
        assert (s["phase"], s["reason"], s["attempts"]) == ("Failed", "JobLost", 1)
        assert "videogen-x is gone" in s["message"] and "output" not in s
        assert job_action(o, s, ttl=0) is None  # and no second Job


def test_nothing_planted_in_redis_before_a_resource_decides_it():
    planted = [redis_state(stage="succeeded", status="succeeded", result=FORGED.model_dump_json(),
                           updated_at=AT_9 + 10**6),
               redis_state(stage="failed", status="failed", error_reason="Forged", updated_at=AT_9 + 10**6)]
    for state in planted:
        o = observe(None, [], state)
        s = compute_status(o)
        assert (s["phase"], job_action(o, s)) == ("Pending", "create")
        s = status(job([("Complete", {})], succeeded=1), [pod("Succeeded")], state, old=s)
        assert s["phase"] == "Succeeded" and "output" not in s  # the pod's message only: it had none


def test_progress_shows_only_what_the_running_pod_can_have_written():
    shown = lambda state: status(job(active=1), [pod("Running")], state).get("progress")  # noqa: E731
    assert shown(redis_state(step=3, total_steps=40))["step"] == 3
    assert shown(redis_state(step=3, updated_at=AT_9 - 1)) is None  # before the pod started: planted
    assert shown(redis_state(step=3, updated_at=AT_9 + 3600 + 61)) is None  # after now: a forged stamp


def test_a_finished_job_gets_its_ttl_only_once_its_outcome_is_recorded():
    done = job([("Complete", {})], succeeded=1)
    result = RunResult(task_id="t", status="succeeded", exit_code=0, output=FORGED.output)
    pods = [pod("Succeeded", state=terminated(result))]
    o = observe(done, pods, old=status(job(active=1), [pod("Running")]))
    s = compute_status(o)
    assert s["phase"] == "Succeeded" and job_action(o, s, ttl=0) is None  # the status is written first
    o = observe(done, pods, old=s)
    assert job_action(o, compute_status(o), ttl=0) == "expire"
    assert job_action(o, compute_status(o), ttl=None) is None  # no TTL configured: the Job stays
    expiring = {**done, "spec": {**done["spec"], "ttlSecondsAfterFinished": 0}}
    o = observe(expiring, pods, old=s)
    assert job_action(o, compute_status(o), ttl=0) is None
    # Gone after its TTL: the recorded outcome stays.
    assert status(None, [], old=s) == s


def test_the_job_action_follows_suspend_and_kueue():
    suspended = VideoGenerationSpec.model_validate({**SPEC.model_dump(by_alias=True), "suspend": True})
    queued = VideoGenerationSpec.model_validate({**SPEC.model_dump(by_alias=True), "queueName": "gpus"})
    held = VideoGenerationSpec.model_validate({**queued.model_dump(by_alias=True), "suspend": True})

    def action(job_, spec, old=None):
        o = observe(job_, [], spec=spec, old=old)
        return job_action(o, compute_status(o))

    assert action(None, SPEC) == "create" and action(None, held) is None
    assert action(job(active=1), suspended) == "suspend" and action(job(suspend=True), SPEC) == "resume"
    assert action(job(suspend=True), queued) is None  # Kueue's to un-suspend
    assert action(job(active=1), held) == "delete"
    assert action(None, queued, old={"phase": "Suspended", "jobName": "videogen-x"}) == "create"


def test_attempts_never_go_down_while_an_evicted_pod_is_replaced():
    s = status(job(active=1), [pod("Running")])
    evicted = pod("Failed", state={"terminated": {"exitCode": 143}},
                  conditions=[{"type": "DisruptionTarget", "status": "True"}])
    s = status(job(active=0), [], old=s)  # the evicted pod deleted, its replacement not yet there
    assert s["attempts"] == 1
    s = status(job(active=1), [evicted, pod("Running", created="2026-11-26T09:30:00Z")], old=s)
    assert s["attempts"] == 2


def test_progress_available_says_when_redis_is_missing_and_clears():
    down = status(job(active=1), [pod("Running")], live_progress=(False, "RedisAuthFailed", "wrong password"))
    condition = {c["type"]: c for c in down["conditions"]}["ProgressAvailable"]
    assert (condition["status"], condition["reason"]) == ("False", "RedisAuthFailed")
    up = status(job(active=1), [pod("Running")], old=down, live_progress=(True, "RedisReachable", "ok"),
                now="2026-11-26T11:00:00Z")
    condition = {c["type"]: c for c in up["conditions"]}["ProgressAvailable"]
    assert (condition["status"], condition["lastTransitionTime"]) == ("True", "2026-11-26T11:00:00Z")
    assert "ProgressAvailable" not in {c["type"] for c in status(job(active=1), [pod("Running")])["conditions"]}


def test_events_come_once_per_change_and_warn_of_problems():
    pending = {"phase": "Pending", "reason": "Starting", "message": "m"}
    assert transition_event(pending, pending) is None
    assert transition_event(pending, {**pending, "reason": "Unschedulable"})[0] == "Warning"
    assert transition_event(pending, {"phase": "Running", "reason": "Generating", "message": "g"})[0] == "Normal"
    assert transition_event({"phase": "Running", "reason": "Generating"},
                            {"phase": "Running", "reason": "Finishing", "message": "f"}) is None


QUEUED = VideoGenerationSpec.model_validate({**SPEC.model_dump(by_alias=True), "queueName": "gpus"})


def workload(*conditions, active=True):
    """A Kueue Workload as the index keeps it; conditions as Kueue v0.17 wrote them in a real run."""
    fields = ("type", "status", "reason", "message")
    return {"active": active, "conditions": [dict(zip(fields, c, strict=True)) for c in conditions]}


PREEMPTED = ("Preempted to accommodate a workload (UID: 1, JobUID: 2) due to prioritization in the ClusterQueue; "
             "preemptor path: /cq; preemptee path: /cq")
QUOTA = ("couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor "
         "default-flavor, 1 more needed")


def test_kueues_own_words_tell_a_quota_wait_from_a_preemption_from_a_hold_that_needs_an_admin():
    held = job(suspend=True)
    cases = [
        (None, "WaitingForAdmission", "waiting for Kueue to admit it from queue gpus", False),
        (workload(("QuotaReserved", "False", "Pending", QUOTA)), "WaitingForQuota", QUOTA, False),
        (workload(("Evicted", "True", "Preempted", PREEMPTED), ("Preempted", "True", "InClusterQueue", PREEMPTED),
                  ("Requeued", "True", "Preempted", PREEMPTED), ("QuotaReserved", "False", "Pending", QUOTA)),
         "Preempted", PREEMPTED, False),
        (workload(("QuotaReserved", "False", "Inadmissible", "LocalQueue gpus doesn't exist")), "Inadmissible",
         "LocalQueue gpus doesn't exist", True),
        (workload(("Evicted", "True", "Deactivated", "The workload is deactivated"),
                  ("QuotaReserved", "False", "Pending", "The workload is deactivated"), active=False),
         "Deactivated", "The workload is deactivated", True),
        (workload(("Evicted", "True", "DeactivatedDueToRequeuingLimitExceeded", "exceeded")), "Deactivated",
         "exceeded", True),
        (workload(("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
                  ("Admitted", "True", "Admitted", "The workload is admitted")),
         "Admitted", "admitted by Kueue", False),
    ]
    for found, reason, words, stalled in cases:
        s = status(held, [], spec=QUEUED, workload=found)
        conditions = {c["type"]: c for c in s["conditions"]}
        assert (s["phase"], s["reason"]) == ("Queued", reason) and words in s["message"], (reason, s["message"])
        assert (conditions["Stalled"]["status"] == "True") == stalled, reason
        assert conditions["Queued"]["status"] == "True" and conditions["Ready"]["status"] == "False"
    preempted = status(held, [], spec=QUEUED, workload=cases[2][0])
    assert preempted["message"].endswith(f"waiting again: {QUOTA}")
    assert transition_event({"phase": "Running", "reason": "Generating"}, preempted)[:2] == ("Warning", "Preempted")
    # Once admitted and running, Kueue's earlier words are history.
    assert status(job(active=1), [pod("Running")], spec=QUEUED, workload=cases[2][0])["reason"] == "Generating"
