"""The chart's RBAC compared as a whole with what the operator's code calls: nothing missing,
nothing more (an over-grant fails as surely as a missing verb)."""

import ast
import json
import re
import time
from pathlib import Path

import pytest
import yaml

from tests.helm.test_chart import for_tenants, render
from videogen_operator.job import KUEUE_GROUP, KUEUE_VERSION
from videogen_operator.models import GROUP, PLURAL, VERSION

ROOT = Path(__file__).parents[2]
OPERATOR = ROOT / "operator" / "videogen_operator"
# kubernetes client methods: <verb>_namespaced_<kind>[_status]
CLIENT_CALL = re.compile(r"^(create|read|list|patch|replace|delete)_namespaced_([a-z_]+?)(_status)?$")
VERBS = {"create": "create", "read": "get", "list": "list", "patch": "patch", "replace": "update", "delete": "delete"}
KINDS = {"custom_object": ("videogen.io", "videogenerations"), "job": ("batch", "jobs"), "event": ("", "events"),
         "lease": ("coordination.k8s.io", "leases"), "pod": ("", "pods")}


def client_calls() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every API client method the operator's code names."""
    found = set()
    for source in OPERATOR.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Attribute) and (m := CLIENT_CALL.match(node.attr)):
                group, resource = KINDS[m[2]]
                found.add((group, resource + ("/status" if m[3] else ""), VERBS[m[1]]))
    return found


NAMES = {"GROUP": GROUP, "VERSION": VERSION, "PLURAL": PLURAL, "KUEUE_GROUP": KUEUE_GROUP,
         "KUEUE_VERSION": KUEUE_VERSION}  # the constants the decorators name


def watched() -> set[tuple[str, str, str]]:
    """What kopf lists and watches: the resources of the handlers' decorators."""
    found = set()
    tree = ast.parse((OPERATOR / "handlers.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("index", "event"):
            args = [a.value if isinstance(a, ast.Constant) else NAMES[a.id] for a in node.args]
            group, resource = args[0], args[2]
            found |= {(group, resource, "list"), (group, resource, "watch")}
    return found


def granted(documents, kind: str) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for d in documents if d["kind"] == kind and not for_tenants(d)
            for rule in d["rules"] for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}


# Not an API call of the code: a Job's ownerReference with blockOwnerDeletion needs it.
OWNER_REFERENCE = {("videogen.io", "videogenerations/finalizers", "update")}
CRD_DISCOVERY = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
LEASE = {g for g in client_calls() if g[1] == "leases"}


@pytest.mark.parametrize("mode", ["cluster", "namespaced"])
def test_rbac_is_exactly_what_the_code_calls(kube_bin, mode):
    assert {("", "events", "create"), ("batch", "jobs", "create"), ("videogen.io", "videogenerations/status",
                                                                     "update")} <= client_calls()
    needed = client_calls() | watched() | OWNER_REFERENCE
    if mode == "cluster":
        documents = render(kube_bin)
        assert granted(documents, "ClusterRole") == (needed - LEASE) | CRD_DISCOVERY
        assert granted(documents, "Role") == LEASE  # in kube-system only
        assert {d["metadata"]["namespace"] for d in documents if d["kind"] == "Role"} == {"kube-system"}
    else:
        documents = render(kube_bin, "operator.watchNamespaces={team-a,team-b}")
        assert granted(documents, "Role") == needed
        assert {d["metadata"]["namespace"] for d in documents if d["kind"] == "Role"} == {"team-a", "team-b"}
        namespaces = {("", "namespaces", v) for v in ("list", "watch")}
        assert granted(documents, "ClusterRole") == CRD_DISCOVERY | namespaces


@pytest.mark.cluster
def test_a_namespaces_editors_manage_videogenerations_and_viewers_read_them_never_the_status(
        kube_cluster, kube_bin, kube_namespace):
    """Through Kubernetes' own admin/edit/view roles, which the chart's roles are aggregated into
    (by the controller-manager's aggregation controller), as `kubectl create rolebinding` gives them."""
    k, crd = kube_cluster, ROOT / "crds" / "videogenerations.videogen.io.yaml"
    k.kubectl("apply", "--server-side", "-f", str(crd))
    roles = [d for d in render(kube_bin) if d["kind"] == "ClusterRole" and for_tenants(d)]
    assert len(roles) == 2
    k.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": roles}))
    for user, role in (("alice", "edit"), ("victor", "view")):
        k.kubectl("create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}", f"--user={user}",
                  "-n", kube_namespace)

    def can(user: str, verb: str, subresource: str = "") -> bool:
        answer = k.kubectl("auth", "can-i", verb, "videogenerations.videogen.io", f"--subresource={subresource}",
                           "-n", kube_namespace, "--as", user, check=False)
        return answer.stdout.strip() == "yes"

    deadline = time.monotonic() + 60
    while not (can("alice", "create") and can("victor", "list")) and time.monotonic() < deadline:
        time.sleep(0.5)  # the aggregation controller fills edit and view
    manifest = yaml.safe_load((ROOT / "examples" / "tiny-cpu.yaml").read_text())
    manifest["metadata"] = {"name": "alices"}
    k.kubectl("create", "-n", kube_namespace, "--as", "alice", "-f", "-", input=json.dumps(manifest))
    assert [can("alice", verb) for verb in ("get", "list", "watch", "update", "patch", "delete")] == [True] * 6
    assert not can("alice", "update", "status") and not can("alice", "patch", "status")
    forged = k.kubectl("patch", "vg", "alices", "-n", kube_namespace, "--as", "alice", "--subresource=status",
                       "--type=merge", "-p", '{"status": {"phase": "Succeeded"}}', check=False)
    assert forged.returncode != 0 and "forbidden" in forged.stderr
    assert can("victor", "get") and not can("victor", "create") and not can("victor", "delete")
    assert k.kubectl("get", "vg", "alices", "-n", kube_namespace, "--as", "victor", "-o", "name").stdout.strip() \
        == "videogeneration.videogen.io/alices"
    for user in ("alice", "victor"):  # in their own namespace only
        elsewhere = k.kubectl("auth", "can-i", "get", "videogenerations.videogen.io", "-n", "default", "--as", user,
                              check=False)
        assert elsewhere.stdout.strip() == "no"
