"""Status as a pure function of the Job, its pods and Redis' progress."""

from videogen_operator.models import VideoGenerationSpec
from videogen_operator.status import CONDITION_TYPES, compute_status, progress_from_redis
from videogen_runner.result import RunResult, Timings, VideoOutput

SPEC = VideoGenerationSpec.model_validate({"model": {"preset": "ti2v-5b", "hostPath": "/m"}, "prompt": "p"})
NOW = "2026-11-26T10:00:00Z"


def job(conditions=(), suspend=False, **status):
    return {"metadata": {"name": "videogen-x"}, "spec": {"suspend": suspend},
            "status": {"conditions": [{"type": t, "status": "True", **extra} for t, extra in conditions], **status}}


def pod(phase, created="2026-11-26T09:00:00Z", state=None, conditions=None):
    return {"metadata": {"name": f"p-{created}", "creationTimestamp": created},
            "status": {"phase": phase, "conditions": conditions or [],
                       "containerStatuses": [{"name": "runner", "state": state or {}}]}}


def terminated(result: RunResult):
    return {"terminated": {"exitCode": result.exit_code, "message": result.termination_message()}}


def status(job_=None, pods=(), progress=None, old=None, spec=SPEC, creation_failure=None):
    return compute_status(spec, 1, old or {}, job_, list(pods), progress, NOW, creation_failure)


def test_no_job_yet_is_pending():
    s = status()
    assert (s["phase"], s["reason"]) == ("Pending", "Creating")
    assert {c["type"]: c["status"] for c in s["conditions"]} == {
        "Ready": "False", "Queued": "False", "Running": "False", "Succeeded": "False", "Failed": "False",
        "Suspended": "False", "Stalled": "False"}


def test_running_shows_progress_from_redis():
    s = status(job(active=1, startTime="t0"), [pod("Running")],
               {"stage": "denoising", "step": "12", "total_steps": "40", "percent": "32.0", "eta_seconds": "84.5"})
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


def test_failed_takes_the_runners_reason():
    result = RunResult(task_id="t", status="failed", exit_code=11, reason="ModelNotFound", message="model.path: none")
    s = status(job([("Failed", {"reason": "PodFailurePolicy", "lastTransitionTime": "t5"})], failed=1),
               [pod("Failed", state=terminated(result))])
    assert (s["phase"], s["reason"], s["message"]) == ("Failed", "ModelNotFound", "model.path: none")
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


def test_retry_keeps_the_last_progress_and_says_why():
    failure = RunResult(task_id="t", status="failed", exit_code=20, reason="UploadFailed", message="s3 down")
    old = {"progress": {"stage": "uploading", "percent": 98.0}}
    s = status(job(failed=1), [pod("Failed", state=terminated(failure))], old=old)
    assert (s["phase"], s["reason"]) == ("Pending", "Retrying") and "UploadFailed: s3 down" in s["message"]
    assert s["progress"] == old["progress"]


def test_suspended_and_queued():
    suspended = VideoGenerationSpec.model_validate({**SPEC.model_dump(by_alias=True), "suspend": True})
    assert status(job(suspend=True), spec=suspended)["phase"] == "Suspended"
    queued = VideoGenerationSpec.model_validate({**SPEC.model_dump(by_alias=True), "queueName": "gpus"})
    s = status(job(suspend=True), spec=queued)
    assert (s["phase"], s["reason"]) == ("Queued", "WaitingForAdmission") and "gpus" in s["message"]


def test_transition_time_moves_only_when_a_condition_flips():
    first = status(job(active=1), [pod("Running")])
    later = compute_status(SPEC, 1, first, job(active=1), [pod("Running")], None, "2026-11-26T11:00:00Z")
    assert [c["lastTransitionTime"] for c in later["conditions"]] == [NOW] * len(CONDITION_TYPES)
    done = compute_status(SPEC, 1, later, job([("Complete", {})]), [pod("Succeeded")], None, "2026-11-26T12:00:00Z")
    times = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
    assert times["Succeeded"] == times["Running"] == "2026-11-26T12:00:00Z" and times["Queued"] == NOW


def test_progress_from_redis_ignores_empty_fields():
    assert progress_from_redis({"stage": "loading", "percent": "0", "eta_seconds": ""}) == {
        "stage": "loading", "percent": 0.0}


def test_a_finished_resource_keeps_its_outcome_when_the_job_is_cleaned_up():
    result = RunResult(task_id="t", status="succeeded", exit_code=0, seed=1,
                       output=VideoOutput(uri="s3://b/k.mp4", path="/o", bytes=1, sha256="0" * 64, frames=9,
                                          width=64, height=64, fps=24))
    done = status(job([("Complete", {})]), [pod("Succeeded", state=terminated(result))])
    assert compute_status(SPEC, 1, done, None, [], None, "later") == done  # Job gone after its TTL


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


def test_a_pod_the_job_cannot_create_shows_why():
    quota = 'pods "videogen-x-abcde" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=1'
    s = status(job(active=0), creation_failure=quota)
    assert (s["phase"], s["reason"], s["message"]) == ("Pending", "FailedCreate", quota)
    # Once a pod exists, its own state wins over an older complaint.
    assert status(job(active=1), [pod("Running")], creation_failure=quota)["reason"] == "Generating"
