"""The chart's Redis ACL on a real redis-server: a namespace's runners reach their own progress and
nothing of another namespace's; the operator reads all and ignores a nudge from the wrong channel."""

import asyncio
import hashlib

import pytest
import redis

from tests.helm.test_chart import render
from tests.support.services import redis_process
from videogen_operator.progress import ProgressSource
from videogen_operator.settings import Settings
from videogen_runner.progress import ProgressKeys, ProgressReporter
from videogen_runner.request import Reporting

PASSWORDS = {"team-a": "a-secret", "team-b": "b-secret", "operator": "o-secret", "default": "admin-secret"}


def sha(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def chart_acl(kube_bin, tenants: dict[str, str] | None = None) -> str:
    """The chart's users.acl for `tenants` (namespace → password hash; default team-a and team-b)."""
    tenants = tenants or {namespace: sha(PASSWORDS[namespace]) for namespace in ("team-a", "team-b")}
    sets = [f"redis.acl.tenants[{i}].{field}={value}" for i, (namespace, hashed) in enumerate(tenants.items())
            for field, value in (("namespace", namespace), ("passwordSHA256", hashed))]
    documents = render(kube_bin, "redis.acl.enabled=true",
                       f"redis.acl.operator.passwordSHA256={sha(PASSWORDS['operator'])}", *sets)
    (secret,) = [d for d in documents if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-redis-acl")]
    return secret["stringData"]["users.acl"]


@pytest.fixture
def fenced_redis(kube_bin, tmp_path):
    """A redis-server that loads the chart's ACL file (its rules are ProgressKeys', compared here),
    plus an admin `default` user as the platform adds."""
    acl = chart_acl(kube_bin)
    keys = ProgressKeys()
    assert acl.splitlines() == [
        f"user videogen-operator on #{sha(PASSWORDS['operator'])} {keys.operator_acl()}",
        *(f"user videogen-{ns} on #{sha(PASSWORDS[ns])} {keys.tenant_acl(ns)}" for ns in ("team-a", "team-b"))]
    (tmp_path / "users.acl").write_text(acl + f"user default on #{sha(PASSWORDS['default'])} ~* &* +@all\n")
    server = redis_process(tmp_path, "--aclfile", str(tmp_path / "users.acl"), password=PASSWORDS["default"])
    server.start()
    yield server
    server.stop()


def as_user(server, user: str) -> redis.Redis:
    name = "videogen-operator" if user == "operator" else f"videogen-{user}"
    return redis.Redis.from_url(server.url, username=name, password=PASSWORDS[user], decode_responses=True,
                                socket_timeout=2)


def report(server, monkeypatch, namespace: str, task: str):
    monkeypatch.setenv("REDIS_USERNAME", f"videogen-{namespace}")
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORDS[namespace])
    reporter = ProgressReporter(task, Reporting(redis_url=server.url, namespace=namespace))
    reporter.stage("denoising")
    reporter.step(3, 40)
    return reporter


def operator_source(server) -> ProgressSource:
    return ProgressSource(Settings(redis_url=server.url, redis_username="videogen-operator",
                                   redis_password=PASSWORDS["operator"]))


def test_a_namespace_cannot_read_list_write_or_delete_anothers_progress(fenced_redis, monkeypatch):
    report(fenced_redis, monkeypatch, "team-a", "team-a.fox")  # the real reporter, as team-a's user
    a_key = "videogen:task:team-a.fox"
    b = as_user(fenced_redis, "team-b")
    attempts = {
        "read": lambda: b.hgetall(a_key), "read the history": lambda: b.xrange(a_key + ":events"),
        "list": lambda: b.keys("videogen:*"), "scan": lambda: b.scan(0, match="*"),
        "write": lambda: b.hset(a_key, "message", "FORGED-BY-B"), "delete": lambda: b.delete(a_key),
        "expire": lambda: b.expire(a_key, 1), "nudge on a's channel": lambda: b.publish("videogen:updates:team-a", "x"),
        "flush": lambda: b.flushall(), "configure": lambda: b.config_set("requirepass", ""),
        "change users": lambda: b.acl_setuser("videogen-team-b", enabled=True, commands=["+@all"]),
        "read its own": lambda: b.hgetall("videogen:task:team-b.fox"),  # write only, even its own
    }
    for what, attempt in attempts.items():
        try:
            attempt()
        except redis.exceptions.NoPermissionError:
            continue
        pytest.fail(f"team-b could {what}")
    # b's own runner reports as usual, and the operator reads both, unchanged by b.
    report(fenced_redis, monkeypatch, "team-b", "team-b.fox")
    async def states():
        source = operator_source(fenced_redis)
        return [await source.state(task) for task in ("team-a.fox", "team-b.fox")]

    a_state, b_state = asyncio.run(states())
    assert (a_state.task_id, a_state.step, a_state.message) == ("team-a.fox", 3, None)
    assert b_state.task_id == "team-b.fox"
    # The operator only reads.
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user(fenced_redis, "operator").hset(a_key, "step", "1")


def test_a_runner_reporting_another_namespaces_task_reaches_nothing(fenced_redis, monkeypatch):
    """b's runner given a's task id (with its own namespace the request refuses it: task_id)."""
    report(fenced_redis, monkeypatch, "team-b", "team-a.fox")
    admin = redis.Redis.from_url(fenced_redis.url, password=PASSWORDS["default"], decode_responses=True)
    assert admin.keys("videogen:*") == []


def test_the_operator_follows_every_namespace_and_ignores_a_nudge_from_the_wrong_channel(fenced_redis, monkeypatch):
    async def follow():
        source, nudges = operator_source(fenced_redis), []
        task = asyncio.create_task(source.follow(nudges.append, lambda: None))
        try:
            await asyncio.sleep(0.5)  # subscribed
            b = as_user(fenced_redis, "team-b")
            b.publish("videogen:updates:team-b", "team-a.fox")  # b names a's task on its own channel
            b.publish("videogen:updates:team-b", "team-b.fox")
            report(fenced_redis, monkeypatch, "team-a", "team-a.fox")  # a's runner: two nudges
            for _ in range(50):
                if len(nudges) >= 3:
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
        return nudges

    assert asyncio.run(follow()) == ["team-b.fox", "team-a.fox", "team-a.fox"]


def test_without_acls_the_operator_still_reads_only_the_tasks_own_state(redis_client, redis_server):
    """With one shared password, progress can be forged (docs/security.md); a copy of another task's
    state under this task's key is still not shown as this task's."""
    state = {"task_id": "team-b.fox", "updated_at": "1", "stage": "denoising", "step": "39"}
    redis_client.hset("videogen:task:team-a.fox", mapping=state)
    source = ProgressSource(Settings(redis_url=redis_server.url))
    assert asyncio.run(source.state("team-a.fox")) is None
