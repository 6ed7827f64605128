"""No GPU work thrown away, as pods meet it: the real runner stopped with SIGTERM mid-denoise and
started again as a new process resumes from its checkpoint and makes the very video an
uninterrupted run makes; an S3 outage during the upload is waited out; a finished video whose
upload failed is only uploaded by the next attempt. Tiny real models on the CPU, real S3 and Redis."""

import hashlib
import json
import signal
import time

import pytest
import torch

from tests.integration.test_runner import request_for, run_runner, start_runner, stream_stages
from tests.support.services import Outage
from videogen_runner import checkpoint
from videogen_runner.request import GenerationRequest

STEPS = 12


def resumable(family, tiny_models, s3, redis_server, tmp_path, task_id, **overrides):
    request = request_for(family, tiny_models, s3, redis_server.url, tmp_path, task_id=task_id,
                          **{"steps": STEPS, **overrides})
    request["output"]["prefix"] = "team-a/"
    request["output"]["key"] = "{task_id}.mp4"
    request["checkpoints"] = {"every_seconds": 0.01}  # tiny models: seconds of work are milliseconds
    return request


def stop_after_step(request, tmp_path, redis_client, step: int):
    """Runs the runner until it has finished `step`, then SIGTERMs it, as the kubelet does.

    A tiny model's last steps take milliseconds, so a stop that comes late would find the video
    done. Once Redis shows step `step - 1`, writes to Redis are paused: the runner then waits in
    its report of the next step (its Redis timeout is 2 s), after that step's state was offered
    for the checkpoint, and the SIGTERM finds it there."""
    key = f"videogen:task:{request['task_id']}"
    redis_client.delete(key)  # no step of an earlier process
    process = start_runner(request, tmp_path)
    deadline = time.monotonic() + 240
    while int(redis_client.hget(key, "step") or 0) < step - 1:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    redis_client.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
    try:
        while redis_client.info("clients")["blocked_clients"] < 1:  # the runner, reporting `step`
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")
    _, stderr = process.communicate(timeout=120)
    result = json.loads((tmp_path / "termination-log").read_text())
    return process.returncode, result, stderr


def checkpoint_key(request):
    return f"team-a/checkpoints/{request['task_id']}/state.safetensors"


def saved_header(s3, request) -> dict:
    data = s3.get_object(Bucket=s3.bucket, Key=checkpoint_key(request))["Body"].read()
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + length])["__metadata__"]


def no_key(s3, key) -> bool:
    return "Contents" not in s3.list_objects_v2(Bucket=s3.bucket, Prefix=key)


