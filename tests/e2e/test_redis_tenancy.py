"""Two teams on one cluster and one Redis fenced by the chart's ACL file: team a's runner reports
as team a's user, team b holds everything the chart gives it (its Secrets, its own Redis user) and
can neither write a's progress nor nudge the operator about a's task; a's resource ends with a's
own outcome, and its status never shows anything b wrote."""

import hashlib
import json
import threading
import uuid

import pytest
import redis

from tests.e2e.test_operator import BUCKET, apply, get, local_operator, status_of, team_namespace, tiny_manifest
from tests.helm.test_redis_acl import PASSWORDS, chart_acl, sha
from tests.support.services import redis_process, s3_client

pytestmark = pytest.mark.cluster


@pytest.fixture
def two_teams(kube_cluster, kube_bin, pod_executor, s3_server, tmp_path, tmp_path_factory):
    """Namespaces a and b, a Redis loading the chart's ACL for them, and an operator that logs in as
    its own read-only user and gives runner pods their namespace's user (redis.passwordSecret)."""
    api = kube_cluster.api()
    a, b = (f"team-{letter}-{uuid.uuid4().hex[:6]}" for letter in "ab")
    passwords = {a: PASSWORDS["team-a"], b: PASSWORDS["team-b"]}
    acl = chart_acl(kube_bin, {a: sha(passwords[a]), b: sha(passwords[b])})
    (tmp_path / "users.acl").write_text(acl + f"user default on #{sha(PASSWORDS['default'])} ~* &* +@all\n")
    fenced = redis_process(tmp_path, "--aclfile", str(tmp_path / "users.acl"), password=PASSWORDS["default"])
    fenced.start()
    for name in (a, b):
        team_namespace(kube_cluster, name)
        api.create(f"/api/v1/namespaces/{name}/secrets", {"metadata": {"name": "redis-auth"}, "stringData": {
            "REDIS_USERNAME": f"videogen-{name}", "REDIS_PASSWORD": passwords[name]}})
    operator = local_operator(kube_cluster, kube_bin, s3_server, fenced, tmp_path_factory,
                              VIDEOGEN_REDIS_USERNAME="videogen-operator",
                              VIDEOGEN_REDIS_PASSWORD=PASSWORDS["operator"],
                              VIDEOGEN_REDIS_PASSWORD_SECRET="redis-auth")
    yield operator, fenced, a, b, passwords
    operator.stop()
    fenced.stop()
    for name in (a, b):
        api.delete(f"/api/v1/namespaces/{name}")
    assert "Traceback" not in operator.log.read_text(errors="replace")


def test_a_namespace_cannot_forge_anothers_progress_or_decide_its_outcome(two_teams, tiny_models, s3_server):
    operator, fenced, a, b, passwords = two_teams
    cluster = operator.cluster
    as_b = redis.Redis.from_url(fenced.url, username=f"videogen-{b}", password=passwords[b], decode_responses=True)
    task = f"{a}.fenced"
    attempts, shown, done = [], [], threading.Event()

    def forge():  # b, all the while a's video is made
        while not done.wait(0.2):
            for attempt in (lambda: as_b.hset(f"videogen:task:{task}", mapping={"step": "39", "message": "FORGED"}),
                            lambda: as_b.delete(f"videogen:task:{task}"),
                            lambda: as_b.publish(f"videogen:updates:{a}", task),
                            lambda: as_b.keys("*")):
                try:
                    attempt()
                    attempts.append("done")
                except redis.exceptions.NoPermissionError:
                    attempts.append("refused")
            as_b.publish(f"videogen:updates:{b}", task)  # its own channel, a's task: dropped
            shown.append(json.dumps(status_of(cluster, a, "fenced")))

    forger = threading.Thread(target=forge, daemon=True)
    forger.start()
    try:
        apply(cluster, a, tiny_manifest(tiny_models, "fenced", sampling={"steps": 20, "seed": 4}))
        cluster.kubectl("wait", "-n", a, "--for=condition=Succeeded", "vg/fenced", "--timeout=180s")
    finally:
        done.set()
        forger.join(10)
    status = status_of(cluster, a, "fenced")
    key = f"{a}/{task}.mp4"
    body = s3_client(s3_server.endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert status["output"]["sha256"] == hashlib.sha256(body).hexdigest() and status["attempts"] == 1
    assert attempts and set(attempts) == {"refused"}
    assert not [s for s in shown if "FORGED" in s]
    # a's own runner reported as a's user: the operator read its progress (denoising steps in status).
    assert any('"stage": "denoising"' in s and '"step"' in s for s in shown)
    assert len(get(cluster, a, "jobs")["items"]) == 1
