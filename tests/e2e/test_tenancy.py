"""Two teams on one cluster, the operator under the chart's defaults (one bucket, one credentials
Secret name): team b cannot overwrite, read or reach team a's videos by any key or image it can
write, and no Secret's value ever shows anywhere a tenant or a log reader could look."""

import contextlib
import hashlib
import io
import uuid

import pytest
from PIL import Image

from tests.e2e.test_operator import BUCKET, apply, get, operator, status_of, tiny_manifest  # noqa: F401
from tests.support.cluster import KubeError
from tests.support.services import s3_client

pytestmark = pytest.mark.cluster
# Values no code path may print: distinctive, so that a leak anywhere is found by a plain search.
LEAK_CANARY = {"AWS_ACCESS_KEY_ID": "AKIAVIDEOGENCANARY42", "AWS_SECRET_ACCESS_KEY": "canary-s3cr3t-9f2c7a51e0"}


@pytest.fixture
def teams(operator):  # noqa: F811
    """Namespaces a and b, each with the default credentials Secret (the same S3 identity)."""
    api = operator.cluster.api()
    names = [f"team-{letter}-{uuid.uuid4().hex[:6]}" for letter in "ab"]
    for name in names:
        api.create("/api/v1/namespaces", {"metadata": {"name": name}})
        with contextlib.suppress(KubeError):  # unless the controller-manager was quicker
            api.create(f"/api/v1/namespaces/{name}/serviceaccounts", {"metadata": {"name": "default"}})
        api.create(f"/api/v1/namespaces/{name}/secrets",
                   {"metadata": {"name": "s3-credentials"}, "stringData": LEAK_CANARY})
    yield names
    for name in names:
        api.delete(f"/api/v1/namespaces/{name}")


def wait_for(cluster, namespace, name, condition, timeout=180):
    cluster.kubectl("wait", "-n", namespace, f"--for=condition={condition}", f"vg/{name}", f"--timeout={timeout}s")
    return status_of(cluster, namespace, name)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_one_namespace_cannot_reach_anothers_videos(operator, teams, tiny_models, s3_server, pod_executor):  # noqa: F811
    cluster, (a, b) = operator.cluster, teams
    s3 = s3_client(s3_server.endpoint)

    # 1. Team a's video, and a private frame of team a's.
    apply(cluster, a, tiny_manifest(tiny_models, "twin", sampling={"steps": 4, "seed": 1}))
    first = wait_for(cluster, a, "twin", "Succeeded")["output"]
    assert first["uri"] == f"s3://{BUCKET}/{a}/{a}.twin.mp4"
    s3.put_object(Bucket=BUCKET, Key=f"{a}/private-frame.png", Body=png())
    s3.put_object(Bucket=BUCKET, Key=f"{b}/own-frame.png", Body=png())
    before = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{a}/")["Contents"]}

    # 2. Team b names team a's object in every way its spec allows.
    apply(cluster, b, tiny_manifest(tiny_models, "twin", sampling={"steps": 4, "seed": 2},
                                    output={"key": f"{a}.twin.mp4"}))
    apply(cluster, b, tiny_manifest(tiny_models, "nested", sampling={"steps": 4, "seed": 3},
                                    output={"key": f"{a}/{a}.twin.mp4"}))
    apply(cluster, b, tiny_manifest(tiny_models, "bucket", sampling={"steps": 4, "seed": 4},
                                    output={"bucket": BUCKET, "credentialsSecret": "s3-credentials",
                                            "key": f"{a}/{a}.twin.mp4"}))
    apply(cluster, b, tiny_manifest(tiny_models, "climb", output={"key": f"../{a}/{a}.twin.mp4"}))
    apply(cluster, b, tiny_manifest(tiny_models, "steal", task="ti2v", image=f"s3://{BUCKET}/{a}/private-frame.png"))
    apply(cluster, b, tiny_manifest(tiny_models, "sneak", task="ti2v",
                                    image=f"s3://{BUCKET}/{b}/../{a}/private-frame.png"))
    # ... and its own frame, which it may read.
    apply(cluster, b, tiny_manifest(tiny_models, "own", task="ti2v", sampling={"steps": 4, "seed": 5},
                                    image=f"s3://{BUCKET}/{b}/own-frame.png"))

    # 3. Written under b's folder, or refused naming the field; no Job for the refused ones.
    assert wait_for(cluster, b, "twin", "Succeeded")["output"]["uri"] == f"s3://{BUCKET}/{b}/{a}.twin.mp4"
    assert wait_for(cluster, b, "nested", "Succeeded")["output"]["uri"] == f"s3://{BUCKET}/{b}/{a}/{a}.twin.mp4"
    assert wait_for(cluster, b, "bucket", "Succeeded")["output"]["uri"] == f"s3://{BUCKET}/{b}/{a}/{a}.twin.mp4"
    for name, field in (("climb", "spec.output.key"), ("steal", "spec.image"), ("sneak", "spec.image")):
        status = wait_for(cluster, b, name, "Failed", 60)
        assert status["reason"] == "InvalidSpec" and status["message"].startswith(f"{field}: "), status
    assert "outside this request's folder" in status_of(cluster, b, "steal")["message"]
    assert wait_for(cluster, b, "own", "Succeeded")["output"]["uri"].startswith(f"s3://{BUCKET}/{b}/")
    jobs = {j["metadata"]["name"] for j in get(cluster, b, "jobs")["items"]}
    assert jobs == {"videogen-twin", "videogen-nested", "videogen-bucket", "videogen-own"}

    # 4. Team a's objects are exactly as they were; team a's status still tells the truth.
    after = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{a}/")["Contents"]}
    assert after == before
    body = s3.get_object(Bucket=BUCKET, Key=f"{a}/{a}.twin.mp4")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == first["sha256"] == status_of(cluster, a, "twin")["output"]["sha256"]
    # Everything b wrote lies under b's folder.
    written = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {k for k in written if b in k} == {
        f"{b}/own-frame.png", f"{b}/{a}.twin.mp4", f"{b}/{a}/{a}.twin.mp4", f"{b}/{b}.own.mp4"}

    # 5. No Secret value anywhere: specs, statuses, annotations, events, Jobs, pods, logs.
    seen = [cluster.kubectl("get", "vg,jobs,pods,events", "-n", ns, "-o", "json").stdout for ns in (a, b)]
    seen += [operator.log.read_text(errors="replace")]
    seen += [path.read_text(errors="replace") for ns in (a, b) for path in (pod_executor.workdir / ns).rglob("*")
             if path.is_file()]
    assert len(seen) > 2 + 4  # the runner's own logs and termination messages are among them
    for text in seen:
        for value in LEAK_CANARY.values():
            assert value not in text
    # The pods got the Secret only by reference.
    pods = [p for ns in (a, b) for p in get(cluster, ns, "pods")["items"]]
    env = [e for p in pods for c in p["spec"]["containers"] for e in c.get("env", [])]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env if e["name"].startswith("AWS_")} == {"s3-credentials"}
    assert not any(e["name"].startswith("AWS_") and "value" in e for e in env)
    assert sum(e["name"] == "AWS_SECRET_ACCESS_KEY" for e in env) == len(pods) == 5
