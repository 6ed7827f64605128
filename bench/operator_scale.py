"""The operator at scale on the real control plane: kwok GPU nodes (64 × 8 nvidia.com/gpu), 1,000
VideoGenerations in two shapes (a steady 20 per second for 50 s; a burst of all of them in one
`kubectl create`), the current operator beside a baseline one measured the same way in the same
run. kwok's stages run each pod (Running, then Succeeded at once), so every resource goes the
whole way: create → Job → pod → Job complete → status Succeeded. A benchmark, not a test; run by
hand (minutes) through pytest, whose fixtures start and stop the control plane:

    git worktree add /tmp/vg-baseline <commit>       # the operator to compare with
    VIDEOGEN_BASELINE=/tmp/vg-baseline python -m pytest -s -q --timeout=0 -p tests.support.services \\
        -p tests.support.cluster bench/operator_scale.py

(The last run's baseline: 98f4c90, whose handlers import operator/videogen_operator/health.py, a
file 90d07f0 deleted: restore it with `git show 90d07f0^:<path> > /tmp/vg-baseline/<path>`.)
Knobs: VIDEOGEN_SCALE_RESOURCES (1000), VIDEOGEN_SCALE_SHAPES (steady,burst),
VIDEOGEN_SCALE_IDLE_S (60), VIDEOGEN_SCALE_PYSPY (a py-spy binary: a speedscope profile of each
operator in pytest's tmp_path).

The bench's own client stays cheap, so that it measures the operator rather than itself: plain
JSON watches (no model objects), and steady creates sent open loop (each at its time, whatever
the answers' latency) from 32 threads with a pooled connection each.
Every time is the bench's own watch seeing the change (one clock for all). The figures:
- create_to_job: a resource's ADDED to its Job's ADDED;
- burst_last_job_s: from the end of the one `kubectl create` to the last Job's ADDED;
- status_current: for each change of a resource's children that changes its status (its Job
  created: Pending/Starting; the pod Running: Running/Generating; the pod Succeeded:
  Running/Finishing; the Job Complete: Succeeded), from the bench seeing the change to it seeing
  the first status that reflects it or a later one; p50/p95/max over all of them, and p95 by
  change. The operator's own latency, apart from the controller-manager's (which paces pod
  creation and Job completion at its client rate);
- api_requests_per_resource: requests the operator made (every one, watches included, counted by
  the API server's flow control under a FlowSchema of its own) from the first create until all
  resources succeeded, per resource; idle_api_requests_per_minute: the same over a minute after;
- operator_peak_rss_mib: the operator process' VmHWM; operator_cpu_s: its user + system CPU
  seconds from the first create until all resources succeeded.
Writes bench/results/operator_scale.json.
"""

import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes
import yaml

from tests.support.cluster import KWOK_ANNOTATION, KubeAPI, Watch
from tests.support.services import free_port, wait_until
from videogen_operator.job import NAME_LABEL

ROOT = Path(__file__).parents[1]
RESULT = ROOT / "bench" / "results" / "operator_scale.json"
RESOURCES = int(os.environ.get("VIDEOGEN_SCALE_RESOURCES", "1000"))
NODES, GPUS, RATE = 64, 8, 20.0
BENCH_NS = "videogen-bench"
FLOW = "videogen-bench"
IDLE_S = int(os.environ.get("VIDEOGEN_SCALE_IDLE_S", "60"))
SHAPES = os.environ.get("VIDEOGEN_SCALE_SHAPES", "steady,burst").split(",")


