"""One shared Redis subscriber: the runners' nudges become (throttled) status refreshes.

The runner publishes a task id on `<prefix>:updates` after each change; the subscriber refreshes
that resource's status at most once per settings.progress_interval_seconds. After a reconnect it
refreshes every task it knows, since nudges sent while it was away are lost. Without Redis, or
while it is down, statuses are still right: they come from the Job and the termination message.
"""

import logging
import threading
import time

import redis

from videogen_operator import metrics
from videogen_operator.reconcile import Reconciler

log = logging.getLogger(__name__)


class ProgressSubscriber(threading.Thread):
    def __init__(self, reconciler: Reconciler):
        super().__init__(name="progress-subscriber", daemon=True)
        self.reconciler = reconciler
        self.settings = reconciler.settings
        self.stopping = threading.Event()
        self.due: dict[str, float] = {}  # task id → when its refresh may run
        self.last: dict[str, float] = {}

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        channel = f"{self.settings.redis_key_prefix}:updates"
        while not self.stopping.is_set():
            try:
                pubsub = self.reconciler.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                for task in list(self.reconciler.tasks):  # (re)connected: catch up on missed nudges
                    self.due[task] = 0.0
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message:
                        metrics.PROGRESS_UPDATES.inc()
                        task = message["data"]
                        self.due.setdefault(task, self.last.get(task, 0.0) + self.settings.progress_interval_seconds)
                    self.flush()
            except redis.RedisError as e:
                log.warning("Redis subscriber disconnected (%s); reconnecting in 5 s", e)
                self.stopping.wait(5)

    def flush(self) -> None:
        clock = time.monotonic()
        for task, due in list(self.due.items()):
            if due > clock:
                continue
            del self.due[task]
            self.last[task] = clock
            target = self.reconciler.tasks.get(task)
            if target:
                try:
                    self.reconciler.refresh(*target)
                except Exception:  # noqa: BLE001 - one bad refresh must not end the subscriber
                    log.exception("refreshing %s/%s failed", *target)
