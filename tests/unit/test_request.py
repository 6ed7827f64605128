from datetime import UTC

import pytest
from pydantic import ValidationError

from videogen_runner.presets import PRESETS
from videogen_runner.request import GenerationRequest, describe


def make(**fields):
    base = {"task_id": "job-1", "model": {"preset": "t2v-a14b", "path": "/models/a14b"}, "prompt": "a cat"}
    return GenerationRequest.model_validate({**base, **fields})


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_unset_fields_take_the_official_defaults(preset):
    p = PRESETS[preset]
    extra = {"image": "s3://in/first.png"} if preset == "i2v-a14b" else {}
    r = make(model={"preset": preset, "path": "/m"}, **extra)
    assert (r.width, r.height, r.frames, r.fps, r.steps) == (p.width, p.height, p.frames, p.fps, p.steps)
    assert (r.guidance_scale, r.guidance_scale_2, r.flow_shift) == (p.guidance_scale, p.guidance_scale_2, p.flow_shift)
    assert r.task == p.tasks[0]


def test_explicit_values_win():
    r = make(width=832, height=480, frames=33, steps=20, guidance_scale=6.0, guidance_scale_2=2.0, seed=5)
    assert (r.width, r.height, r.frames, r.steps, r.guidance_scale, r.guidance_scale_2, r.seed) == (
        832, 480, 33, 20, 6.0, 2.0, 5)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"frames": 80}, "frames: must be 4k+1"),
        ({"width": 1000}, "width: must be a multiple of 16"),
        ({"model": {"preset": "ti2v-5b", "path": "/m"}, "height": 720}, "height: must be a multiple of 32"),
        ({"steps": 0}, "greater than or equal to 1"),
        ({"steps": 151}, "less than or equal to 150"),
        ({"prompt": ""}, "at least 1 character"),
        ({"prompt": " \n\t"}, "must not be blank"),
        ({"prompt": "x" * 2001}, "at most 2000 characters"),
        ({"task": "i2v"}, "task: 'i2v' is not supported by t2v-a14b"),
        ({"model": {"preset": "i2v-a14b", "path": "/m"}}, "image: required for task i2v"),
        ({"model": {"preset": "ti2v-5b", "path": "/m"}, "task": "t2v", "image": "s3://b/k.png"}, "image: not allowed"),
        ({"model": {"preset": "ti2v-5b", "path": "/m"}, "guidance_scale_2": 2.0}, "guidance_scale_2: only"),
        ({"image": "http://example.com/a.png", "task": None}, "should match pattern"),
        ({"image": "file:///etc/passwd"}, "should match pattern"),
        ({"output": {"key": "{task_id}/{secret}.mp4"}}, "unknown template fields ['secret']"),
        ({"output": {"key": "../{task_id}.mp4"}}, "is not a safe object key"),
        ({"output": {"key": "/abs/{task_id}.mp4"}}, "is not a safe object key"),
        ({"output": {"key": "a//b.mp4"}}, "is not a safe object key"),
        ({"output": {"key": "a b.mp4"}}, "is not a safe object key"),
        ({"output": {"key": "{task_id!r}.mp4"}}, "is not a safe object key"),
        ({"output": {"bucket": "UPPER"}}, "String should match pattern"),
        ({"task_id": "Bad_ID"}, "String should match pattern"),
        ({"reporting": {"redis_url": "http://redis"}}, "String should match pattern"),
        ({"loras": [{"path": "/l.safetensors", "experts": "low_noise"}],
          "model": {"preset": "ti2v-5b", "path": "/m"}}, "loras[0].experts: must be 'both'"),
        ({"surprise": True}, "surprise: Extra inputs are not permitted"),
        # Hostile input: credentials in URLs, non-public literal addresses, paths and keys that escape.
        ({"reporting": {"redis_url": "redis://:hunter2@redis:6379/0"}}, "reporting.redis_url: must not hold user"),
        ({"output": {"endpoint_url": "http://KEY:SECRET@s3.local"}}, "output.endpoint_url: must not hold user"),
        ({"model": {"preset": "i2v-a14b", "path": "/m"}, "image": "https://user@example.com/a.png"},
         "image: must not hold user"),
        ({"model": {"preset": "i2v-a14b", "path": "/m"}, "image": "https://[::ffff:127.0.0.1]/x.png"},
         "image: host ::ffff:7f00:1 (that is 127.0.0.1) is loopback"),
        ({"model": {"preset": "i2v-a14b", "path": "/m"}, "image": "https://10.1.2.3/x.png"},
         "image: host 10.1.2.3 is private (RFC 1918)"),
        ({"model": {"preset": "i2v-a14b", "path": "/m"}, "image": "https://[fd12::1]:8443/x.png"},
         "image: host fd12::1 is unique-local"),
        ({"model": {"preset": "i2v-a14b", "path": "/m"}, "image": "https://[64:ff9b::a9fe:a9fe]/x.png"},
         "is link-local (cloud metadata)"),
        ({"model": {"preset": "i2v-a14b", "path": "/m"}, "image": "s3://in/../other/x.png"},
         "image: must be s3://bucket/key with a safe key"),
        ({"model": {"preset": "i2v-a14b", "path": "/m"}, "image": "s3://in/a/x.png", "output": {"prefix": "b/"}},
         "image: s3://in/a/x.png is outside this request's folder 'b/'"),
        ({"model": {"preset": "t2v-a14b", "path": "/models/../../etc"}}, "model.path: '/models/../../etc' must not"),
        ({"loras": [{"path": "/models/../../../etc/passwd"}]}, "loras[0].path: '/models/../../../etc/passwd'"),
        ({"output": {"prefix": "../"}}, "output.prefix: String should match pattern"),
    ],
)
def test_invalid_requests_name_the_problem(fields, message):
    with pytest.raises(ValidationError) as e:
        make(**fields)
    assert message in describe(e.value)


def test_keys_lie_under_the_prefix():
    r = make(model={"preset": "i2v-a14b", "path": "/m"}, image="s3://in/team-a/x.png",
             output={"bucket": "videos", "key": "{task_id}.mp4", "prefix": "team-a/"})
    assert r.object_key(seed=1) == "team-a/job-1.mp4"


def test_object_key_template():
    r = make(output={"bucket": "videos", "key": "{model}/{date}/{task_id}-{seed}.mp4"})
    from datetime import datetime

    assert r.object_key(seed=9, now=datetime(2026, 1, 2, tzinfo=UTC)) == "t2v-a14b/2026-01-02/job-1-9.mp4"


def test_request_round_trips_as_json():
    r = make(seed=3, loras=[{"path": "/l.safetensors", "weight": 0.5}])
    assert GenerationRequest.model_validate_json(r.model_dump_json()) == r
