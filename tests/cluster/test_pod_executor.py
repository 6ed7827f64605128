"""Jobs through the real Job controller and scheduler, their pods run by the local executor."""

import json
import os
import time

import pytest

pytestmark = pytest.mark.cluster


def job(name: str, script: str, *, gpus: int = 0, backoff_limit: int = 0,
        volumes: list | None = None, mounts: list | None = None, env: list | None = None,
        security: dict | None = None) -> str:
    container = {"name": "main", "image": "ignored.local/busybox", "command": ["sh", "-c", script],
                 "env": env or [], "volumeMounts": mounts or [], "securityContext": security or {}}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    return json.dumps({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": backoff_limit, "template": {"spec": {
            "restartPolicy": "Never", "containers": [container], "volumes": volumes or []}}},
    })


def pods(cluster, namespace: str, job_name: str) -> list[dict]:
    out = cluster.kubectl("-n", namespace, "get", "pods", "-l", f"job-name={job_name}",
                          "-o", "json")
    return json.loads(out.stdout)["items"]


def wait_for(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return result


def test_job_completes_with_termination_message(kube_cluster, pod_executor, kube_namespace):
    kube_cluster.kubectl("-n", kube_namespace, "create", "configmap", "settings",
                         "--from-literal=greeting=hello")
    script = ('echo "$GREETING from $POD_NAME" > /scratch/out'
              " && cat /scratch/out > /dev/termination-log")
    kube_cluster.kubectl("-n", kube_namespace, "apply", "-f", "-", input=job(
        "ok", script, gpus=1,
        volumes=[{"name": "scratch", "emptyDir": {}}],
        mounts=[{"name": "scratch", "mountPath": "/scratch"}],
        env=[{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings",
                                                                    "key": "greeting"}}},
             {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]))
    kube_cluster.kubectl("-n", kube_namespace, "wait", "--for=condition=Complete",
                         "--timeout=60s", "job/ok")
    [pod] = pods(kube_cluster, kube_namespace, "ok")
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert terminated["message"] == f"hello from {pod['metadata']['name']}\n"


def test_failed_pods_are_retried_until_the_backoff_limit(kube_cluster, pod_executor,
                                                        kube_namespace):
    kube_cluster.kubectl("-n", kube_namespace, "apply", "-f", "-", input=job(
        "fails", 'echo "bad input" > "$TERMINATION_MESSAGE_PATH"; exit 3', backoff_limit=1))
    # The Job controller waits 10 s before it replaces a failed pod.
    kube_cluster.kubectl("-n", kube_namespace, "wait", "--for=condition=Failed",
                         "--timeout=90s", "job/fails")
    failed = pods(kube_cluster, kube_namespace, "fails")
    assert len(failed) == 2
    for pod in failed:
        assert pod["status"]["phase"] == "Failed"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == \
            (3, "Error", "bad input\n")


def test_suspending_a_job_kills_its_process(kube_cluster, pod_executor, kube_namespace):
    claim = pod_executor.provision_claim(kube_namespace, "work")
    kube_cluster.kubectl("-n", kube_namespace, "apply", "-f", "-", input=job(
        # "$$$$": Kubernetes turns "$$" into "$" in commands, so the shell sees "$$".
        "sleeper", "echo $$$$ > /work/pid; exec sleep 300",
        volumes=[{"name": "work", "persistentVolumeClaim": {"claimName": "work"}}],
        mounts=[{"name": "work", "mountPath": "/work"}]))
    pid_file = claim / "pid"
    wait_for("the pod's process", lambda: pid_file.exists() and pid_file.read_text().strip())
    pid = int(pid_file.read_text())
    os.kill(pid, 0)  # running

    kube_cluster.kubectl("-n", kube_namespace, "patch", "job", "sleeper", "--type=merge",
                         "-p", '{"spec": {"suspend": true}}')
    kube_cluster.kubectl("-n", kube_namespace, "wait", "--for=condition=Suspended",
                         "--timeout=30s", "job/sleeper")
    wait_for("the pod to be deleted", lambda: not pods(kube_cluster, kube_namespace, "sleeper"))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_pod_asking_for_too_many_gpus_stays_pending(kube_cluster, pod_executor, kube_namespace):
    kube_cluster.kubectl("-n", kube_namespace, "apply", "-f", "-",
                         input=job("greedy", "true", gpus=8))

    def unschedulable():
        for pod in pods(kube_cluster, kube_namespace, "greedy"):
            for condition in pod["status"].get("conditions", []):
                if condition["type"] == "PodScheduled" and condition["status"] == "False":
                    return pod, condition
        return None

    pod, condition = wait_for("the scheduler's verdict", unschedulable)
    assert pod["status"]["phase"] == "Pending"
    assert condition["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in condition["message"]


def test_init_container_secret_env_and_restart_in_place(kube_cluster, pod_executor,
                                                       kube_namespace):
    kube_cluster.kubectl("-n", kube_namespace, "create", "secret", "generic", "creds",
                         "--from-literal=TOKEN=s3cret")
    spec = json.loads(job("restarts", "unused"))
    pod = spec["spec"]["template"]["spec"]
    pod["restartPolicy"] = "OnFailure"
    pod["volumes"] = [{"name": "shared", "emptyDir": {}}]
    mounts = [{"name": "shared", "mountPath": "/shared"}]
    pod["initContainers"] = [{"name": "init", "image": "x", "volumeMounts": mounts,
                              "command": ["sh", "-c", "echo prepared > /shared/init"]}]
    pod["containers"][0].update(
        envFrom=[{"secretRef": {"name": "creds"}, "prefix": "APP_"}], volumeMounts=mounts,
        # Fails once (the emptyDir survives the restart), then reports what it saw.
        command=["sh", "-c", 'test -e /shared/tried || { touch /shared/tried; exit 1; }; '
                             'echo "$(cat /shared/init) $APP_TOKEN" > /dev/termination-log'])
    kube_cluster.kubectl("-n", kube_namespace, "apply", "-f", "-", input=json.dumps(spec))
    kube_cluster.kubectl("-n", kube_namespace, "wait", "--for=condition=Complete",
                         "--timeout=60s", "job/restarts")
    [done] = pods(kube_cluster, kube_namespace, "restarts")
    status = done["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["terminated"]["message"] == "prepared s3cret\n"
    [init] = done["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["reason"] == "Completed"


def test_a_read_only_root_filesystem_leaves_home_unwritable(kube_cluster, pod_executor, kube_namespace):
    """Unless HOME points at a writable volume, as a pod with a read-only root would need."""
    script = 'mkdir -p "$HOME/.cache/x" && echo wrote > /dev/termination-log'
    read_only = {"readOnlyRootFilesystem": True}
    kube_cluster.kubectl("-n", kube_namespace, "apply", "-f", "-",
                         input=job("home-on-root", script, security=read_only))
    kube_cluster.kubectl("-n", kube_namespace, "apply", "-f", "-", input=job(
        "home-on-volume", script, security=read_only, env=[{"name": "HOME", "value": "/scratch"}],
        volumes=[{"name": "scratch", "emptyDir": {}}], mounts=[{"name": "scratch", "mountPath": "/scratch"}]))
    kube_cluster.kubectl("-n", kube_namespace, "wait", "--for=condition=Failed", "--timeout=60s", "job/home-on-root")
    kube_cluster.kubectl("-n", kube_namespace, "wait", "--for=condition=Complete", "--timeout=60s",
                         "job/home-on-volume")
    [pod] = pods(kube_cluster, kube_namespace, "home-on-root")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] != 0
