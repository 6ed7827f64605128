"""Stands in for a kubelet: runs the Pods bound to one fake GPU node as local processes, so the
real Job controller (completions, retries, suspend, deletion) sees real pod statuses without a
container runtime.

Model and limits:

* Node. ``start()`` registers a Node with ``nvidia.com/gpu`` (default 2), cpu, memory and pods
  capacity, marks it Ready, lifts the ``not-ready`` taint, and keeps it healthy with a status
  heartbeat and a Lease in ``kube-node-lease`` every 10 s. ``stop()`` deletes both. GPUs exist
  only for the scheduler's accounting: no device is handed to the process.
* Processes. The image is ignored: a container must have a ``command``; ``command + args`` (with
  ``$(VAR)`` expanded) run on the test process's PATH, with the Python interpreter's directory
  first so the venv's console scripts are found. Init containers run one after the other, then
  the containers together, each in its own process group, stdout+stderr to
  ``<workdir>/<namespace>/<pod>-<uid prefix>/<container>.log`` (see ``log()``; ``kubectl logs`` and
  ``exec`` have no kubelet to talk to). Unless ``restartPolicy`` is Never, a failed container
  restarts in place after 1 s (Always is treated as OnFailure). Of securityContext, only
  ``readOnlyRootFilesystem`` is emulated, for the home folder: ``HOME`` is a file, so creating
  anything under it fails even for root (where a real pod's home is read-only). Probes, resource
  limits, the rest of securityContext (processes run as the test's user), read-only mounts, pod
  ``activeDeadlineSeconds`` and networking are not emulated (``podIP`` is 127.0.0.1).
* Environment. ``PATH``, ``HOME``, ``LANG`` of the test process, ``HOSTNAME`` = pod name,
  ``extra_env`` (set by tests), then the container's ``envFrom`` and ``env``: ``value``,
  ``secretKeyRef``, ``configMapKeyRef`` (read through the API; a missing one keeps the pod
  waiting in CreateContainerConfigError, as a kubelet does) and ``fieldRef`` (metadata.name,
  namespace, uid, labels/annotations, spec.nodeName, spec.serviceAccountName, status.podIP,
  status.hostIP). Anything unsupported fails the pod with reason ``UnsupportedByLocalExecutor``.
* Paths. There is no mount namespace (it needs privileges CI may lack, and mount points would
  have to be created on the host). Each volume is a local folder instead: emptyDir and
  configMap/secret (files written from the API) a folder of the pod, hostPath the host path,
  persistentVolumeClaim ``<claims_root>/<namespace>/<claimName>`` (shared by the pods using the
  claim, and readable by the test; ``provision_claim()`` creates a claim the scheduler accepts).
  Every mountPath (with subPath) that appears as a path prefix in ``command``, ``args``, ``env``
  values or ``workingDir`` is rewritten to its folder, e.g. ``--out=/outputs/v.mp4`` becomes
  ``--out=<folder>/v.mp4``. Paths the process reads from file contents are not rewritten. The
  termination message file is a local file named by the env var ``TERMINATION_MESSAGE_PATH``;
  the container's ``terminationMessagePath`` (default ``/dev/termination-log``) is rewritten to
  it too where it appears.
* Status. Written through the status subresource like a kubelet: Pending (ContainerCreating),
  Running (running state, Ready), then each container terminated with exit code, reason
  (Completed, Error, StartError for a missing executable), the termination message (at most
  4096 bytes; the log's tail for ``FallbackToLogsOnError``), startedAt/finishedAt, and phase
  Succeeded or Failed.
* Deletion. A pod marked for deletion gets SIGTERM on its process groups, SIGKILL after its
  grace period, a final status, and then the kubelet's final ``gracePeriodSeconds=0`` delete.
"""

from __future__ import annotations

import base64
import datetime
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.cluster import KubeAPI, KubeError, Watch, die_with_parent, kill_group

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10
WATCH_SECONDS = 30
MESSAGE_LIMIT = 4096
SMP = "application/strategic-merge-patch+json"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ConfigMissing(Exception):
    """A referenced ConfigMap/Secret (key) does not exist yet: the kubelet waits for it."""


