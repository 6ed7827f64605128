"""Kueue decides who runs: on the real control plane with a real Kueue, a resource's status says
what Kueue decided in Kueue's own words (a missing LocalQueue, a preemption, a quota wait), and a
video preempted by a higher priority resumes from its checkpoint once readmitted, to the very video
of its twin run alone. The operator runs under the chart's identity (it reads Workloads)."""

import json
import uuid

import pytest

from tests.e2e.test_operator import apply, get, local_operator, status_of, team_namespace, tiny_manifest
from tests.e2e.test_operator import namespace as namespace  # noqa: F401 - the fixture
from tests.support.services import wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def operator(kube_cluster, kube_bin, pod_executor, redis_server, s3_server, kueue, tmp_path_factory):
    server = local_operator(kube_cluster, kube_bin, s3_server, redis_server, tmp_path_factory,
                            VIDEOGEN_ALLOWED_WORKLOAD_PRIORITY_CLASSES=json.dumps(["low", "high"]),
                            VIDEOGEN_CHECKPOINT_SECONDS="0.05")
    yield server
    server.stop()
    assert "Traceback" not in server.log.read_text(errors="replace")


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status.get("conditions") or []}


def test_a_missing_local_queue_is_a_hold_that_needs_someone_and_says_so(operator, namespace, kueue, tiny_models):
    cluster = operator.cluster
    apply(cluster, namespace, tiny_manifest(tiny_models, "nowhere", queueName="no-such-queue"))
    wait_until(lambda: status_of(cluster, namespace, "nowhere").get("reason") == "Inadmissible", 60, "Inadmissible")
    status = status_of(cluster, namespace, "nowhere")
    assert status["phase"] == "Queued" and "LocalQueue no-such-queue doesn't exist" in status["message"]
    stalled = conditions(status)["Stalled"]
    assert stalled["status"] == "True" and stalled["message"].startswith("Inadmissible: ")


def test_a_quota_wait_and_a_preemption_in_kueues_words_and_the_preempted_video_ends_as_its_twin(
        operator, namespace, kueue, tiny_models, redis_client):
    cluster = operator.cluster
    queue = kueue.queue(namespace, gpus=1)
    low = {"queueName": queue, "workloadPriorityClassName": "low", "sampling": {"steps": 60, "seed": 11}}
    apply(cluster, namespace, tiny_manifest(tiny_models, "low", **low))
    step = lambda: int(redis_client.hget(f"videogen:task:{namespace}.low", "step") or 0)  # noqa: E731
    wait_until(lambda: step() >= 1, 180, "the low-priority video running")
    apply(cluster, namespace, tiny_manifest(tiny_models, "twin", **low))  # the same video, to run alone after
    wait_until(lambda: status_of(cluster, namespace, "twin").get("reason") == "WaitingForQuota", 60, "a quota wait")
    waiting = status_of(cluster, namespace, "twin")
    assert waiting["phase"] == "Queued" and "insufficient unused quota for nvidia.com/gpu" in waiting["message"]
    assert conditions(waiting)["Stalled"]["status"] == "False"  # it ends by itself
    wait_until(lambda: step() >= 15, 180, "step 15 of the low-priority video")

    apply(cluster, namespace, tiny_manifest(tiny_models, "high", queueName=queue, workloadPriorityClassName="high",
                                            sampling={"steps": 4, "seed": 2}))
    seen = []

    def preempted():
        seen.append(status_of(cluster, namespace, "low"))
        return seen[-1].get("reason") == "Preempted"

    wait_until(preempted, 120, "the low-priority video preempted")
    assert seen[-1]["phase"] == "Queued" and "Preempted to accommodate a workload" in seen[-1]["message"]
    for name in ("high", "low", "twin"):
        cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", f"vg/{name}", "--timeout=240s",
                        timeout=250)
    resumed, twin = status_of(cluster, namespace, "low"), status_of(cluster, namespace, "twin")
    assert resumed["output"]["sha256"] == twin["output"]["sha256"]
    assert resumed["output"]["resumedFromStep"] >= 15 and "resumedFromStep" not in twin["output"]
    assert resumed["attempts"] == 1  # a preemption is no failed attempt


