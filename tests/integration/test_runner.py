"""The runner end to end, as a pod runs it: the real CLI in its own process, tiny real
models through diffusers on the CPU, a real S3 protocol server and a real redis-server."""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from tests.support.services import S3_CREDENTIALS, wait_until

SMALL = {"width": 64, "height": 64, "frames": 9, "steps": 2}


def request_for(family, models, s3, redis_url, tmp_path, **overrides):
    request = {
        "task_id": f"t-{family}",
        "model": {"preset": family, "path": str(models[family])},
        "prompt": "a majestic eagle flying over the stormy sea",
        "negative_prompt": "blurry, low quality",
        "seed": 7,
        **SMALL,
        "output": {"path": str(tmp_path / "out.mp4"), "bucket": s3.bucket, "key": "videos/{model}/{task_id}.mp4",
                   "endpoint_url": s3.meta.endpoint_url, "region": "us-east-1"},
        "reporting": {"redis_url": redis_url},
    }
    request.update(overrides)
    return request


def start_runner(request: dict, tmp_path, *args: str) -> subprocess.Popen:
    env = {**os.environ, **S3_CREDENTIALS, "VIDEOGEN_REQUEST": json.dumps(request),
           "TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log")}
    return subprocess.Popen([sys.executable, "-m", "videogen_runner", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_runner(request: dict, tmp_path, *args: str):
    process = start_runner(request, tmp_path, *args)
    stdout, stderr = process.communicate(timeout=300)
    termination = json.loads((tmp_path / "termination-log").read_text())
    return process.returncode, termination, stderr


def stream_stages(redis_client, task_id):
    events = redis_client.xrange(f"videogen:task:{task_id}:events")
    stages = []
    for _, fields in events:
        if not stages or stages[-1] != fields["stage"]:
            stages.append(fields["stage"])
    return stages, events


@pytest.mark.parametrize("family", ["ti2v-5b", "t2v-a14b", "i2v-a14b"])
def test_each_family_makes_an_mp4_in_s3_and_reports_every_stage(family, tiny_models, s3, redis_client,
                                                                redis_server, tmp_path):
    extra = {}
    if family == "i2v-a14b":
        first_frame = io.BytesIO()
        Image.fromarray(np.full((64, 64, 3), (200, 40, 40), np.uint8)).save(first_frame, format="PNG")
        s3.put_object(Bucket=s3.bucket, Key="inputs/first.png", Body=first_frame.getvalue())
        extra["image"] = f"s3://{s3.bucket}/inputs/first.png"
    request = request_for(family, tiny_models, s3, redis_server.url, tmp_path, **extra)

    code, result, stderr = run_runner(request, tmp_path)

    assert code == 0, stderr
    key = f"videos/{family}/t-{family}.mp4"
    body = s3.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert body == (tmp_path / "out.mp4").read_bytes()
    assert result["output"]["uri"] == f"s3://{s3.bucket}/{key}"
    assert result["output"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert result["output"]["bytes"] == len(body)
    head = s3.head_object(Bucket=s3.bucket, Key=key)
    assert head["ContentType"] == "video/mp4"
    assert head["Metadata"]["sha256"] == result["output"]["sha256"]

    frames = iio.imread(body, extension=".mp4")
    assert frames.shape == (9, 64, 64, 3)
    fps = iio.immeta(body, extension=".mp4")["fps"]
    assert fps == (24 if family == "ti2v-5b" else 16)
    assert result["seed"] == 7
    assert all(result["timings"][stage] > 0 for stage in ("load", "encode", "denoise", "decode", "upload"))

    stages, events = stream_stages(redis_client, request["task_id"])
    assert stages == ["loading", "encoding", "denoising", "decoding", "exporting", "uploading", "succeeded"]
    steps = [int(f["step"]) for _, f in events if f["stage"] == "denoising" and "step" in f]
    assert steps == [1, 2]
    state = redis_client.hgetall(f"videogen:task:{request['task_id']}")
    assert state["status"] == "succeeded" and state["percent"] == "100"
    assert json.loads(state["result"])["output"]["sha256"] == result["output"]["sha256"]
    assert redis_client.ttl(f"videogen:task:{request['task_id']}") > 0


def test_same_seed_same_video(tiny_models, s3, redis_server, tmp_path):
    request = request_for("ti2v-5b", tiny_models, s3, redis_server.url, tmp_path,
                          output={"path": str(tmp_path / "a.mp4")})
    assert run_runner(request, tmp_path)[0] == 0
    request["output"] = {"path": str(tmp_path / "b.mp4")}
    assert run_runner(request, tmp_path)[0] == 0
    a, b = (iio.imread(tmp_path / name) for name in ("a.mp4", "b.mp4"))
    assert np.array_equal(a, b)


def test_succeeds_without_redis(tiny_models, s3, redis_server, tmp_path):
    request = request_for("ti2v-5b", tiny_models, s3, redis_server.url, tmp_path)
    with redis_server.stopped():
        code, result, stderr = run_runner(request, tmp_path)
    assert code == 0, stderr
    assert "progress not reported to Redis" in stderr
    assert s3.head_object(Bucket=s3.bucket, Key="videos/ti2v-5b/t-ti2v-5b.mp4")["ContentLength"] > 0


def test_s3_down_is_a_retryable_upload_failure(tiny_models, s3, s3_server, redis_client, redis_server, tmp_path):
    request = request_for("ti2v-5b", tiny_models, s3, redis_server.url, tmp_path)
    request["output"]["upload_retry_seconds"] = 2  # past boto3's own retries, a short wait of the pod's
    with s3_server.stopped():
        code, result, _ = run_runner(request, tmp_path)
    assert code == 20
    assert result["reason"] == "UploadFailed" and "s3://" in result["message"]
    assert result["timings"]["denoise"] > 0 and result["timings"]["upload"] > 0  # what the attempt spent
    assert (tmp_path / "out.mp4").stat().st_size > 0  # the video itself was made
    state = redis_client.hgetall("videogen:task:t-ti2v-5b")
    assert state["status"] == "failed" and state["error_reason"] == "UploadFailed"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"frames": 10}, "frames"),
        ({"width": 80}, "width"),  # TI2V-5B needs multiples of 32
        ({"steps": 0}, "steps"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "word " * 500}, "prompt"),
        ({"image": "file:///etc/passwd"}, "image"),
        ({"guidance_scale_2": 3.0}, "guidance_scale_2"),
        ({"output": {"bucket": "videos", "key": "../../etc/{task_id}"}}, "output.key"),
        ({"model": {"preset": "t2v-a14b", "path": "/nonexistent"}, "task": "i2v"}, "task"),
        ({"unknown_field": 1}, "unknown_field"),
        # Hostile requests: each reaches nothing and loads nothing.
        ({"image": "https://[::ffff:127.0.0.1]/x.png"}, "image"),
        ({"image": "https://[64:ff9b::a9fe:a9fe]/latest/meta-data"}, "image"),
        ({"image": "s3://videos/other-team/frame.png", "output": {"bucket": "videos", "prefix": "team-b/"}}, "image"),
        ({"output": {"bucket": "videos", "key": "vid\u00e9o/{task_id}.mp4"}}, "output.key"),
        ({"output": {"bucket": "videos", "endpoint_url": "http://key:secret@127.0.0.1:1"}}, "output.endpoint_url"),
        ({"reporting": {"redis_url": "redis://:secret@127.0.0.1:1/0"}}, "reporting.redis_url"),
        ({"model": {"preset": "ti2v-5b", "path": "/models/../../etc"}}, "model.path"),
        ({"loras": [{"path": "/models/../../../etc/passwd"}]}, "loras[0].path"),
        # An output folder that cannot be written: known before any GPU work, not after it.
        ({"output": {"path": "/dev/null/out.mp4"}}, "output.path"),
        ({"output": {"path": "/proc/videogen/"}}, "output.path"),
    ],
)
def test_bad_requests_fail_fast_naming_the_field(overrides, field, tiny_models, s3, redis_client, redis_server,
                                                 tmp_path):
    request = request_for("ti2v-5b", tiny_models, s3, redis_server.url, tmp_path, **overrides)
    started = time.monotonic()
    code, result, _ = run_runner(request, tmp_path)
    assert code == 10
    assert result["reason"] == "InvalidRequest"
    assert f"{field}:" in result["message"]
    assert time.monotonic() - started < 20  # refused before any model loads
    if "reporting" not in overrides:  # a Redis URL that holds a password is not used at all
        assert redis_client.hgetall("videogen:task:t-ti2v-5b")["error_reason"] == "InvalidRequest"


