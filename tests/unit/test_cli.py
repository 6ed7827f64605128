import json

import pytest

from videogen_runner.cli import build_parser, lora_flag, request_document
from videogen_runner.errors import InvalidRequest


def doc(*argv):
    return request_document(build_parser().parse_args(list(argv)))


def test_flags_lay_over_the_json_request(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"task_id": "j1", "model": {"preset": "t2v-a14b", "path": "/m"}, "prompt": "cat",
                                "steps": 30, "output": {"bucket": "b"}}))
    d = doc("--request", str(path), "--sample_steps", "12", "--s3_key", "x/{task_id}.mp4")
    assert d["steps"] == 12 and d["prompt"] == "cat"
    assert d["output"] == {"bucket": "b", "key": "x/{task_id}.mp4"}


def test_generate_final_flags(monkeypatch):
    monkeypatch.delenv("VIDEOGEN_REQUEST", raising=False)
    d = doc("--model_path", "/m", "--task", "t2v-A14B", "--prompt", "p", "--size", "832*480", "--frame_num", "33",
            "--base_seed", "4", "--redis_host", "redis", "--redis_port", "6380", "--s3_bucket", "b",
            "--s3_endpoint_url", "http://minio:9000", "--output_path", "/out/v.mp4", "--task_id", "t1",
            "--sample_solver", "euler")
    assert d["model"] == {"path": "/m", "preset": "t2v-a14b"}
    assert d["sampler"] == "euler"
    assert (d["width"], d["height"], d["frames"], d["seed"]) == (832, 480, 33, 4)
    assert d["reporting"]["redis_url"] == "redis://redis:6380/0"
    assert d["output"] == {"path": "/out/v.mp4", "bucket": "b", "endpoint_url": "http://minio:9000"}


def test_env_request(monkeypatch):
    monkeypatch.setenv("VIDEOGEN_REQUEST", json.dumps({"task_id": "e1", "prompt": "cat"}))
    assert doc()["task_id"] == "e1"
    monkeypatch.setenv("VIDEOGEN_REQUEST", "{not json")
    with pytest.raises(InvalidRequest, match="request: not valid JSON"):
        doc()


def test_bad_flags_are_invalid_requests():
    with pytest.raises(InvalidRequest, match="command line"):
        build_parser().parse_args(["--sample_steps", "many"])
    with pytest.raises(InvalidRequest, match="size"):
        doc("--size", "big")


def test_lora_flag():
    assert lora_flag("/l/a.safetensors:0.7") == {"path": "/l/a.safetensors", "weight": 0.7}
    assert lora_flag("/l/a.safetensors") == {"path": "/l/a.safetensors"}


def test_the_flags_types_and_help_are_the_request_models():
    """One declaration: a flag's type and help come from the request field it sets."""
    from videogen_runner.request import GenerationRequest

    actions = {a.dest: a for a in build_parser()._actions}
    assert actions["steps"].type is int and actions["guidance_scale"].type is float
    assert actions["prompt"].type is str
    assert actions["steps"].help == GenerationRequest.model_fields["steps"].description
    assert actions["output.key"].help.startswith("Object key template")
    assert {"--sample_steps", "--num_inference_steps", "--steps"} == set(actions["steps"].option_strings)