def setup_cluster(cluster) -> Path:
    """The kwok GPU nodes, and the operator's identity: a ServiceAccount (cluster-admin, for the
    baseline's and the current RBAC alike) whose requests the API server counts apart."""
    nodes = [{"apiVersion": "v1", "kind": "Node",
              "metadata": {"name": f"gpu-{i}", "annotations": {KWOK_ANNOTATION: "fake"},
                           "labels": {"type": "kwok", "kubernetes.io/hostname": f"gpu-{i}"}},
              "spec": {"taints": [{"key": KWOK_ANNOTATION, "value": "fake", "effect": "NoSchedule"}]}}
             for i in range(NODES)]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}))
    capacity = {"nvidia.com/gpu": str(GPUS), "cpu": "128", "memory": "1Ti", "pods": "110"}
    for node in nodes:
        cluster.kubectl("patch", "node", node["metadata"]["name"], "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": {"capacity": capacity, "allocatable": capacity}}))
    cluster.kubectl("create", "namespace", BENCH_NS, check=False)
    identity = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "operator", "namespace": BENCH_NS}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "videogen-bench"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": BENCH_NS}]},
        {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": FLOW},
         "spec": {"matchingPrecedence": 500, "priorityLevelConfiguration": {"name": "workload-low"},
                  "distinguisherMethod": {"type": "ByUser"},
                  "rules": [{"subjects": [{"kind": "ServiceAccount",
                                           "serviceAccount": {"name": "operator", "namespace": BENCH_NS}}],
                             "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                                "clusterScope": True, "namespaces": ["*"]}],
                             "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}},
    ]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": identity}))
    token = cluster.kubectl("create", "token", "operator", "-n", BENCH_NS, "--duration=6h").stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "operator"
    path = Path(tempfile.mkdtemp(prefix="vg-bench-")) / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def manifest(name: str) -> dict:
    return {"apiVersion": "videogen.io/v1alpha1", "kind": "VideoGeneration", "metadata": {"name": name},
            "spec": {"model": {"preset": "ti2v-5b", "hostPath": "/models", "path": "ti2v"}, "prompt": "a fox",
                     "resources": {"gpus": 1}, "nodeSelector": {"type": "kwok"},
                     "tolerations": [{"key": KWOK_ANNOTATION, "operator": "Exists"}]}}


def operator_requests(cluster) -> float:
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("apiserver_flowcontrol_dispatched_requests_total{")
               and f'flow_schema="{FLOW}"' in line)


# A resource's status, in the order the way goes: what each child change asks of it.
RANK = {("Pending", "Starting"): 1, ("Running", "Generating"): 2, ("Running", "Finishing"): 3}
CHANGES = {"job_added": 1, "pod_running": 2, "pod_succeeded": 3, "job_complete": 4}


def rank(status: dict) -> int:
    if status.get("phase") == "Succeeded":
        return 4
    return RANK.get((status.get("phase"), status.get("reason")), 0)


def raw_api(cluster, connections: int = 8) -> KubeAPI:
    """Plain JSON over the official client's kubeconfig handling, one pooled connection per thread
    (no model objects built from the answers: the bench's own CPU stays small)."""
    api = KubeAPI(cluster.kubeconfig)
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(str(cluster.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    api.client = kubernetes.client.ApiClient(configuration)
    return api


class Seen:
    """First-seen times, from the bench's own watches of the namespace (one clock for all)."""

    PATHS = {"vg": "/apis/videogen.io/v1alpha1/namespaces/{ns}/videogenerations",
             "job": "/apis/batch/v1/namespaces/{ns}/jobs", "pod": "/api/v1/namespaces/{ns}/pods"}

    def __init__(self, cluster, namespace: str):
        self.namespace = namespace
        self.api = raw_api(cluster, 4)
        self.vg_added: dict[str, float] = {}
        self.ranked: dict[str, dict[int, float]] = {}  # resource → rank → when its status first reached it
        self.changes: dict[str, dict[str, float]] = {kind: {} for kind in CHANGES}
        self.stopping = threading.Event()
        self.watches: dict[str, Watch] = {}
        self.threads = [threading.Thread(target=self.follow, args=(kind,), daemon=True) for kind in self.PATHS]
        for thread in self.threads:
            thread.start()

    def follow(self, kind: str) -> None:
        path, version = self.PATHS[kind].format(ns=self.namespace), None
        query = {"labelSelector": NAME_LABEL} if kind != "vg" else {}
        while not self.stopping.is_set():
            try:
                self.watches[kind] = watch = self.api.watch(
                    path, 300, allowWatchBookmarks="true", **query,
                    **({"resourceVersion": version} if version else {}))
                for event in watch:
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self.saw(kind, event["object"], time.monotonic())
            except Exception:  # noqa: BLE001 - a dropped or expired watch: watch again (first-seen times stay)
                version = None
                time.sleep(0.2)

    def saw(self, kind: str, obj: dict, at: float) -> None:
        meta, status = obj["metadata"], obj.get("status") or {}
        if kind == "vg":
            self.vg_added.setdefault(meta["name"], at)
            self.ranked.setdefault(meta["name"], {}).setdefault(rank(status), at)
            return
        name = (meta.get("labels") or {}).get(NAME_LABEL)
        if kind == "job":
            self.changes["job_added"].setdefault(name, at)
            if any(c["type"] == "Complete" and c["status"] == "True" for c in status.get("conditions") or []):
                self.changes["job_complete"].setdefault(name, at)
        elif status.get("phase") in ("Running", "Succeeded"):
            self.changes["pod_running"].setdefault(name, at)
            if status["phase"] == "Succeeded":
                self.changes["pod_succeeded"].setdefault(name, at)

    def status_current(self, change: str) -> list[float]:
        """For each resource, from the change to the first status that reflects it (or a later one)."""
        latencies = []
        for name, at in self.changes[change].items():
            reached = [t for r, t in self.ranked.get(name, {}).items() if r >= CHANGES[change]]
            if reached:
                latencies.append(max(0.0, min(reached) - at))
        return latencies

    def stop(self) -> None:
        self.stopping.set()
        for watch in list(self.watches.values()):
            watch.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0], 3)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_seconds(pid: int) -> float:
    """The process' user + system CPU time so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(cluster, kubeconfig: Path, variant: str, root: Path, shape: str, log_dir: Path) -> dict:
    namespace = f"scale-{variant}-{shape}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("create", "serviceaccount", "default", "-n", namespace, check=False)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": f"{root}/operator:{root}/runner",
           "VIDEOGEN_NAMESPACES": json.dumps([namespace]), "VIDEOGEN_S3_BUCKET": "videos",
           "VIDEOGEN_ALLOWED_HOST_PATHS": json.dumps(["/models"]), "VIDEOGEN_LOG_LEVEL": "WARNING",
           "VIDEOGEN_METRICS_PORT": str(free_port()), "VIDEOGEN_HEALTH_PORT": str(free_port()),
           "POD_ID": f"bench-{variant}"}
    log = open(log_dir / f"{variant}-{shape}.log", "wb")
    operator = subprocess.Popen([sys.executable, "-m", "videogen_operator.main"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return measure(cluster, namespace, shape, env, operator, log_dir)
    finally:
        if operator.poll() is None:  # the baseline's threads may not stop in time
            operator.kill()
            operator.wait(10)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def measure(cluster, namespace: str, shape: str, env: dict, operator: subprocess.Popen, log_dir: Path) -> dict:
    health = f"http://127.0.0.1:{env['VIDEOGEN_HEALTH_PORT']}/healthz"
    wait_until(lambda: urllib.request.urlopen(health, timeout=2).status == 200, 60, f"operator of {namespace}")
    time.sleep(3)  # leadership and the first lists
    seen = Seen(cluster, namespace)
    names = [f"vg-{i:04d}" for i in range(RESOURCES)]
    before = operator_requests(cluster)
    load, cpu = os.getloadavg()[0], cpu_seconds(operator.pid)
    profiler = profile(operator.pid, log_dir / f"{namespace}.speedscope.json")
    started = time.monotonic()
    if shape == "steady":  # open loop: each create sent at its time, whatever the answers' latency
        api, path = raw_api(cluster, 32), f"/apis/videogen.io/v1alpha1/namespaces/{namespace}/videogenerations"
        with ThreadPoolExecutor(32) as pool:
            for i, name in enumerate(names):
                time.sleep(max(0.0, started + i / RATE - time.monotonic()))
                pool.submit(api.create, path, manifest(name))
    else:
        items = {"apiVersion": "v1", "kind": "List", "items": [manifest(n) for n in names]}
        cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(items), timeout=600)
    created = time.monotonic()
    deadline = created + 900
    succeeded = lambda: sum(4 in r for r in seen.ranked.values())  # noqa: E731
    while succeeded() < RESOURCES and time.monotonic() < deadline and operator.poll() is None:
        time.sleep(1)
    done = time.monotonic()
    busy = operator_requests(cluster) - before
    rss, cpu = peak_rss_mib(operator.pid), cpu_seconds(operator.pid) - cpu
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(60)
    time.sleep(10)
    idle_start = operator_requests(cluster)
    time.sleep(IDLE_S)
    idle = (operator_requests(cluster) - idle_start) * 60 / IDLE_S
    seen.stop()
    operator.terminate()
    try:
        operator.wait(30)
    except subprocess.TimeoutExpired:
        pass

    jobs = seen.changes["job_added"]
    to_job = [jobs[n] - seen.vg_added[n] for n in names if n in jobs and n in seen.vg_added]
    current = {change: seen.status_current(change) for change in CHANGES}
    every = [latency for latencies in current.values() for latency in latencies]
    return {
        "resources": RESOURCES, "succeeded": succeeded(), "jobs": len(jobs),
        "create_seconds": round(created - started, 2), "all_succeeded_s": round(done - started, 1),
        "create_to_job_p50_s": percentile(to_job, 50), "create_to_job_p95_s": percentile(to_job, 95),
        "create_to_job_max_s": round(max(to_job), 3) if to_job else None,
        "last_job_s": round(max(jobs.values()) - created, 2) if jobs else None,
        "status_current_p50_s": percentile(every, 50), "status_current_p95_s": percentile(every, 95),
        "status_current_max_s": round(max(every), 3) if every else None,
        "status_current_p95_s_by_change": {change: percentile(v, 95) for change, v in current.items()},
        "operator_peak_rss_mib": rss, "operator_cpu_s": round(cpu, 1),
        "api_requests_per_resource": round(busy / RESOURCES, 2),
        "idle_api_requests_per_minute": round(idle, 1), "load_average_at_start": round(load, 2),
    }


def profile(pid: int, out: Path) -> subprocess.Popen | None:
    """py-spy on the operator while the resources go through (VIDEOGEN_SCALE_PYSPY: its path)."""
    if not os.environ.get("VIDEOGEN_SCALE_PYSPY"):
        return None
    return subprocess.Popen([os.environ["VIDEOGEN_SCALE_PYSPY"], "record", "--pid", str(pid), "--rate", "50",
                             "--format", "speedscope", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_operator_scale(kwok, tmp_path):
    kubernetes.config.load_kube_config(str(kwok.kubeconfig))
    kwok.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "videogenerations.videogen.io.yaml"))
    kwok.kubectl("wait", "--for=condition=Established", "crd/videogenerations.videogen.io", "--timeout=30s")
    kubeconfig = setup_cluster(kwok)
    variants = {"current": ROOT}
    if os.environ.get("VIDEOGEN_BASELINE"):
        variants["baseline"] = Path(os.environ["VIDEOGEN_BASELINE"])
    runs = {}
    for variant, root in variants.items():
        runs[variant] = {}
        for shape in SHAPES:
            runs[variant][shape] = run(kwok, kubeconfig, variant, root, shape, tmp_path)
            print(f"operator_scale {variant} {shape}: {json.dumps(runs[variant][shape])}", flush=True)
            write(runs)  # after every run: a long baseline may be cut short


def write(runs: dict) -> None:
    summary = {variant: {
        "resources": RESOURCES,
        "create_to_job_p50_s": (r.get("steady") or {}).get("create_to_job_p50_s"),
        "create_to_job_p95_s": (r.get("steady") or {}).get("create_to_job_p95_s"),
        "burst_last_job_s": (r.get("burst") or {}).get("last_job_s"),
        "status_current_p95_s": max(r[s]["status_current_p95_s"] or 0 for s in r),
        "operator_peak_rss_mib": max(r[s]["operator_peak_rss_mib"] for s in r),
        "api_requests_per_resource": max(r[s]["api_requests_per_resource"] for s in r),
        "idle_api_requests_per_minute": max(r[s]["idle_api_requests_per_minute"] for s in r),
    } for variant, r in runs.items()}
    RESULT.write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "nodes": NODES, "gpus_per_node": GPUS, "steady_rate_per_s": RATE,
        "machine": f"{os.cpu_count()} cores, shared (load average at each run's start in runs)",
        **summary.get("current", {}), "baseline": summary.get("baseline"), "runs": runs}, indent=2) + "\n")
