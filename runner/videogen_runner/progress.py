"""Progress reporting to Redis, best effort: a Redis outage never fails a generation.

Key layout (stable for outside consumers; see docs/runner.md), with prefix "videogen":
- ``videogen:task:<task_id>``         hash: the latest state (stage, step, percent, eta, result…)
- ``videogen:task:<task_id>:events``  stream, capped: every update, for history
- ``videogen:updates``                pub/sub channel: the task id, a nudge to re-read the hash
"""

import logging
import os
import time

import redis

from videogen_runner.request import Reporting
from videogen_runner.result import RunResult

log = logging.getLogger(__name__)

STAGES = ("loading", "encoding", "denoising", "decoding", "exporting", "uploading", "succeeded", "failed")
# Overall percent at the start of each stage; denoising spans 5 → 95.
STAGE_PERCENT = {"loading": 0, "encoding": 3, "denoising": 5, "decoding": 95, "exporting": 97, "uploading": 98}
STREAM_MAXLEN = 1000
RETRY_AFTER_S = 15.0  # after a failure, skip Redis for a while rather than stall every step


class ProgressReporter:
    def __init__(self, task_id: str, reporting: Reporting, clock=time.monotonic):
        self.task_id = task_id
        self.reporting = reporting
        self.clock = clock
        self.hash_key = f"{reporting.key_prefix}:task:{task_id}"
        self.stream_key = f"{self.hash_key}:events"
        self.channel = f"{reporting.key_prefix}:updates"
        self._redis = None
        if reporting.redis_url:
            self._redis = redis.Redis.from_url(
                reporting.redis_url,
                password=os.environ.get("REDIS_PASSWORD") or None,
                socket_timeout=2,
                socket_connect_timeout=2,
                decode_responses=True,
            )
        self._skip_until = 0.0
        self._denoise_started = None
        self._fresh = True  # the first write of a run clears what an earlier attempt left

    def stage(self, stage: str) -> None:
        if stage == "denoising":
            self._denoise_started = self.clock()
        self._send({"stage": stage, "status": "running", "percent": STAGE_PERCENT[stage]})

    def step(self, step: int, total: int) -> None:
        """After denoising step `step` (1-based) of `total`: percent and the remaining denoising time."""
        elapsed = self.clock() - (self._denoise_started or self.clock())
        eta = elapsed / step * (total - step) if step else None
        percent = STAGE_PERCENT["denoising"] + 90 * step / total
        self._send({"stage": "denoising", "status": "running", "step": step, "total_steps": total,
                    "percent": round(percent, 1), "eta_seconds": round(eta, 1) if eta is not None else ""})

    def finish(self, result: RunResult) -> None:
        self._skip_until = 0.0  # the outcome is worth one more try
        fields = {"stage": result.status, "status": result.status, "exit_code": result.exit_code,
                  "result": result.model_dump_json(exclude_none=True), "eta_seconds": 0}
        if result.status == "succeeded":
            fields["percent"] = 100
            fields["output_uri"] = (result.output.uri if result.output else None) or ""
        else:
            fields["error_reason"] = result.reason or ""
            fields["error_message"] = (result.message or "")[:2000]
        self._send(fields)

    def _send(self, fields: dict) -> None:
        if self._redis is None or self.clock() < self._skip_until:
            return
        fields = {"task_id": self.task_id, "updated_at": round(time.time(), 3), **fields}
        try:
            pipe = self._redis.pipeline(transaction=False)
            if self._fresh:
                pipe.delete(self.hash_key)
            pipe.hset(self.hash_key, mapping=fields)
            pipe.expire(self.hash_key, self.reporting.ttl_seconds)
            pipe.xadd(self.stream_key, fields, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.expire(self.stream_key, self.reporting.ttl_seconds)
            pipe.publish(self.channel, self.task_id)
            pipe.execute()
            self._fresh = False
        except redis.RedisError as e:
            self._skip_until = self.clock() + RETRY_AFTER_S
            log.warning("progress not reported to Redis (%s); retrying in %.0fs", e, RETRY_AFTER_S)

