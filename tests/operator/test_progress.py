"""The operator's Redis on a real redis-server: the runner's typed state read back, and the
ProgressAvailable condition's source (a wrong password, an outage) set and cleared."""

import asyncio

import pytest

from tests.support.services import redis_process
from videogen_operator.progress import ProgressSource
from videogen_operator.settings import Settings
from videogen_runner.progress import ProgressReporter
from videogen_runner.request import Reporting


@pytest.fixture
def guarded_redis(tmp_path):
    """A redis-server that wants a password."""
    server = redis_process(tmp_path, "--requirepass", "s3cret", password="s3cret")
    server.start()
    yield server
    server.stop()


def source(url: str, password: str) -> ProgressSource:
    return ProgressSource(Settings(redis_url=url, redis_password=password))


def test_the_runners_state_is_read_back_through_one_model(guarded_redis, monkeypatch):
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
    reporter = ProgressReporter("ns.x", Reporting(redis_url=guarded_redis.url))
    reporter.stage("denoising")
    reporter.step(3, 4)
    state = asyncio.run(source(guarded_redis.url, "s3cret").state("ns.x"))
    assert (state.stage, state.step, state.total_steps, state.percent) == ("denoising", 3, 4, 72.5)
    reporter.stage("decoding")  # the whole state replaced: no stale ETA from the denoising steps
    state = asyncio.run(source(guarded_redis.url, "s3cret").state("ns.x"))
    assert (state.stage, state.step, state.eta_seconds) == ("decoding", 3, None)


def test_a_wrong_password_and_an_outage_say_why_live_progress_is_missing(guarded_redis):
    async def check():
        changes = []
        wrong = source(guarded_redis.url, "guess")
        wrong.on_change = lambda: changes.append(wrong.live[:2])
        assert await wrong.state("ns.x") is None
        assert wrong.live[:2] == (False, "RedisAuthFailed") and "password" in wrong.live[2]

        right = source(guarded_redis.url, "s3cret")
        right.on_change = lambda: changes.append(right.live[:2])
        assert await right.state("ns.x") is None and right.live[0]  # nothing there yet, but Redis answers
        guarded_redis.stop()
        right.skip_until = 0.0
        await right.state("ns.x")
        assert right.live[:2] == (False, "RedisUnavailable")
        guarded_redis.start()
        right.skip_until = 0.0
        await right.state("ns.x")
        assert right.live[0]
        assert changes == [(False, "RedisAuthFailed"), (False, "RedisUnavailable"), (True, "RedisReachable")]

    asyncio.run(check())
