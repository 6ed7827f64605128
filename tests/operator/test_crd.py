"""The CRD: generated from the models, and enforced by a real kube-apiserver."""

import dataclasses
import functools
import json
from pathlib import Path

import pytest
import yaml
from pydantic.alias_generators import to_camel

from videogen_operator import crd
from videogen_operator.job import build_job, build_request
from videogen_operator.models import PLACEMENT, VideoGenerationSpec
from videogen_operator.settings import Settings
from videogen_runner.request import GenerationRequest

CRD_FILE = Path(__file__).parents[2] / "crds" / "videogenerations.videogen.io.yaml"


def test_committed_crd_is_generated_from_the_models():
    assert yaml.safe_load(CRD_FILE.read_text()) == crd.crd(), "run: python -m videogen_operator.crd > " + str(
        CRD_FILE.relative_to(CRD_FILE.parents[1]))


def manifest(name: str, **spec) -> str:
    body = {"model": {"preset": "t2v-a14b", "pvc": {"claimName": "models"}, "path": "Wan2.2-T2V-A14B"},
            "prompt": "a fox in the snow", **spec}
    return json.dumps({"apiVersion": "videogen.io/v1alpha1", "kind": "VideoGeneration",
                       "metadata": {"name": name}, "spec": body})


@pytest.mark.cluster
def test_valid_spec_is_accepted_and_explained(crd_applied, kube_namespace):
    k = crd_applied
    k.kubectl("apply", "-n", kube_namespace, "-f", "-", input=manifest("ok", video={"frames": 81, "width": 1280}))
    got = json.loads(k.kubectl("get", "vg", "ok", "-n", kube_namespace, "-o", "json").stdout)
    assert got["spec"]["retries"] == 2 and got["spec"]["resources"]["gpus"] == 1  # server-side defaults
    explained = k.kubectl("explain", "videogenerations.spec.video.frames").stdout
    assert "4k+1" in explained


@pytest.mark.cluster
@pytest.mark.parametrize("spec, field, words", [
    ({"video": {"frames": 80}}, "spec.video.frames", "4k+1"),
    ({"video": {"width": 1000}}, "spec.video.width", "multiple of"),
    ({"model": {"preset": "ti2v-5b", "hostPath": "/m"}, "video": {"height": 720}}, "spec.video.height",
     "multiple of 32"),
    ({"sampling": {"steps": 0}}, "spec.sampling.steps", "greater than or equal to 1"),
    ({"prompt": "   "}, "spec.prompt", "must not be blank"),
    ({"prompt": "x" * 2001}, "spec.prompt", "2000"),
    ({"task": "i2v"}, "spec.task", "not supported"),
    ({"model": {"preset": "i2v-a14b", "hostPath": "/m"}}, "spec.image", "required"),
    ({"image": "file:///etc/passwd", "task": "t2v"}, "spec.image", "should match"),
    ({"model": {"preset": "ti2v-5b", "hostPath": "/m"}, "sampling": {"guidanceScale2": 3}},
     "spec.sampling.guidanceScale2", "two-expert"),
    ({"model": {"preset": "t2v-a14b"}}, "spec.model", "exactly one of pvc or hostPath"),
    ({"model": {"preset": "t2v-a14b", "hostPath": "/m", "pvc": {"claimName": "c"}}}, "spec.model", "exactly one"),
])
def test_invalid_specs_are_refused_naming_the_field(crd_applied, kube_namespace, spec, field, words):
    result = crd_applied.kubectl("apply", "-n", kube_namespace, "-f", "-", input=manifest("bad", **spec), check=False)
    assert result.returncode != 0
    assert field in result.stderr and words in result.stderr, result.stderr


@pytest.mark.cluster
def test_names_that_cannot_label_a_pod_are_refused(crd_applied, kube_namespace):
    result = crd_applied.kubectl("apply", "-n", kube_namespace, "-f", "-", input=manifest("x" * 64), check=False)
    assert result.returncode != 0 and "metadata.name" in result.stderr and "63" in result.stderr, result.stderr


@pytest.mark.cluster
def test_spec_is_immutable_except_suspend(crd_applied, kube_namespace):
    k = crd_applied
    k.kubectl("apply", "-n", kube_namespace, "-f", "-", input=manifest("frozen"))
    k.kubectl("patch", "vg", "frozen", "-n", kube_namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}')
    for patch in ('{"spec": {"prompt": "something else"}}', '{"spec": {"video": {"frames": 9}}}'):
        result = k.kubectl("patch", "vg", "frozen", "-n", kube_namespace, "--type=merge", "-p", patch, check=False)
        assert result.returncode != 0 and "immutable" in result.stderr, result.stderr