@pytest.mark.parametrize("host", ["localhost", "2130706433", "127.1", "0x7f000001", "0177.0.0.1"])
def test_hosts_that_resolve_to_loopback_are_refused_before_loading(host, tiny_models, s3, redis_client, redis_server,
                                                                   tmp_path):
    """Names and numeric spellings that only the resolver turns into 127.0.0.1: judged after
    resolution, a permanent bad request, and no model loaded."""
    task_id = "t-host-" + hashlib.sha256(host.encode()).hexdigest()[:8]
    request = request_for("ti2v-5b", tiny_models, s3, redis_server.url, tmp_path, task_id=task_id,
                          image=f"https://{host}:1/x.png")
    code, result, _ = run_runner(request, tmp_path)
    assert (code, result["reason"]) == (10, "InvalidRequest")
    assert result["message"].startswith(f"image: {host} resolves to ") and "loopback" in result["message"]
    stages, _ = stream_stages(redis_client, request["task_id"])
    assert "loading" not in stages and stages[-1] == "failed"


def test_missing_or_wrong_model_is_permanent(tiny_models, s3, redis_server, tmp_path):
    request = request_for("ti2v-5b", tiny_models, s3, redis_server.url, tmp_path,
                          model={"preset": "ti2v-5b", "path": str(tmp_path / "nowhere")})
    code, result, _ = run_runner(request, tmp_path)
    assert (code, result["reason"]) == (11, "ModelNotFound")
    assert "model.path" in result["message"]

    request["width"] = request["height"] = 64
    for preset, folder in (("t2v-a14b", "ti2v-5b"), ("t2v-a14b", "i2v-a14b")):
        request["model"] = {"preset": preset, "path": str(tiny_models[folder])}
        code, result, _ = run_runner(request, tmp_path)
        assert (code, result["reason"]) == (11, "ModelNotFound")
        assert f"holds a {folder} model, not a {preset} model" in result["message"]


