"""A real Kubernetes control plane for the tests, so the operator meets a real API server.

Fixtures (session-scoped, started only when a test asks for them, all on 127.0.0.1):

* ``kube_apiserver``: etcd + kube-apiserver (TLS with generated certificates, an admin client
  certificate in ``system:masters``, a service-account key), written to a kubeconfig.
* ``kube_cluster``: the same plus kube-controller-manager and kube-scheduler, for tests that
  need Jobs, garbage collection, scheduling or node lifecycle.
* ``kube_namespace``: a fresh namespace per test.

The binaries come from ``hack/controlplane.sh`` (or ``$VIDEOGEN_KUBE_BIN``). With
``VIDEOGEN_TEST_KUBECONFIG=path`` the fixtures start nothing and use that cluster instead.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0
# Every process any fixture started, so that even an interrupted session leaves none behind.
_RUNNING: list[_Process] = []

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec: if the thread that started it (pytest's) dies, even by
    SIGKILL, the kernel kills the child."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Process:
    """A server in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                argv,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        _RUNNING.append(self)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.popen.returncode}; "
                f"end of {self.log}:\n{log_tail(self.log)}"
            )

    def stop(self, grace: float = 10.0) -> None:
        if self in _RUNNING:
            _RUNNING.remove(self)
        kill_group(self.popen, grace)


