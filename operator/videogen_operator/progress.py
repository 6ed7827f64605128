"""Live progress from the operator's Redis: the runners' state (the runner's own typed model,
`ProgressState`, under its key layout, `ProgressKeys`) and whether Redis answers.

Without Redis, or while it is down, statuses are still right (they come from the Job and the
termination message); the ProgressAvailable condition says that live progress is missing, and why.
"""

import asyncio
import logging
import time

import redis
import redis.asyncio

from videogen_operator import metrics
from videogen_operator.settings import Settings
from videogen_runner.progress import ProgressKeys, ProgressState

log = logging.getLogger(__name__)
REDIS_RETRY_S = 5.0
AVAILABLE = (True, "RedisReachable", "live progress from Redis")


class ProgressSource:
    """The operator's Redis: reads of the runners' state, and whether it answers (a condition)."""

    def __init__(self, settings: Settings):
        self.keys = ProgressKeys(settings.redis_key_prefix)
        options = {"username": settings.redis_username, "password": settings.redis_password,
                   "socket_connect_timeout": 2, "decode_responses": True}
        self.client = redis.asyncio.Redis.from_url(settings.redis_url, socket_timeout=2, **options)
        # The subscriber waits for messages without a read timeout, and pings to notice a lost server.
        self.subscriber = redis.asyncio.Redis.from_url(settings.redis_url, health_check_interval=10, **options)
        self.live: tuple[bool, str, str] = AVAILABLE
        self.skip_until = 0.0
        self.on_change = lambda: None

    def failed(self, error: Exception) -> None:
        auth = isinstance(error, redis.AuthenticationError) or any(
            word in str(error) for word in ("WRONGPASS", "NOAUTH", "invalid password"))
        live = (False, "RedisAuthFailed" if auth else "RedisUnavailable",
                f"live progress unavailable: {'Redis refused the password' if auth else 'Redis unreachable'} ({error})")
        self.skip_until = time.monotonic() + REDIS_RETRY_S
        self.changed(live)

    def answered(self) -> None:
        self.changed(AVAILABLE)

    def changed(self, live: tuple[bool, str, str]) -> None:
        if live[:2] != self.live[:2]:
            log.log(logging.INFO if live[0] else logging.WARNING, "%s", live[2])
            self.live = live
            self.on_change()

    async def state(self, task: str) -> ProgressState | None:
        if time.monotonic() < self.skip_until:
            return None
        try:
            fields = await self.client.hgetall(self.keys.hash(task))
        except redis.RedisError as e:
            self.failed(e)
            return None
        self.answered()
        state = ProgressState.from_hash(fields)
        return state if state is not None and state.task_id == task else None  # another task's copy: not its own

    async def follow(self, nudged, reconnected) -> None:
        """The runners' nudges on every namespace's channel; a nudge for a task of another namespace
        than its channel's is dropped (with ACLs, a namespace can publish only on its own). After a
        reconnect, `reconnected()`: nudges sent meanwhile are lost."""
        while True:
            try:
                async with self.subscriber.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.psubscribe(self.keys.every_namespace_channel)
                    self.answered()
                    reconnected()
                    async for message in pubsub.listen():
                        metrics.PROGRESS_UPDATES.inc()
                        if self.own(message["channel"], message["data"]):
                            nudged(message["data"])
            except redis.RedisError as e:
                self.failed(e)
                await asyncio.sleep(REDIS_RETRY_S)

    def own(self, channel: str, task: str) -> bool:
        """Whether a nudge came on the channel of the task's own namespace."""
        namespace = self.keys.namespace_of(channel)
        if namespace and task.startswith(f"{namespace}."):
            return True
        metrics.PROGRESS_FOREIGN.inc()  # counted, not logged: a tenant could flood the log
        log.debug("nudge for task %.200r on channel %.200r ignored: not that namespace's", task, channel)
        return False
