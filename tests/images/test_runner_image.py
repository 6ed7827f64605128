"""The runner image, built from Dockerfile.runner on the stand-in base, makes the tiny video as
its pod runs it: uid 10001, read-only root, only /tmp writable, the model read-only, the hub
offline (the image's own environment), the MP4 uploaded to the S3 server over HTTP."""

import hashlib
import json
import shutil
import subprocess

import pytest

from tests.support.images import Container, Mount
from tests.support.services import S3_CREDENTIALS


@pytest.fixture
def runner(images):
    container = Container(images, images.runner)
    yield container
    container.remove()


def test_the_image_is_configured_for_a_gpu_node(images):
    config = images.config(images.runner)
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["User"] == "10001" and config["Entrypoint"] == ["videogen-runner"]
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and "compute" in env["NVIDIA_DRIVER_CAPABILITIES"]
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRITON_CACHE_DIR"].startswith("/tmp/")


def test_the_runner_makes_the_tiny_video_in_its_image(runner, tiny_models, s3, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir(mode=0o1777)
    scratch.chmod(0o1777)  # an emptyDir: writable by the pod's user
    models = tmp_path / "models"  # a volume readable by the pod's user (pytest's own folders are not)
    model = shutil.copytree(tiny_models["ti2v-5b"], models / "ti2v-5b")
    for path in [models, *models.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    request = {
        "task_id": "in-image", "model": {"preset": "ti2v-5b", "path": f"/models/{model.name}"},
        "prompt": "a majestic eagle flying over the stormy sea", "seed": 7,
        "width": 64, "height": 64, "frames": 9, "steps": 2,
        "output": {"path": "/tmp/out.mp4", "bucket": s3.bucket, "key": "videos/{task_id}.mp4",
                   "endpoint_url": s3.meta.endpoint_url, "region": "us-east-1"},
    }
    env = {**S3_CREDENTIALS, "VIDEOGEN_REQUEST": json.dumps(request),
           "TERMINATION_MESSAGE_PATH": "/tmp/termination-log"}
    command = runner.command(["videogen-runner"], user="10001", env=env,
                             mounts=[Mount(scratch, "/tmp", writable=True), Mount(models, "/models")])
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    termination = json.loads((scratch / "termination-log").read_text())
    body = s3.get_object(Bucket=s3.bucket, Key="videos/in-image.mp4")["Body"].read()
    assert termination["output"]["sha256"] == hashlib.sha256(body).hexdigest() == \
        hashlib.sha256((scratch / "out.mp4").read_bytes()).hexdigest()
    assert (termination["output"]["frames"], termination["output"]["width"]) == (9, 64)


def test_the_root_filesystem_is_read_only_to_the_runner(runner, tmp_path):
    probe = "import os, pathlib; pathlib.Path(os.path.expanduser('~/x')).write_text('x')"
    command = runner.command(["python3", "-c", probe], user="10001", env={}, mounts=[])
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Read-only file system" in result.stderr