@pytest.mark.parametrize("family, stops", [
    ("ti2v-5b", [5]),
    ("t2v-a14b", [3, 9]),  # two experts: the boundary (step 2 of 12 at ratio 0.875) lies between the stops
])
def test_sigterm_mid_denoise_then_resume_gives_the_same_video(family, stops, tiny_models, s3, redis_client,
                                                              redis_server, tmp_path):
    whole = resumable(family, tiny_models, s3, redis_server, tmp_path / "whole", f"whole-{family}")
    (tmp_path / "whole").mkdir()
    code, uninterrupted, stderr = run_runner(whole, tmp_path / "whole")
    assert code == 0, stderr
    assert uninterrupted.get("resumed_from_step") is None and no_key(s3, checkpoint_key(whole))

    request = resumable(family, tiny_models, s3, redis_server, tmp_path, f"resumed-{family}")
    saved = []
    for stop in stops:  # each stop is a new process, resuming the one before
        code, result, stderr = stop_after_step(request, tmp_path, redis_client, stop)
        assert (code, result["reason"]) == (143, "Terminated"), stderr
        assert result["timings"]["denoise"] == 0.0 and result["timings"]["load"] > 0  # what it spent
        header = saved_header(s3, request)
        assert int(header["steps_done"]) >= stop and header["seed"] == "7"
        saved.append(int(header["steps_done"]))
    if family == "t2v-a14b":
        assert header["expert"] == "low_noise"

    code, result, stderr = run_runner(request, tmp_path)
    assert code == 0, stderr
    assert result["resumed_from_step"] == saved[-1] and f"resuming after step {saved[-1]}" in stderr
    assert result["output"]["sha256"] == uninterrupted["output"]["sha256"]  # bit-identical video
    body = s3.get_object(Bucket=s3.bucket, Key=f"team-a/{request['task_id']}.mp4")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == uninterrupted["output"]["sha256"]
    assert no_key(s3, f"team-a/checkpoints/{request['task_id']}/")  # removed on success
    _, events = stream_stages(redis_client, request["task_id"])
    steps = [int(f["step"]) for _, f in events if f.get("step")]
    assert steps[-1] == STEPS and saved[-1] + 1 in steps


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign", "reshaped"])
def test_a_corrupt_or_foreign_checkpoint_is_ignored(damage, tiny_models, s3, redis_client, redis_server, tmp_path):
    request = resumable("ti2v-5b", tiny_models, s3, redis_server, tmp_path, f"damaged-{damage}")
    code, _, stderr = stop_after_step(request, tmp_path, redis_client, 4)
    assert code == 143, stderr
    key = checkpoint_key(request)
    data = s3.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    if damage == "foreign":  # a checkpoint of another prompt, placed where this task's goes
        other = resumable("ti2v-5b", tiny_models, s3, redis_server, tmp_path, request["task_id"], prompt="a cat")
        other_code, _, _ = stop_after_step(other, tmp_path, redis_client, 4)
        assert other_code == 143
    elif damage == "reshaped":  # this request's fingerprint on latents of another shape (a forged file)
        forged = checkpoint.Checkpoint(4, 7, torch.zeros(1, 8, 1, 2, 2), {}, "transformer")
        print_ = checkpoint.fingerprint(GenerationRequest.model_validate(request))
        s3.put_object(Bucket=s3.bucket, Key=key, Body=checkpoint.encode(forged, print_))
    else:
        s3.put_object(Bucket=s3.bucket, Key=key, Body=b"\x00" * 64 if damage == "garbage" else data[:len(data) // 2])

    code, result, stderr = run_runner(request, tmp_path)
    assert code == 0, stderr
    why = {"garbage": "unreadable", "truncated": "unreadable", "foreign": "saved for another request",
           "reshaped": "latents of another shape"}[damage]
    assert result.get("resumed_from_step") is None and f"ignored: {why}" in stderr


def test_an_s3_outage_during_the_upload_is_waited_out(tiny_models, s3, s3_server, redis_client, redis_server,
                                                      tmp_path):
    path = Outage(int(s3_server.endpoint.rsplit(":", 1)[1]))
    request = resumable("ti2v-5b", tiny_models, s3, redis_server, tmp_path, "outage", steps=4)
    request["output"]["endpoint_url"] = path.endpoint
    request["checkpoints"] = {"every_seconds": 0}
    key = f"videogen:task:{request['task_id']}"
    with path.cut():  # S3 unreachable for 30 s, the upload inside them
        cut_at = time.monotonic()
        process = start_runner(request, tmp_path)
        while redis_client.hget(key, "stage") != "uploading":
            assert process.poll() is None and time.monotonic() < cut_at + 120, process.communicate()
            time.sleep(0.01)
        uploading_at = time.monotonic()
        time.sleep(max(cut_at + 30 - uploading_at, 10))  # 30 s in all, 10 s of them at least uploading
        assert process.poll() is None
    _, stderr = process.communicate(timeout=240)
    result = json.loads((tmp_path / "termination-log").read_text())
    assert process.returncode == 0, stderr
    assert "attempt 2 again in" in stderr and result["timings"]["upload"] >= 9
    assert s3.head_object(Bucket=s3.bucket, Key=f"team-a/{request['task_id']}.mp4")["ContentLength"] > 0
    stages, events = stream_stages(redis_client, request["task_id"])
    assert stages.count("denoising") == 1 and stages[-2:] == ["uploading", "succeeded"]
    retrying = [f["message"] for _, f in events if f.get("message")]
    assert retrying and retrying[0].startswith("upload attempt 1 failed") and "retrying in" in retrying[0]


def test_a_video_whose_upload_failed_is_only_uploaded_next_time(tiny_models, s3, s3_server, redis_client,
                                                                redis_server, tmp_path):
    path = Outage(int(s3_server.endpoint.rsplit(":", 1)[1]))
    request = resumable("ti2v-5b", tiny_models, s3, redis_server, tmp_path, "kept", steps=4)
    request["output"]["endpoint_url"] = path.endpoint
    request["output"]["upload_retry_seconds"] = 1
    request["checkpoints"] = {"every_seconds": 0.01, "folder": str(tmp_path / "volume" / "kept")}
    with path.cut():
        code, failed, stderr = run_runner(request, tmp_path)
    assert (code, failed["reason"]) == (20, "UploadFailed"), stderr
    assert failed["timings"]["denoise"] > 0 and failed["timings"]["export"] > 0  # the failed attempt's own
    assert (tmp_path / "volume" / "kept" / "video.mp4").exists()

    kept_sha = hashlib.sha256((tmp_path / "volume" / "kept" / "video.mp4").read_bytes()).hexdigest()
    (tmp_path / "out.mp4").unlink()  # a new pod: nothing of the last one's /tmp
    code, result, stderr = run_runner(request, tmp_path)
    assert code == 0, stderr
    assert result["output"]["sha256"] == kept_sha
    assert result["timings"]["load"] == 0.0 and result["timings"]["denoise"] == 0.0  # no regeneration
    assert result["resumed_from_step"] == 4
    body = s3.get_object(Bucket=s3.bucket, Key=f"team-a/{request['task_id']}.mp4")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result["output"]["sha256"]
    assert not list((tmp_path / "volume" / "kept").iterdir())  # removed on success