class Unsupported(Exception):
    """A pod feature this executor does not emulate: the pod fails, saying which."""


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def path_rewriter(mounts: dict[str, str]):
    """Replaces each container path (as a whole path prefix) by its local folder, in one pass so
    a replacement is never rewritten again."""
    paths = sorted((p.rstrip("/") for p in mounts if p.rstrip("/")), key=len, reverse=True)
    if not paths:
        return lambda value: value
    local = {p.rstrip("/"): str(v) for p, v in mounts.items()}
    pattern = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, paths)) + r")(?=/|$|[^\w.-])")
    return lambda value: pattern.sub(lambda m: local[m.group(1)], value)


class PodExecutor:
    """Registers ``node_name`` and runs the pods scheduled onto it until ``stop()``."""

    def __init__(self, api: KubeAPI, workdir: Path, *, node_name: str = "videogen-gpu-0",
                 gpus: int = 2, cpu: str = "16", memory: str = "64Gi", max_pods: int = 32,
                 labels: dict[str, str] | None = None, claims_root: Path | None = None) -> None:
        self.api, self.workdir, self.node_name = api, workdir, node_name
        self.claims_root = claims_root or workdir / "claims"
        self.extra_env: dict[str, str] = {}
        self.capacity = {"cpu": cpu, "memory": memory, "pods": str(max_pods),
                         "nvidia.com/gpu": str(gpus), "ephemeral-storage": "100Gi"}
        self.labels = {"kubernetes.io/hostname": node_name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "nvidia.com/gpu.present": "true",
                       **(labels or {})}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._runs: dict[str, _PodRun] = {}
        self._threads: list[threading.Thread] = []
        self._watch: Watch | None = None
        self._volumes: list[str] = []  # PersistentVolumes made by provision_claim
        self._since = _now()

    # --- lifecycle ---

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.api.create("/api/v1/nodes", {"metadata": {"name": self.node_name,
                                                           "labels": self.labels}})
        except KubeError as error:
            if error.status != 409:
                raise
        self._heartbeat()
        self._wait_schedulable(timeout)
        for target in (self._heartbeat_loop, self._watch_loop):
            thread = threading.Thread(target=target, name=f"{self.node_name}-{target.__name__}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Kills every pod process, ends the threads, and removes the node, its lease and the
        volumes of ``provision_claim``."""
        self._stopping.set()
        with self._lock:
            runs = list(self._runs.values())
            if self._watch:
                self._watch.close()
        for run in runs:
            run.abandon()
        for thread in [*self._threads, *(run.thread for run in runs)]:
            thread.join(timeout=15)
        for path in (f"{LEASES}/{self.node_name}", f"/api/v1/nodes/{self.node_name}",
                     *(f"/api/v1/persistentvolumes/{v}" for v in self._volumes)):
            try:
                self.api.delete(path)
            except KubeError as error:
                log.warning("cleanup of %s: %s", path, error)

    def __enter__(self) -> PodExecutor:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def provision_claim(self, namespace: str, name: str, size: str = "1Gi") -> Path:
        """Creates PersistentVolumeClaim ``name`` pre-bound to a hostPath PersistentVolume on
        its executor folder (the scheduler only places pods whose claims are bound); returns
        that folder."""
        folder = self.claims_root / namespace / name
        folder.mkdir(parents=True, exist_ok=True)
        volume = f"{namespace}-{name}"
        self._volumes.append(volume)
        self.api.create("/api/v1/persistentvolumes", {
            "metadata": {"name": volume},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteMany"],
                     "storageClassName": "", "hostPath": {"path": str(folder)},
                     "persistentVolumeReclaimPolicy": "Retain",
                     "claimRef": {"namespace": namespace, "name": name}}})
        self.api.create(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", {
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "",
                     "volumeName": volume, "resources": {"requests": {"storage": size}}}})
        return folder

    def log(self, namespace: str, pod: str, container: str | None = None) -> str:
        """A container's output (the only container's if not named)."""
        with self._lock:
            run = next((r for r in self._runs.values()
                        if r.namespace == namespace and r.name == pod), None)
        if run is None:
            raise KeyError(f"pod {namespace}/{pod} never ran on {self.node_name}")
        name = container or run.pod["spec"]["containers"][0]["name"]
        path = run.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- node ---

    def _heartbeat(self) -> None:
        now = _now()
        conditions = [
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "local pod executor is posting ready status"},
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
        ]
        for condition in conditions:
            condition.update(lastHeartbeatTime=now, lastTransitionTime=self._since)
        node = self.api.request("PATCH", f"/api/v1/nodes/{self.node_name}/status", {"status": {
            "capacity": self.capacity, "allocatable": self.capacity, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node_name}],
            "nodeInfo": {"kubeletVersion": "v0.0.0-videogen-local", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "local://0"},
        }}, content_type=SMP)
        lease_path = f"{LEASES}/{self.node_name}"
        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": 40,
                "renewTime": _micro_now()}
        try:
            self.api.merge_patch(lease_path, {"spec": spec})
        except KubeError as error:
            if error.status != 404:
                raise
            self.api.create(LEASES, {
                "metadata": {"name": self.node_name, "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Node", "name": self.node_name,
                    "uid": node["metadata"]["uid"]}]},
                "spec": spec})

    def _wait_schedulable(self, timeout: float) -> None:
        """Lifts the not-ready taint the API server put on the new node (the node-lifecycle
        controller would, seconds later) and waits until no NoSchedule taint is left."""
        path = f"/api/v1/nodes/{self.node_name}"
        deadline = time.monotonic() + timeout
        while True:
            taints = self.api.get(path)["spec"].get("taints") or []
            blocking = [t for t in taints if t["effect"] in ("NoSchedule", "NoExecute")]
            if not blocking:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.node_name} still tainted after {timeout:.0f}s: "
                                   f"{blocking}")
            kept = [t for t in taints if t["key"] != "node.kubernetes.io/not-ready"]
            if kept != taints:
                self.api.merge_patch(path, {"spec": {"taints": kept or None}})
            time.sleep(0.2)

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(HEARTBEAT_SECONDS):
            try:
                self._heartbeat()
            except Exception:
                log.exception("node heartbeat failed")

    # --- pods ---

    def _watch_loop(self) -> None:
        """List, then watch from the list's version; every WATCH_SECONDS the watch ends and the
        list runs again, which also catches anything a broken watch missed."""
        query = {"fieldSelector": f"spec.nodeName={self.node_name}"}
        while not self._stopping.is_set():
            try:
                listing = self.api.get("/api/v1/pods", **query)
                for pod in listing["items"]:
                    self._on_pod(pod)
                with self._lock:
                    if self._stopping.is_set():
                        break
                    self._watch = self.api.watch(
                        "/api/v1/pods", WATCH_SECONDS,
                        resourceVersion=listing["metadata"]["resourceVersion"], **query)
                for event in self._watch:
                    if event["type"] == "DELETED":
                        self._on_gone(event["object"])
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self._on_pod(event["object"])
            except Exception:
                if not self._stopping.is_set():
                    log.exception("pod watch failed; listing again")
                    self._stopping.wait(1)

    def _on_pod(self, pod: dict) -> None:
        meta = pod["metadata"]
        with self._lock:
            if self._stopping.is_set():
                return
            run = self._runs.get(meta["uid"])
            if run is None:
                if pod["status"].get("phase") in ("Succeeded", "Failed"):
                    return
                run = self._runs[meta["uid"]] = _PodRun(self, pod)
                run.thread.start()
        if meta.get("deletionTimestamp"):
            run.terminate(meta.get("deletionGracePeriodSeconds", 30))

    def _on_gone(self, pod: dict) -> None:
        with self._lock:
            run = self._runs.get(pod["metadata"]["uid"])
        if run:
            run.terminate(0, gone=True)


class _PodRun:
    """One pod's life on the node, in its own thread."""

    def __init__(self, executor: PodExecutor, pod: dict) -> None:
        self.executor, self.api, self.pod = executor, executor.api, pod
        meta = pod["metadata"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"
        self.dir = executor.workdir / self.namespace / f"{self.name}-{self.uid[:8]}"
        self.restart_policy = pod["spec"].get("restartPolicy", "Always")
        self.start_time = _now()
        self.statuses: dict[str, dict] = {}  # container name -> ContainerStatus
        self.processes: dict[str, subprocess.Popen] = {}
        self.initialized = False
        self.grace = 30.0
        self.killed = threading.Event()
        self.report_to_api = True
        self.thread = threading.Thread(target=self._main, name=f"pod-{self.name}", daemon=True)

    # --- called from other threads ---

    def terminate(self, grace: float, gone: bool = False) -> None:
        self.grace = min(self.grace, float(grace))
        if gone:
            self.report_to_api = False
        self.killed.set()

    def abandon(self) -> None:
        """Executor shutdown: stop quickly, leave the API alone."""
        self.report_to_api = False
        self.terminate(1)

    # --- the pod's thread ---

    def _main(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            spec = self.pod["spec"]
            for container in spec.get("initContainers", []):
                self.statuses[container["name"]] = self._status(container, "waiting",
                                                                {"reason": "PodInitializing"})
            for container in spec["containers"]:
                self.statuses[container["name"]] = self._status(container, "waiting",
                                                                {"reason": "ContainerCreating"})
            self._report("Pending")
            prepared = self._prepare_with_retry(spec)
            if prepared is None:
                return self._finish()
            for container in spec.get("initContainers", []):
                if not self._execute([container], prepared) or self.killed.is_set():
                    return self._finish()
            self.initialized = True
            self._execute(spec["containers"], prepared)
            self._finish()
        except Unsupported as error:
            self._finish(reason="UnsupportedByLocalExecutor", message=str(error))
        except Exception as error:
            log.exception("pod %s/%s", self.namespace, self.name)
            self._finish(reason="LocalExecutorError", message=repr(error))

    def _prepare_with_retry(self, spec: dict) -> dict[str, dict] | None:
        """Resolves every container's env and volumes; while a ConfigMap or Secret is missing
        the pod waits (and retries every 2 s) until it exists or the pod is deleted."""
        while True:
            try:
                volumes = {v["name"]: self._volume(v) for v in spec.get("volumes", [])}
                return {c["name"]: self._prepare(c, volumes)
                        for c in [*spec.get("initContainers", []), *spec["containers"]]}
            except ConfigMissing as error:
                for status in self.statuses.values():
                    status["state"] = {"waiting": {"reason": "CreateContainerConfigError",
                                                   "message": str(error)}}
                self._report("Pending")
                if self.killed.wait(2):
                    return None

    def _prepare(self, container: dict, volumes: dict[str, Path]) -> dict:
        name = container["name"]
        if not container.get("command"):
            raise Unsupported(f"container {name} has no command (images are ignored)")
        message_file = self.dir / f"{name}.termination-log"
        mounts = {container.get("terminationMessagePath", "/dev/termination-log"): message_file}
        for mount in container.get("volumeMounts", []):
            local = volumes[mount["name"]] / mount.get("subPath", "")
            if not local.exists():
                local.mkdir(parents=True)
            mounts[mount["mountPath"]] = local
        rewrite = path_rewriter(mounts)
        home = os.environ.get("HOME", "/")
        if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
            home = self.dir / f"{name}.read-only-home"
            home.write_text("readOnlyRootFilesystem: nothing can be created under this HOME\n")
        env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "HOME": str(home), "LANG": os.environ.get("LANG", "C.UTF-8"),
               "HOSTNAME": self.name, **self.executor.extra_env}
        env.update({k: rewrite(v) for k, v in self._env(container).items()})
        env["TERMINATION_MESSAGE_PATH"] = str(message_file)
        argv = [rewrite(expand(a, env)) for a in container["command"] + container.get("args", [])]
        workdir = Path(rewrite(container.get("workingDir", ""))) if container.get("workingDir") \
            else self.dir
        return {"argv": argv, "env": env, "cwd": workdir, "message_file": message_file,
                "log": self.dir / f"{name}.log"}

    def _env(self, container: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                data = self._object("configmaps", source["configMapRef"])
            elif "secretRef" in source:
                data = self._object("secrets", source["secretRef"])
            else:
                raise Unsupported(f"envFrom {source}")
            env.update({source.get("prefix", "") + k: v for k, v in data.items()})
        for var in container.get("env", []):
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = expand(var.get("value", ""), env)
            elif "configMapKeyRef" in source or "secretKeyRef" in source:
                kind, ref = (("configmaps", source["configMapKeyRef"])
                             if "configMapKeyRef" in source
                             else ("secrets", source["secretKeyRef"]))
                data = self._object(kind, ref)
                if ref["key"] in data:
                    env[var["name"]] = data[ref["key"]]
                elif not ref.get("optional"):
                    raise ConfigMissing(f"key {ref['key']} not found in {kind} {ref['name']}")
            elif "fieldRef" in source:
                env[var["name"]] = self._field(source["fieldRef"]["fieldPath"])
            else:
                raise Unsupported(f"env {var['name']}: valueFrom {list(source)}")
        return env

    def _object(self, kind: str, ref: dict) -> dict[str, str]:
        """A ConfigMap's or Secret's data (decoded), {} if missing but optional."""
        try:
            obj = self.api.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{ref['name']}")
        except KubeError as error:
            if error.status == 404 and ref.get("optional"):
                return {}
            if error.status == 404:
                raise ConfigMissing(f"{kind} {ref['name']} not found") from error
            raise
        def decoded(field: str) -> dict[str, str]:
            return {k: base64.b64decode(v).decode() for k, v in (obj.get(field) or {}).items()}

        if kind == "secrets":
            return decoded("data")
        return {**(obj.get("data") or {}), **decoded("binaryData")}

    def _field(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        simple = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                  "metadata.uid": self.uid, "spec.nodeName": spec.get("nodeName", ""),
                  "spec.serviceAccountName": spec.get("serviceAccountName", ""),
                  "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
        if path in simple:
            return simple[path]
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if match:
            return (meta.get(match.group(1)) or {}).get(match.group(2), "")
        raise Unsupported(f"fieldRef {path}")

    def _volume(self, volume: dict) -> Path:
        name = volume["name"]
        own = self.dir / "volumes" / name
        if "emptyDir" in volume or "projected" in volume:
            # projected: the service-account token volume every pod gets; left empty.
            own.mkdir(parents=True, exist_ok=True)
            return own
        if "hostPath" in volume:
            return Path(volume["hostPath"]["path"])
        if "persistentVolumeClaim" in volume:
            claim = self.executor.claims_root / self.namespace / \
                volume["persistentVolumeClaim"]["claimName"]
            claim.mkdir(parents=True, exist_ok=True)
            return claim
        for kind, key in (("configmaps", "configMap"), ("secrets", "secret")):
            if key in volume:
                ref = dict(volume[key])
                ref.setdefault("name", ref.get("secretName"))
                data = self._object(kind, ref)
                items = ref.get("items") or [{"key": k, "path": k} for k in data]
                own.mkdir(parents=True, exist_ok=True)
                for item in items:
                    if item["key"] not in data:
                        raise ConfigMissing(f"key {item['key']} not found in {kind} {ref['name']}")
                    target = own / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(data[item["key"]])
                return own
        raise Unsupported(f"volume {name}: {sorted(set(volume) - {'name'})}")

    # --- running ---

    def _execute(self, containers: list[dict], prepared: dict[str, dict]) -> bool:
        """Runs containers together until all have exited (restarting failed ones unless
        restartPolicy is Never; Always counts as OnFailure) or the pod is killed; True if all
        exited 0."""
        if self.killed.is_set():
            return False
        for container in containers:
            self._spawn(container["name"], prepared[container["name"]])
        self._report(self._phase())
        running = {c["name"] for c in containers}
        while running:
            killed = self.killed.wait(0.1)
            if killed:
                for name in running:
                    self._kill(name)
            exited = sorted(n for n in running if self.processes[n].poll() is not None)
            for name in exited:
                code = self.processes[name].poll()
                self._terminated(name, prepared[name], 128 - code if code < 0 else code)
                running.discard(name)
            if not exited or killed:
                continue
            self._report(self._phase())
            for name in exited:
                status = self.statuses[name]
                if (self.restart_policy == "Never" or status["state"]["terminated"]["exitCode"] == 0
                        or self.killed.wait(1)):
                    continue
                status["restartCount"] += 1
                status["lastState"] = status["state"]
                self._spawn(name, prepared[name])
                running.add(name)
                self._report(self._phase())
        return all(self.statuses[c["name"]]["state"].get("terminated", {}).get("exitCode") == 0
                   for c in containers)

    def _phase(self) -> str:
        return "Running" if self.initialized else "Pending"

    def _kill(self, name: str) -> None:
        process = self.processes[name]
        if isinstance(process, subprocess.Popen) and process.poll() is None:
            kill_group(process, self.grace)

    def _spawn(self, name: str, prepared: dict) -> None:
        prepared["message_file"].write_text("")
        status = self.statuses[name]
        status.update(ready=True, started=True, containerID=f"local://{self.uid}/{name}")
        argv = prepared["argv"]
        executable = shutil.which(argv[0], path=prepared["env"]["PATH"]) or argv[0]
        try:
            with prepared["log"].open("ab") as out:
                self.processes[name] = subprocess.Popen(
                    [executable, *argv[1:]], env=prepared["env"], cwd=prepared["cwd"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    # This thread waits for the process, so it outlives it unless pytest dies.
                    start_new_session=True, preexec_fn=die_with_parent)
        except OSError as error:
            # What a runtime reports for a missing executable: the container never started.
            self.processes[name] = _Exited(128)
            status.update(ready=False, started=False)
            status["state"] = {"terminated": {"exitCode": 128, "reason": "StartError",
                                              "message": str(error), "startedAt": _now(),
                                              "finishedAt": _now()}}
            return
        status["state"] = {"running": {"startedAt": _now()}}

    def _terminated(self, name: str, prepared: dict, code: int) -> None:
        status = self.statuses[name]
        if "terminated" in status["state"]:  # StartError, already final
            return
        message = prepared["message_file"].read_bytes()[:MESSAGE_LIMIT].decode(errors="replace")
        container = self._container(name)
        if (not message and code != 0
                and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"):
            lines = prepared["log"].read_text(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)[-2048:]
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                      "startedAt": status["state"].get("running", {}).get("startedAt", _now()),
                      "finishedAt": _now(), "containerID": status["containerID"]}
        if message:
            terminated["message"] = message
        status.update(ready=False, started=False, state={"terminated": terminated})

    # --- status ---

    def _container(self, name: str) -> dict:
        spec = self.pod["spec"]
        return next(c for c in [*spec.get("initContainers", []), *spec["containers"]]
                    if c["name"] == name)

    def _status(self, container: dict, state: str, detail: dict) -> dict:
        return {"name": container["name"], "image": container.get("image", ""),
                "imageID": "", "ready": False, "started": False, "restartCount": 0,
                "state": {state: detail}}

    def _report(self, phase: str, reason: str | None = None, message: str | None = None) -> None:
        if not self.report_to_api:
            return
        spec = self.pod["spec"]
        main = [self.statuses[c["name"]] for c in spec["containers"]]
        ready = phase == "Running" and all(s["ready"] for s in main)

        def condition(kind: str, true: bool) -> dict:
            return {"type": kind, "status": "True" if true else "False",
                    "lastTransitionTime": _now()}

        status = {
            "phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "startTime": self.start_time,
            "conditions": [condition("PodReadyToStartContainers", True),
                           condition("Initialized", self.initialized or
                                     not spec.get("initContainers")),
                           condition("ContainersReady", ready), condition("Ready", ready),
                           condition("PodScheduled", True)],
            "containerStatuses": [self._wire(s) for s in main],
            "reason": reason, "message": message,
        }
        if spec.get("initContainers"):
            status["initContainerStatuses"] = [self._wire(self.statuses[c["name"]])
                                               for c in spec["initContainers"]]
        try:
            self.api.request("PATCH", f"{self.path}/status", {"status": status}, content_type=SMP)
        except KubeError as error:
            if error.status != 404:  # a pod that is gone needs no status
                raise

    @staticmethod
    def _wire(status: dict) -> dict:
        """A ContainerStatus for a strategic merge patch: states not in use are nulled, or the
        patch would merge e.g. ``terminated`` next to the old ``running``."""
        def state(value: dict | None) -> dict | None:
            if not value:
                return None
            return {kind: value.get(kind) for kind in ("waiting", "running", "terminated")}
        return {**status, "state": state(status["state"]),
                "lastState": state(status.get("lastState"))}

    def _finish(self, reason: str | None = None, message: str | None = None) -> None:
        """Reports the terminal phase, then (if the pod is being deleted) removes it as a
        kubelet does once its containers are gone."""
        try:
            if reason:
                for status in self.statuses.values():
                    if "terminated" not in status["state"]:
                        status["state"] = {"terminated": {
                            "exitCode": 128, "reason": reason, "message": message,
                            "startedAt": self.start_time, "finishedAt": _now()}}
            codes = [self.statuses[c["name"]]["state"].get("terminated", {}).get("exitCode")
                     for c in self.pod["spec"]["containers"]]
            succeeded = self.initialized and all(code == 0 for code in codes)
            self._report("Succeeded" if succeeded else "Failed", reason, message)
            if self.killed.is_set() and self.report_to_api:
                self.api.delete(self.path, gracePeriodSeconds=0)
        except KubeError as error:
            if error.status != 404:
                log.warning("pod %s/%s: %s", self.namespace, self.name, error)
        finally:
            for name in self.processes:
                self._kill(name)


class _Exited:
    """Stands for a process that could not be started."""

    def __init__(self, code: int) -> None:
        self.returncode = code

    def poll(self) -> int:
        return self.returncode

