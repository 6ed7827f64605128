"""Hostile specs, as a second team or an attacker would write them: each is refused by the real
API server with the full field path named, or (what only the operator can judge) ends as
InvalidSpec naming the field, before any Job exists."""

import json

import pytest

from videogen_operator.job import InvalidSpec, parse_spec
from videogen_operator.settings import Settings

SETTINGS = Settings(runner_image="runner:1", s3_bucket="videos", s3_credentials_secret="s3-credentials")
I2V = {"preset": "i2v-a14b", "pvc": {"claimName": "models"}}


def manifest(name: str, **spec) -> dict:
    body = {"model": {"preset": "t2v-a14b", "pvc": {"claimName": "models"}, "path": "Wan2.2-T2V-A14B"},
            "prompt": "a fox in the snow", **spec}
    return {"apiVersion": "videogen.io/v1alpha1", "kind": "VideoGeneration",
            "metadata": {"name": name, "namespace": "team-b", "uid": "u-1"}, "spec": body}


ADMISSION = [
    # Paths that would leave their volume, and names that can never resolve.
    ({"model": {**I2V, "path": "../../etc"}, "image": "s3://videos/x.png"}, "spec.model.path", "inside its volume"),
    ({"model": {"preset": "t2v-a14b", "pvc": {"claimName": "m"}, "path": "/etc"}}, "spec.model.path", "inside"),
    ({"model": {"preset": "t2v-a14b", "pvc": {"claimName": "m"}, "path": "a//b"}}, "spec.model.path", "inside"),
    ({"model": {"preset": "t2v-a14b", "pvc": {"claimName": "m"}, "path": "a/./b"}}, "spec.model.path", "inside"),
    ({"loras": [{"path": "../../../etc/passwd"}]}, "spec.loras[0].path", "inside its volume"),
    ({"loras": [{"path": "ok.safetensors"}, {"path": "x/.."}]}, "spec.loras[1].path", "inside its volume"),
    ({"model": {"preset": "t2v-a14b", "hostPath": "/data/../etc"}}, "spec.model.hostPath", "absolute path without"),
    ({"model": {"preset": "t2v-a14b", "pvc": {"claimName": "Bad_Name!"}}}, "spec.model.pvc.claimName", "DNS-1123"),
    ({"output": {"credentialsSecret": "Other_Team"}}, "spec.output.credentialsSecret", "DNS-1123"),
    ({"reporting": {"passwordSecret": {"name": "a b", "key": "k"}}}, "spec.reporting.passwordSecret.name", "DNS"),
    ({"priorityClassName": "Top!"}, "spec.priorityClassName", "DNS-1123"),
    ({"queueName": "team queue"}, "spec.queueName", "DNS-1123"),
    ({"workloadPriorityClassName": "high"}, "spec.workloadPriorityClassName", "needs spec.queueName"),
    ({"queueName": "gpus", "workloadPriorityClassName": "Top!"}, "spec.workloadPriorityClassName", "DNS-1123"),
    # Credentials in URLs: they would sit in plain text in the stored spec and the Job.
    ({"reporting": {"redisUrl": "redis://:password@redis:6379/0"}}, "spec.reporting.redisUrl", "user info"),
    ({"reporting": {"redisUrl": "rediss://default:pw@redis/0"}}, "spec.reporting.redisUrl", "user info"),
    ({"output": {"endpointUrl": "http://KEY:SECRET@minio:9000"}}, "spec.output.endpointUrl", "user info"),
    ({"model": I2V, "image": "https://user:pw@images.example/a.png"}, "spec.image", "user info"),
    # Input URLs with literal addresses that are not public (SSRF), in every spelling ip() knows.
    *[({"model": I2V, "image": f"https://{host}/x.png"}, "spec.image", "non-public address") for host in (
        "127.0.0.1", "10.0.0.1", "172.31.255.1", "192.168.0.10", "100.64.0.1", "169.254.169.254", "0.0.0.0",
        "224.0.0.1", "255.255.255.255", "198.18.0.1", "[::1]", "[::]", "[fd00::1]", "[fe80::1]", "[ff02::1]",
        "[::ffff:127.0.0.1]", "[::ffff:a9fe:a9fe]", "[::127.0.0.1]", "[2002:7f00:1::1]", "[2001:db8::1]",
        "127.0.0.1:6443", "[fc00::5]:8443")],
    ({"model": I2V, "image": "file:///etc/passwd"}, "spec.image", "should match"),
    ({"model": I2V, "image": "https://images.example/" + "a" * 3000}, "spec.image", "2048"),
    # Resources that are not what they claim.
    ({"resources": {"memory": "lots"}}, "spec.resources.memory", "positive quantity"),
    ({"resources": {"cpu": "-1"}}, "spec.resources.cpu", "positive quantity"),
    ({"resources": {"cpu": "0"}}, "spec.resources.cpu", "positive quantity"),
    ({"resources": {"gpuResource": "cpu"}}, "spec.resources.gpuResource", "extended resource"),
    ({"resources": {"gpuResource": "memory"}}, "spec.resources.gpuResource", "extended resource"),
    ({"resources": {"gpuResource": "kubernetes.io/gpu"}}, "spec.resources.gpuResource", "extended resource"),
    ({"resources": {"gpus": 17}}, "spec.resources.gpus", "16"),
    ({"loras": [{"path": f"l{i}.safetensors"} for i in range(9)]}, "spec.loras", "8"),
    ({"prompt": "x" * 2001}, "spec.prompt", "2000"),
    ({"prompt": "\n\t  \r"}, "spec.prompt", "blank"),
    # Enumerated settings: a value the runner would not know is refused, not ignored.
    ({"acceleration": {"attentionBackend": "os_system"}}, "spec.acceleration.attentionBackend", "Unsupported value"),
    ({"acceleration": {"attentionBackend": "flash_hub"}}, "spec.acceleration.attentionBackend", "Unsupported value"),
    ({"acceleration": {"offload": "disk"}}, "spec.acceleration.offload", "Unsupported value"),
    ({"acceleration": {"stepCache": "teacache"}}, "spec.acceleration.stepCache", "Unsupported value"),
    ({"sampling": {"sampler": "dpm"}}, "spec.sampling.sampler", "Unsupported value"),
]


