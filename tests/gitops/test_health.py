"""GitOps health of a VideoGeneration in every phase, as the operator writes its status: kstatus
(sigs.k8s.io/cli-utils, the reader of Flux and of cli-utils' waits, built by
hack/controlplane.sh) and the documented Argo CD health script under a Lua 5.1 interpreter
(Argo CD runs gopher-lua, a Lua 5.1)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from videogen_operator.status import conditions

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "docs" / "argocd-health.lua"
NOW = "2026-01-01T00:00:00Z"
# kstatus (cli-utils v0.37) reads, for a resource of its own kind: a deletion as Terminating,
# status.observedGeneration behind metadata.generation as InProgress, Stalled=True as Failed, then
# Ready: True is Current, False is InProgress with Ready's message, no condition at all is Current.
# So the operator's Ready carries the phase's reason and message, is True once at rest as asked
# (Succeeded, or Suspended by spec.suspend), and the CRD defaults the status to
# {observedGeneration: 0} so that a resource the operator has not seen yet is "not observed".


def resource(phase: str | None = None, reason: str = "", message: str = "", generation: int = 1,
             observed: int = 1, deleting: bool = False) -> dict:
    """A VideoGeneration whose status is what the operator writes for this phase."""
    metadata = {"name": "eagle", "namespace": "team-a", "generation": generation}
    if deleting:
        metadata["deletionTimestamp"] = NOW
    obj = {"apiVersion": "videogen.io/v1alpha1", "kind": "VideoGeneration", "metadata": metadata,
           "spec": {"model": {"preset": "ti2v-5b"}, "prompt": "an eagle"}}
    if phase is not None:
        obj["status"] = {"phase": phase, "reason": reason, "message": message, "observedGeneration": observed,
                         "conditions": conditions(phase, reason, message, [], observed, NOW)}
    return obj


def kstatus(kube_bin, obj: dict) -> tuple[str, str]:
    result = subprocess.run([str(kube_bin / "kstatus")], input=json.dumps(obj) + "\n", capture_output=True,
                            text=True, timeout=30, check=True)
    reading = json.loads(result.stdout)
    return reading["status"], reading["message"]


def lua_literal(value) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid Lua string for this text
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"


def argocd(obj: dict) -> tuple[str, str]:
    """The script as Argo CD runs it: `obj` is the resource, the chunk returns the health."""
    program = (f"obj = {lua_literal(obj)}\nlocal hs = (function()\n{SCRIPT.read_text()}\nend)()\n"
               'io.write(hs.status, "\\n", hs.message or "")\n')
    result = subprocess.run([lua5_1(), "-"], input=program, capture_output=True, text=True, timeout=30, check=True)
    status, message = result.stdout.split("\n", 1)
    return status, message


def lua5_1() -> str:
    lua = shutil.which("lua5.1")
    if lua is None:
        pytest.fail("lua5.1 is not installed: run hack/test.sh, which installs it")
    return lua


# (resource, Argo CD's health, kstatus' status); each message must name what is going on.
CASES = {
    "pending-unschedulable": (resource("Pending", "Unschedulable", "0/1 nodes have 8 nvidia.com/gpu"),
                              "Progressing", "InProgress"),
    "image-pull": (resource("Pending", "ImagePullBackOff", "Back-off pulling image videogen-runner:0.1.0"),
                   "Progressing", "InProgress"),
    "queued": (resource("Queued", "WaitingForAdmission", "Kueue holds the Job"), "Progressing", "InProgress"),
    "running": (resource("Running", "Generating", "denoising step 12/40"), "Progressing", "InProgress"),
    "succeeded": (resource("Succeeded", "Generated", "s3://videos/team-a/eagle.mp4"), "Healthy", "Current"),
    "failed": (resource("Failed", "ModelNotFound", "spec.model.path: no model_index.json"), "Degraded", "Failed"),
    "suspended": (resource("Suspended", "Suspended", "spec.suspend is true"), "Suspended", "Current"),
}


@pytest.mark.parametrize("case", CASES)
def test_argocd_reads_every_phase(case):
    obj, health, _ = CASES[case]
    status, message = argocd(obj)
    assert status == health
    assert obj["status"]["reason"] in message and obj["status"]["message"] in message


@pytest.mark.parametrize("case", CASES)
def test_kstatus_reads_every_phase(kube_bin, case):
    obj, _, expected = CASES[case]
    status, message = kstatus(kube_bin, obj)
    assert status == expected
    if expected == "Current":
        assert message == "Resource is Ready"
    else:  # the same words as Argo CD's: "ImagePullBackOff: Back-off pulling image …"
        assert message == f"{obj['status']['reason']}: {obj['status']['message']}"


def test_a_resource_the_operator_has_not_seen_is_in_progress_for_argocd():
    assert argocd(resource()) == ("Progressing", "Waiting for the operator")
    status, message = argocd(resource("Running", "Generating", "step 3/40", generation=2, observed=1))
    assert status == "Progressing" and "generation 2" in message


@pytest.mark.cluster
def test_a_new_resource_reads_in_progress_until_the_operator_writes_status(crd_applied, kube_bin, kube_namespace):
    """As the API server serves it: the CRD's status default, whatever status the manifest
    carried (the status subresource ignores it on create), kept through a spec change."""
    manifest = {**resource(), "status": {"phase": "Succeeded", "observedGeneration": 1}}
    manifest["metadata"] = {"name": "eagle"}
    manifest["spec"] = {"model": {"preset": "ti2v-5b", "hostPath": "/m"}, "prompt": "an eagle"}
    crd_applied.kubectl("create", "-n", kube_namespace, "-f", "-", input=json.dumps(manifest))
    got = json.loads(crd_applied.kubectl("get", "vg", "eagle", "-n", kube_namespace, "-o", "json").stdout)
    assert got["metadata"]["generation"] == 1 and got["status"] == {"observedGeneration": 0}
    assert kstatus(kube_bin, got) == (
        "InProgress", "VideoGeneration generation is 1, but latest observed generation is 0")
    assert argocd(got) == ("Progressing", "Waiting for the operator to observe generation 1")

    crd_applied.kubectl("patch", "vg", "eagle", "-n", kube_namespace, "--type=merge", "-p",
                        '{"spec": {"suspend": true}}')
    got = json.loads(crd_applied.kubectl("get", "vg", "eagle", "-n", kube_namespace, "-o", "json").stdout)
    assert got["metadata"]["generation"] == 2 and got["status"] == {"observedGeneration": 0}
    assert kstatus(kube_bin, got)[0] == "InProgress"

    # Once the operator writes its status, that is what is read.
    written = resource("Suspended", "Suspended", "spec.suspend is true", observed=2)["status"]
    crd_applied.kubectl("replace", "--subresource=status", "-n", kube_namespace, "-f", "-",
                        input=json.dumps({**got, "status": written}))
    got = json.loads(crd_applied.kubectl("get", "vg", "eagle", "-n", kube_namespace, "-o", "json").stdout)
    assert got["status"]["phase"] == "Suspended" and got["status"]["observedGeneration"] == 2
    assert kstatus(kube_bin, got) == ("Current", "Resource is Ready")
    assert argocd(got) == ("Suspended", "Suspended: spec.suspend is true")


def test_kstatus_sees_an_unobserved_generation_and_a_deletion(kube_bin):
    behind = resource("Succeeded", "Generated", "done", generation=2, observed=1)
    assert kstatus(kube_bin, behind) == ("InProgress", "VideoGeneration generation is 2, but latest observed "
                                                       "generation is 1")
    assert kstatus(kube_bin, resource("Running", "Generating", "x", deleting=True))[0] == "Terminating"