def kill_group(popen: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it if the leader outlives the grace period."""
    try:
        os.killpg(popen.pid, signal.SIGTERM)
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait()


@atexit.register
def _stop_all() -> None:
    for process in reversed(list(_RUNNING)):
        process.stop(grace=2.0)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"({error})"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(what: str, ready, timeout: float = START_TIMEOUT, interval: float = 0.2,
               alive: Sequence[_Process] = ()):
    """Polls ``ready()`` until it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for process in alive:
            process.check_alive()
        result = ready()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _url_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


# --- certificates -----------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    path.chmod(0o600)


def _certificate(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool = False,
                 sans: list[x509.GeneralName] = (), server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class _Pki:
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


def _write_pki(directory: Path) -> _Pki:
    """A throwaway CA, the apiserver's serving certificate, an admin client certificate and the
    service-account signing key (EC keys: generated in milliseconds)."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key, server_key, admin_key, sa_key = _key(), _key(), _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "videogen-test-ca")])
    ca = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    server = _certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), server_key,
        ca_name, ca_key, server=True,
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
              x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
              x509.DNSName("localhost"), x509.DNSName("kubernetes.default.svc")],
    )
    admin = _certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "videogen-admin"),
                   x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters")]),
        admin_key, ca_name, ca_key,
    )
    pki = _Pki(*(directory / name for name in (
        "ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "admin.crt", "admin.key",
        "sa.key", "sa.pub")))
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.server_cert.write_bytes(server.public_bytes(pem))
    pki.admin_cert.write_bytes(admin.public_bytes(pem))
    for path, key in ((pki.ca_key, ca_key), (pki.server_key, server_key),
                      (pki.admin_key, admin_key), (pki.sa_key, sa_key)):
        _write_key(path, key)
    pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(
        pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki


def _write_kubeconfig(path: Path, server: str, pki: _Pki) -> None:
    data = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "videogen-test", "cluster": {
            "server": server, "certificate-authority-data": data(pki.ca)}}],
        "users": [{"name": "admin", "user": {
            "client-certificate-data": data(pki.admin_cert),
            "client-key-data": data(pki.admin_key)}}],
        "contexts": [{"name": "videogen-test",
                      "context": {"cluster": "videogen-test", "user": "admin"}}],
        "current-context": "videogen-test",
    }))
    path.chmod(0o600)


# --- the cluster handle -----------------------------------------------------------------------


class KubeError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:2000]}")
        self.status = status


class KubeAPI:
    """Plain-JSON requests (dicts in, dicts out) through the official client's kubeconfig
    handling, so tests read fields by their API names and any auth kind works."""

    def __init__(self, kubeconfig: Path) -> None:
        import kubernetes

        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(str(kubeconfig), client_configuration=configuration)
        self.client = kubernetes.client.ApiClient(configuration)

    def open(self, method: str, path: str, body=None, query: dict | None = None,
             content_type: str = "application/json", timeout: float = 30.0):
        """Sends a request; returns the urllib3 response unread (for watches)."""
        url_method, url, headers, data, post = self.client.param_serialize(
            method=method, resource_path=path,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body, auth_settings=["BearerToken"],
        )
        response = self.client.call_api(url_method, url, headers, data, post,
                                        _request_timeout=timeout)
        if not 200 <= response.status < 300:
            raise KubeError(response.status, method, path, response.read().decode(errors="replace"))
        return response.response

    def request(self, method: str, path: str, body=None, query: dict | None = None,
                content_type: str = "application/json", timeout: float = 30.0) -> dict:
        response = self.open(method, path, body, query, content_type, timeout)
        return json.loads(response.data or b"{}")

    def get(self, path: str, **query) -> dict:
        return self.request("GET", path, query=query)

    def create(self, path: str, body: dict) -> dict:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: dict) -> dict:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, **query) -> dict:
        return self.request("DELETE", path, query=query)

    def watch(self, path: str, timeout_seconds: int, **query) -> Watch:
        """A watch that the server ends after ``timeout_seconds``."""
        return Watch(self.open("GET", path, query={**query, "watch": "true",
                                                    "timeoutSeconds": timeout_seconds},
                               timeout=timeout_seconds + 10), path)


class Watch:
    """The events of one watch request; ``close()`` from another thread ends it at once."""

    def __init__(self, response, path: str) -> None:
        self.response, self.path = response, path

    def __iter__(self) -> Iterator[dict]:
        from kubernetes.watch.watch import iter_resp_lines

        try:
            for line in iter_resp_lines(self.response):
                event = json.loads(line)
                if event["type"] == "ERROR":
                    status = event["object"]
                    raise KubeError(status.get("code", 500), "WATCH", self.path,
                                    status.get("message", ""))
                yield event
        finally:
            self.response.release_conn()

    def close(self) -> None:
        with contextlib.suppress(ValueError, RuntimeError, OSError):  # already finished
            self.response.shutdown()


@dataclass(frozen=True)
class Cluster:
    """What a test needs to talk to the cluster."""

    kubeconfig: Path
    server: str
    kubectl_path: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Runs kubectl against this cluster; on failure the error shows its stderr."""
        result = subprocess.run(
            [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def api(self) -> KubeAPI:
        return KubeAPI(self.kubeconfig)


def _existing_cluster() -> Cluster | None:
    path = os.environ.get("VIDEOGEN_TEST_KUBECONFIG")
    if not path:
        return None
    config = yaml.safe_load(Path(path).read_text())
    context = next(c["context"] for c in config["contexts"]
                   if c["name"] == config["current-context"])
    server = next(c["cluster"]["server"] for c in config["clusters"]
                  if c["name"] == context["cluster"])
    binaries = os.environ.get("VIDEOGEN_KUBE_BIN")
    kubectl = str(Path(binaries) / "kubectl") if binaries else shutil.which("kubectl")
    return Cluster(Path(path), server, kubectl or "kubectl")


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kube_bin() -> Path:
    """The directory holding etcd, kube-*, kubectl, kwok, helm and kubeconform, or a test
    failure that says how to get it."""
    if os.environ.get("VIDEOGEN_KUBE_BIN"):
        return Path(os.environ["VIDEOGEN_KUBE_BIN"])
    found = subprocess.run(
        ["bash", str(ROOT / "hack/controlplane.sh"), "path"], capture_output=True, text=True
    )
    if found.returncode != 0:
        pytest.fail(
            "the Kubernetes control-plane binaries are not built: run `bash hack/controlplane.sh "
            "build` (minutes; about 11 on 2 cores the first time), or set VIDEOGEN_KUBE_BIN or "
            f"VIDEOGEN_TEST_KUBECONFIG.\n{found.stderr}",
            pytrace=False,
        )
    return Path(found.stdout.strip())


@pytest.fixture(scope="session")
def kube_apiserver(request, tmp_path_factory) -> Iterator[Cluster]:
    """etcd + kube-apiserver, ready (``/readyz``) when the fixture returns."""
    existing = _existing_cluster()
    if existing:
        yield existing
        return
    binaries = request.getfixturevalue("kube_bin")
    work = tmp_path_factory.mktemp("controlplane")
    pki = _write_pki(work / "pki")
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd = _Process("etcd", [
        str(binaries / "etcd"),
        "--name=default",
        f"--data-dir={work / 'etcd'}",
        f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
        f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
        f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
        f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
        "--unsafe-no-fsync",  # a test cluster needs no durability; fsync dominates latency
        "--log-level=warn",
    ], work / "etcd.log")
    processes = [etcd]
    try:
        wait_until("etcd", lambda: _url_ok(f"http://127.0.0.1:{etcd_port}/health"),
                   alive=processes)
        server = f"https://127.0.0.1:{api_port}"
        apiserver = _Process("kube-apiserver", [
            str(binaries / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # Nothing runs in-cluster, so nothing needs the `kubernetes` Service's endpoints
            # (which may not be loopback addresses).
            "--endpoint-reconciler-type=none",
            f"--secure-port={api_port}",
            f"--cert-dir={work / 'apiserver-certs'}",
            f"--tls-cert-file={pki.server_cert}",
            f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
        ], work / "kube-apiserver.log")
        processes.append(apiserver)
        kubeconfig = work / "kubeconfig"
        _write_kubeconfig(kubeconfig, server, pki)
        admin = ssl.create_default_context(cafile=str(pki.ca))
        admin.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        wait_until("kube-apiserver /readyz", lambda: _url_ok(f"{server}/readyz", admin),
                   alive=processes)
        yield Cluster(kubeconfig, server, str(binaries / "kubectl"))
    finally:
        for process in reversed(processes):
            process.stop()


@pytest.fixture(scope="session")
def kube_cluster(request, kube_apiserver: Cluster, tmp_path_factory) -> Iterator[Cluster]:
    """``kube_apiserver`` plus kube-controller-manager (Jobs, GC, namespaces, node lifecycle)
    and kube-scheduler, both healthy when the fixture returns."""
    if _existing_cluster():
        yield kube_apiserver
        return
    binaries = request.getfixturevalue("kube_bin")
    work = kube_apiserver.kubeconfig.parent
    pki = work / "pki"
    kubeconfig = str(kube_apiserver.kubeconfig)
    common = [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
        "--profiling=false",
    ]
    manager_port, scheduler_port = free_port(), free_port()
    processes = []
    try:
        processes.append(_Process("kube-controller-manager", [
            str(binaries / "kube-controller-manager"), *common,
            f"--secure-port={manager_port}",
            f"--cert-dir={work / 'controller-manager-certs'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
        ], work / "kube-controller-manager.log"))
        processes.append(_Process("kube-scheduler", [
            str(binaries / "kube-scheduler"), *common,
            f"--secure-port={scheduler_port}",
            f"--cert-dir={work / 'scheduler-certs'}",
        ], work / "kube-scheduler.log"))
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # their self-signed serving certificates
        for name, port in (("kube-controller-manager", manager_port),
                           ("kube-scheduler", scheduler_port)):
            url = f"https://127.0.0.1:{port}/healthz"
            wait_until(f"{name} /healthz", lambda url=url: _url_ok(url, insecure),
                       alive=processes)
        yield kube_apiserver
    finally:
        for process in reversed(processes):
            process.stop()


@pytest.fixture
def kube_namespace(kube_apiserver: Cluster) -> Iterator[str]:
    """A fresh namespace with its ``default`` ServiceAccount (created here rather than awaited
    from the controller-manager, so pods can be created at once)."""
    api = kube_apiserver.api()
    name = f"test-{uuid.uuid4().hex[:8]}"
    api.create("/api/v1/namespaces", {"metadata": {"name": name}})
    try:
        api.create(f"/api/v1/namespaces/{name}/serviceaccounts", {"metadata": {"name": "default"}})
    except KubeError as error:
        if error.status != 409:
            raise
    yield name
    api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="session")
def pod_executor(kube_cluster: Cluster, tmp_path_factory):
    """A fake GPU node (2 ``nvidia.com/gpu``) whose pods run as local processes; see
    tests/support/pod_executor.py. Tests may set ``pod_executor.extra_env``."""
    from tests.support.pod_executor import PodExecutor

    with PodExecutor(kube_cluster.api(), tmp_path_factory.mktemp("pods")) as executor:
        yield executor


KWOK_ANNOTATION = "kwok.x-k8s.io/node"


@pytest.fixture(scope="session")
def kwok(kube_cluster: Cluster, kube_bin: Path, tmp_path_factory) -> Iterator[Cluster]:
    """A kwok controller: nodes annotated ``kwok.x-k8s.io/node: fake`` become Ready and pods
    bound to them Running without running anything (upstream's "fast" stages), for scale tests.
    Give such nodes a taint so that other tests' pods stay off them."""
    work = tmp_path_factory.mktemp("kwok")
    port = free_port()
    process = _Process("kwok", [
        str(kube_bin / "kwok"),
        f"--kubeconfig={kube_cluster.kubeconfig}",
        f"--config={kube_bin / 'kwok-stages.yaml'}",
        f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
        f"--server-address=127.0.0.1:{port}",
        "--node-ip=127.0.0.1",
    ], work / "kwok.log")
    try:
        wait_until("kwok /healthz", lambda: _url_ok(f"http://127.0.0.1:{port}/healthz"),
                   alive=[process])
        yield kube_cluster
    finally:
        process.stop()