@pytest.mark.parametrize("component, file, change", [
    (None, "model_index.json", {"transformer": ["wan_custom", "FastTransformer"]}),
    ("text_encoder", "config.json", {"auto_map": {"AutoModel": "modeling_custom.Encoder"}}),
    ("tokenizer", "tokenizer_config.json", {"auto_map": {"AutoTokenizer": ["tok.Custom", None]}}),
])
def test_a_model_folder_that_would_run_its_own_code_is_permanent(component, file, change, tiny_models, s3,
                                                                  redis_server, tmp_path):
    """trust_remote_code is never given: such a folder fails at once, not after retries."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_models["ti2v-5b"], folder)
    path = folder / component / file if component else folder / file
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    request = request_for("ti2v-5b", tiny_models, s3, redis_server.url, tmp_path,
                          model={"preset": "ti2v-5b", "path": str(folder)})
    code, result, _ = run_runner(request, tmp_path)
    assert (code, result["reason"]) == (11, "ModelNotFound")
    assert result["message"].startswith("model.path: ") and "code that comes with the model" in result["message"]


def test_sigterm_stops_cleanly_with_a_retryable_code(tiny_models, s3, redis_client, redis_server, tmp_path):
    request = request_for("ti2v-5b", tiny_models, s3, redis_server.url, tmp_path, steps=150)
    process = start_runner(request, tmp_path)
    key = "videogen:task:t-ti2v-5b"
    wait_until(lambda: redis_client.hget(key, "stage") == "denoising", 120, "denoising")
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 143
    result = json.loads((tmp_path / "termination-log").read_text())
    assert result["reason"] == "Terminated"
    assert redis_client.hget(key, "status") == "failed"
    assert not (tmp_path / "out.mp4").exists()


def test_legacy_command_line(tiny_models, s3, redis_client, redis_server, tmp_path):
    """The flags of the original generate_final.py still work, without a JSON request; its
    --output_path names a mounted folder, and the file is named per task inside it."""
    port = redis_server.url.rsplit(":", 1)[1].split("/")[0]
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    args = ["--model_path", str(tiny_models["t2v-a14b"]), "--output_path", str(outputs),
            "--prompt", "a red fox running in the snow", "--task_id", "legacy-1", "--redis_host", "127.0.0.1",
            "--redis_port", port, "--s3_bucket", s3.bucket, "--s3_endpoint_url", s3.meta.endpoint_url,
            "--size", "64*64", "--frame_num", "5", "--sample_steps", "2", "--base_seed", "3"]
    env = {**os.environ, **S3_CREDENTIALS, "TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log")}
    done = subprocess.run([sys.executable, "-m", "videogen_runner", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["output"]["uri"] == f"s3://{s3.bucket}/legacy-1.mp4"
    assert result["output"]["frames"] == 5 and result["output"]["path"] == str(outputs / "legacy-1.mp4")
    assert iio.imread(outputs / "legacy-1.mp4").shape == (5, 64, 64, 3)
    assert redis_client.hget("videogen:task:legacy-1", "status") == "succeeded"