def test_suspend_on_a_queued_and_an_admitted_video_and_back(operator, namespace, kueue, tiny_models, redis_client):
    """A stop never fights Kueue: the queued video's Job is deleted (it never ran), the admitted
    one's too (its runner saves its checkpoint); back to false, each is queued again, and the one
    that had run resumes from its checkpoint."""
    cluster = operator.cluster
    queue = kueue.queue(namespace, gpus=1)
    apply(cluster, namespace, tiny_manifest(tiny_models, "first", queueName=queue, sampling={"steps": 60, "seed": 5}))
    wait_until(lambda: int(redis_client.hget(f"videogen:task:{namespace}.first", "step") or 0) >= 10, 180,
               "step 10 of the first video")
    apply(cluster, namespace, tiny_manifest(tiny_models, "second", queueName=queue, sampling={"steps": 4, "seed": 1}))
    wait_until(lambda: status_of(cluster, namespace, "second").get("reason") == "WaitingForQuota", 60, "a quota wait")

    for name in ("second", "first"):
        cluster.kubectl("patch", "vg", name, "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}')
        cluster.kubectl("wait", "-n", namespace, "--for=condition=Suspended", f"vg/{name}", "--timeout=60s")
        wait_until(lambda name=name: not get(cluster, namespace, "jobs", selector=f"videogen.io/name={name}")[
            "items"], 60, f"the Job of {name} gone")
    for name in ("second", "first"):
        cluster.kubectl("patch", "vg", name, "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": false}}')
    for name in ("second", "first"):
        cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", f"vg/{name}", "--timeout=240s",
                        timeout=250)
    first, second = status_of(cluster, namespace, "first"), status_of(cluster, namespace, "second")
    assert first["output"]["resumedFromStep"] >= 10 and "resumedFromStep" not in second["output"]


@pytest.fixture
def second_team(kube_cluster):
    """Another team's namespace, with the Secret the chart asks of each."""
    name = team_namespace(kube_cluster, f"team-b-{uuid.uuid4().hex[:6]}")
    yield name
    kube_cluster.api().delete(f"/api/v1/namespaces/{name}")


def test_two_teams_in_one_cohort_each_get_their_share_of_a_burst(operator, namespace, second_team, kueue,
                                                                    tiny_models, redis_client):
    """One GPU each, in one cohort: alone, team a borrows b's idle GPU for its burst; once b asks,
    Kueue reclaims b's share from a (a's borrowed video preempted, to resume later), so b's video
    runs while a's burst is still under way, and every video ends once."""
    cluster, a, b = operator.cluster, namespace, second_team
    for team in (a, b):
        kueue.queue(team, gpus=1, cohort=f"videos-{a}")
    bursts = {a: [f"a{i}" for i in range(3)], b: ["b0"]}
    for i, name in enumerate(bursts[a]):
        apply(cluster, a, tiny_manifest(tiny_models, name, queueName="gpus", sampling={"steps": 40, "seed": i}))
    running = lambda team: [n for n in bursts[team] if status_of(cluster, team, n).get("phase") == "Running"]  # noqa: E731
    step = lambda name: int(redis_client.hget(f"videogen:task:{a}.{name}", "step") or 0)  # noqa: E731
    wait_until(lambda: len([n for n in bursts[a] if step(n) >= 3]) == 2, 120,
               "team a's burst denoising on both GPUs (one borrowed)")

    apply(cluster, b, tiny_manifest(tiny_models, "b0", queueName="gpus", sampling={"steps": 4, "seed": 9}))
    wait_until(lambda: running(b) == ["b0"], 120, "team b's video on its own GPU")
    unfinished = [n for n in bursts[a] if status_of(cluster, a, n).get("phase") not in ("Succeeded", "Failed")]
    assert len(unfinished) >= 2  # b did not wait for a's burst
    assert len(running(a)) <= 1  # a is back to its share
    for team, names in bursts.items():
        for name in names:
            cluster.kubectl("wait", "-n", team, "--for=condition=Succeeded", f"vg/{name}", "--timeout=240s",
                            timeout=250)
    outputs = [status_of(cluster, a, n)["output"] for n in bursts[a]]
    assert len([o for o in outputs if o.get("resumedFromStep")]) == 1  # the borrowed GPU's video, reclaimed
    assert all(status_of(cluster, a, n)["attempts"] == 1 for n in bursts[a])