EXAMPLES = sorted((CRD_FILE.parents[1] / "examples").glob("*.yaml"))


@pytest.mark.cluster
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_every_example_is_accepted_and_becomes_a_runner_request(crd_applied, kube_namespace, example):
    document = yaml.safe_load(example.read_text())
    namespace = document["metadata"].pop("namespace", kube_namespace)  # an example's own, for its s3:// keys
    crd_applied.kubectl("apply", "--dry-run=server", "-n", kube_namespace, "-f", "-", input=json.dumps(document))
    spec = VideoGenerationSpec.model_validate(document["spec"])
    settings = Settings(runner_image="runner:1", s3_bucket="videos", allowed_host_paths=["/"])
    request = build_request(spec, namespace, "example", settings)
    document["metadata"].update(namespace=namespace, uid="u-1")
    job = build_job(document, spec, request, settings)
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    read = GenerationRequest.model_validate_json(env["VIDEOGEN_REQUEST"])  # as the runner reads it
    assert read == request
    written = spec.model_dump()
    for field, place in PLACEMENT.items():  # what the example says arrives where the runner looks
        value = functools.reduce(dict.__getitem__, place, written)
        if isinstance(value, dict):
            assert read.acceleration.model_dump(include=set(value)) == value
        elif value is not None:
            assert getattr(read, field) == value, field


@pytest.mark.cluster
def test_list_items_come_back_as_written(crd_applied, kube_namespace):
    """GitOps tools diff lists whole: the server must not fill fields into list items."""
    k = crd_applied
    loras = [{"path": "loras/style.safetensors"}]
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    k.kubectl("apply", "-n", kube_namespace, "-f", "-", input=manifest("lists", loras=loras, tolerations=tolerations))
    got = json.loads(k.kubectl("get", "vg", "lists", "-n", kube_namespace, "-o", "json").stdout)["spec"]
    assert got["loras"] == loras and got["tolerations"] == tolerations


def test_the_family_rules_come_from_the_presets(monkeypatch):
    """A new model family is one edit of the runner's presets: its CEL rules follow."""
    from videogen_operator import models
    from videogen_runner.presets import PRESETS

    tiny = dataclasses.replace(PRESETS["t2v-a14b"], name="t2v-tiny", tasks=("t2v", "i2v"), size_multiple=8)
    monkeypatch.setitem(PRESETS, "t2v-tiny", tiny)
    rules = {r["fieldPath"]: r for r in models.spec_rules()}
    assert "self.model.preset == 'i2v-a14b' ? 16 : 8" in rules[".video.width"]["rule"]
    assert "8 for t2v-tiny" in rules[".video.height"]["message"]
    assert "t2v-tiny: t2v, i2v" in rules[".task"]["message"] and "['t2v', 'i2v']" in rules[".task"]["rule"]
    assert "'t2v-tiny'" in rules[".sampling.guidanceScale2"]["rule"]


SAME = ("type", "minimum", "maximum", "exclusiveMinimum", "pattern", "minLength", "maxLength", "enum", "description")


def test_every_field_a_resource_sets_is_the_runners_own_declaration():
    """One contract: each request field a resource sets (placed by job.PLACEMENT, or inside the
    output, reporting, lora and acceleration objects) has, in the CRD, the request's type, bounds,
    choices and description, from the one declaration in request.py."""
    request, spec = crd.openapi(GenerationRequest), crd.spec_schema()

    def at(schema: dict, path) -> dict:
        for part in path:
            schema = schema["items"] if part == "[]" else schema["properties"][part]
        return schema

    pairs = [(place, (field,)) for field, place in PLACEMENT.items() if field != "acceleration"]
    chosen = VideoGenerationSpec.model_fields["acceleration"].annotation.model_fields
    pairs += [(("acceleration", name),) * 2 for name in chosen]
    pairs += [(("output", n), ("output", n)) for n in ("bucket", "key", "endpoint_url", "region")]
    pairs += [(("reporting", "redis_url"), ("reporting", "redis_url")), (("loras", "[]", "weight"),) * 2,
              (("loras", "[]", "experts"),) * 2]
    assert len(pairs) == 30
    for spec_path, request_path in pairs:
        spec_path = [p if p == "[]" else to_camel(p) for p in spec_path]
        ours, theirs = at(spec, spec_path), at(request, request_path)
        assert {k: ours.get(k) for k in SAME} == {k: theirs.get(k) for k in SAME}, spec_path