@pytest.mark.cluster
@pytest.mark.parametrize("spec, field, words", ADMISSION, ids=lambda v: v if isinstance(v, str) else None)
def test_the_api_server_refuses_naming_the_full_field(crd_applied, kube_namespace, spec, field, words):
    body = manifest("hostile", **spec)
    body["metadata"] = {"name": "hostile"}
    result = crd_applied.kubectl("create", "-n", kube_namespace, "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0
    assert f"{field}:" in result.stderr and words in result.stderr, result.stderr


@pytest.mark.cluster
def test_a_public_literal_address_and_a_host_name_are_admitted(crd_applied, kube_namespace):
    for i, host in enumerate(("93.184.215.14", "[2606:4700:4700::1111]", "images.example", "127.0.0.1.nip.io")):
        body = manifest(f"public-{i}", model=I2V, image=f"https://{host}/x.png")
        body["metadata"] = {"name": f"public-{i}"}
        crd_applied.kubectl("create", "--dry-run=server", "-n", kube_namespace, "-f", "-", input=json.dumps(body))


@pytest.mark.cluster
def test_an_update_names_the_field_that_may_not_change(crd_applied, kube_namespace):
    k = crd_applied
    body = manifest("frozen-field")
    body["metadata"] = {"name": "frozen-field"}
    k.kubectl("create", "-n", kube_namespace, "-f", "-", input=json.dumps(body))
    for patch, field in (({"prompt": "else"}, "spec.prompt"), ({"video": {"frames": 9}}, "spec.video"),
                         ({"output": {"key": "x.mp4"}}, "spec.output"), ({"retries": 5}, "spec.retries")):
        result = k.kubectl("patch", "vg", "frozen-field", "-n", kube_namespace, "--type=merge",
                           "-p", json.dumps({"spec": patch}), check=False)
        assert result.returncode != 0 and f"{field}: Forbidden: is immutable" in result.stderr, result.stderr


# What only the operator can judge (the key once formatted, the tenant's folder, the request as the
# runner reads it): InvalidSpec, the field named, no Job.
OPERATOR = [
    ({"output": {"key": "{task_id}\u202e4pm.exe"}}, "spec.output.key: "),
    ({"output": {"key": "../{task_id}.mp4"}}, "spec.output.key: "),
    ({"output": {"key": "{task_id}/{secret}"}}, "spec.output.key: unknown template fields"),
    ({"output": {"key": "a\nb.mp4"}}, "spec.output.key: "),
    ({"model": I2V, "image": "s3://videos/team-a/private-frame.png"},
     "spec.image: s3://videos/team-a/private-frame.png is outside this request's folder 'team-b/'"),
    ({"model": I2V, "image": "s3://videos/team-b/../team-a/private-frame.png"}, "spec.image: must be s3://"),
    ({"model": I2V, "image": "s3://videos/team-b//x.png"}, "spec.image: must be s3://"),
    *[({"model": I2V, "image": image}, f"spec.image: must be s3://bucket/key with a safe key: {problem}")
      for image, problem in (("s3:///nokey", "no bucket"), ("s3://", "no bucket"), ("s3:///", "no bucket"),
                             ("s3://videos", "'' is not a safe object key"),
                             ("s3://videos/", "'' is not a safe object key"))],
    ({"model": I2V, "image": "https://[64:ff9b::7f00:1]/x.png"}, "spec.image: host 64:ff9b::7f00:1 (that is 127"),
    ({"video": {"frames": 80}}, "spec.video.frames: must be 4k+1"),
    ({"queueName": "gpus", "workloadPriorityClassName": "cluster-critical"},
     "spec.workloadPriorityClassName: cluster-critical is not allowed by this operator (none allowed)"),
    ({"sampling": {"guidanceScale2": 2}, "model": {"preset": "ti2v-5b", "pvc": {"claimName": "m"}}},
     "spec.sampling.guidanceScale2: only the two-expert"),
    ({"loras": [{"path": "a.safetensors", "experts": "low_noise"}],
      "model": {"preset": "ti2v-5b", "pvc": {"claimName": "m"}}}, "spec.loras[0].experts: must be 'both'"),
]


@pytest.mark.parametrize("spec, message", OPERATOR)
def test_the_operator_refuses_naming_the_full_field(spec, message):
    with pytest.raises(InvalidSpec) as e:
        parse_spec(manifest("hostile", **spec), SETTINGS)
    assert message in str(e.value)


def test_with_the_operators_credentials_every_key_lies_under_the_namespace():
    _, request = parse_spec(manifest("fox", output={"key": "team-a/{task_id}.mp4"}), SETTINGS)
    assert request.object_key(seed=1) == "team-b/team-a/team-b.fox.mp4"
    named = manifest("fox", output={"credentialsSecret": "s3-credentials", "bucket": "other"})
    assert parse_spec(named, SETTINGS)[1].object_key(seed=1) == "team-b/team-b.fox.mp4"  # naming it changes nothing
    _, request = parse_spec(manifest("fox", model=I2V, image="s3://videos/team-b/in/frame.png"), SETTINGS)
    assert request.image == "s3://videos/team-b/in/frame.png"


def test_with_its_own_credentials_a_resource_keeps_its_keys():
    _, request = parse_spec(manifest("fox", output={"credentialsSecret": "own-s3", "key": "out/{task_id}.mp4"}),
                            SETTINGS)
    assert request.object_key(seed=1) == "out/team-b.fox.mp4"
