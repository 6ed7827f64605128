"""Real services for the tests: redis-server, an S3 protocol server (moto) and tiny models.

Each server is a real process on 127.0.0.1 with a free port, started and stopped within a
deadline, so a test can take it down to check what an outage does.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
import redis

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    """Polls `check` until it returns truthy, failing with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout}s")


class Server:
    """A child process listening on a port of 127.0.0.1."""

    def __init__(self, name: str, command: list[str], port: int, ready, log: Path, env: dict | None = None):
        self.name, self.command, self.port, self.ready, self.log, self.env = name, command, port, ready, log, env
        self.process = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        wait_until(self.ready, 60, self.name)

    @contextlib.contextmanager
    def stopped(self):
        """The server down for the block (an outage), up again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def redis_process(folder: Path, *options: str, password: str | None = None) -> Server:
    """A redis-server on a free loopback port, not yet started; `options` as on its command line
    (--requirepass, --aclfile), `password` that of the `default` user, for the readiness ping."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run hack/test.sh, which installs it")
    port = free_port()
    server = Server("redis-server", [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                     "--appendonly", "no", "--dir", str(folder), *options],
                    port, lambda: redis.Redis(port=port, password=password, socket_timeout=1).ping(), folder / "log")
    server.url = f"redis://127.0.0.1:{port}/0"
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = redis_process(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    if redis_server.process is None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    return client


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's standalone server: the S3 REST protocol over HTTP, in its own process."""
    port = free_port()
    folder = tmp_path_factory.mktemp("s3")
    endpoint = f"http://127.0.0.1:{port}"
    server = Server("moto_server", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port,
                    lambda: s3_client(endpoint).list_buckets(), folder / "log")
    server.endpoint = endpoint
    server.start()
    yield server
    server.stop()


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def s3(s3_server):
    """A client and a fresh bucket on the running S3 server."""
    if s3_server.process is None:
        s3_server.start()
    client = s3_client(s3_server.endpoint)
    bucket = f"videos-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket
    return client


class Outage:
    """A TCP path to a real server on loopback that a test can cut and restore: while cut,
    connections are refused and open ones are dropped; the server itself keeps its state."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.connections: list[socket.socket] = []
        self.listener = None
        self.up()

    def up(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accepting thread: close() alone would not
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        self.connections.clear()

    @contextlib.contextmanager
    def cut(self):
        self.down()
        try:
            yield
        finally:
            self.up()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the path was cut
                return
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            server.settimeout(None)
            self.connections += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny random-weight model of each Wan2.2 family, written once per session."""
    from videogen_runner import tiny

    root = tmp_path_factory.mktemp("models")
    return {family: tiny.write(root / family, family) for family in ("ti2v-5b", "t2v-a14b", "i2v-a14b")}
