"""Progress reporting to Redis, best effort: a Redis outage never fails a generation.

The contract with the operator and with outside consumers is the code below: `ProgressKeys`
(the key layout, and the Redis ACL that fences each namespace to its own) and `ProgressState`
(the hash's fields), both used by the operator too.
Key layout (stable for outside consumers; see docs/runner.md), with prefix "videogen":
- ``videogen:task:<task_id>``          hash: the latest state (stage, step, percent, eta, result…)
- ``videogen:task:<task_id>:events``   stream, capped: every update, for history
- ``videogen:updates:<namespace>``     pub/sub channel: the task id, a nudge to re-read the hash
  (``videogen:updates`` for a task run outside Kubernetes, with no namespace)
Tasks the operator runs are named ``<namespace>.<name>``, so that one key pattern and one channel
hold all of a namespace's tasks and nothing of another's (`tenant_acl`).
Live progress only: Redis never decides an outcome.
"""

import logging
import os
import time
from dataclasses import dataclass
from typing import Literal

import redis
from pydantic import BaseModel, Field, ValidationError

from videogen_runner.request import Reporting
from videogen_runner.result import RunResult

log = logging.getLogger(__name__)

Stage = Literal["loading", "encoding", "denoising", "decoding", "exporting", "uploading", "succeeded", "failed"]
# Overall percent at the start of each stage; denoising spans 5 → 95.
STAGE_PERCENT = {"loading": 0, "encoding": 3, "denoising": 5, "decoding": 95, "exporting": 97, "uploading": 98}
STREAM_MAXLEN = 1000
RETRY_AFTER_S = 15.0  # after a failure, skip Redis for a while rather than stall every step


@dataclass(frozen=True)
class ProgressKeys:
    """Where one key prefix keeps its tasks' progress."""

    prefix: str = "videogen"

    def channel(self, namespace: str = "") -> str:
        return f"{self.prefix}:updates:{namespace}" if namespace else f"{self.prefix}:updates"

    @property
    def every_namespace_channel(self) -> str:
        """The pattern the operator subscribes to."""
        return self.channel("*")

    def namespace_of(self, channel: str) -> str | None:
        """The namespace whose channel this is (None: not a namespace's)."""
        head = self.channel("")
        return channel.removeprefix(head + ":") if channel.startswith(head + ":") else None

    def hash(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    def stream(self, task_id: str) -> str:
        return f"{self.hash(task_id)}:events"

    def tenant_acl(self, namespace: str) -> str:
        """Redis ACL rules (Redis 7) for the runners of one namespace: write its own tasks' keys and
        publish on its own channel, with only the commands the reporter sends; no reading, listing
        (KEYS, SCAN), flushing or configuring."""
        return (f"resetkeys ~{self.hash(namespace)}.* resetchannels &{self.channel(namespace)} "
                "-@all +multi +exec +discard +del +hset +expire +xadd +publish +ping")

    def operator_acl(self) -> str:
        """Redis ACL rules for the operator: read every task's hash, follow every namespace's channel."""
        return (f"resetkeys %R~{self.hash('*')} resetchannels &{self.every_namespace_channel} "
                "-@all +hgetall +psubscribe +punsubscribe +ping")


class ProgressState(BaseModel):
    """One task's latest state: the hash's fields (strings in Redis; absent when unset)."""

    task_id: str
    updated_at: float  # Unix seconds
    stage: Stage = Field(description="loading, encoding, denoising, decoding, exporting, uploading, succeeded or "
                         "failed.")
    status: Literal["running", "succeeded", "failed"] = "running"
    percent: float | None = Field(default=None, description="Done, 0 to 100.")
    step: int | None = Field(default=None, description="Denoising steps done.")
    total_steps: int | None = Field(default=None, description="Denoising steps in all.")
    eta_seconds: float | None = Field(default=None, description="Estimated seconds of denoising left.")
    message: str | None = Field(default=None, description="What the stage waits on (an upload being retried).")
    exit_code: int | None = None
    result: str | None = None  # the RunResult's JSON, at the end
    output_uri: str | None = None
    error_reason: str | None = None
    error_message: str | None = None

    def to_hash(self) -> dict[str, str]:
        return {name: _text(value) for name, value in self.model_dump(exclude_none=True).items()}

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> "ProgressState | None":
        """The state from a hash as Redis returns it; None when empty or not of this shape."""
        try:
            return cls.model_validate({k: v for k, v in fields.items() if v != ""}) if fields else None
        except ValidationError:
            return None

    def run_result(self) -> RunResult | None:
        """The runner's result, once it has finished."""
        try:
            return RunResult.model_validate_json(self.result) if self.result else None
        except ValidationError:
            return None


def _text(value) -> str:
    """Numbers as Redis consumers expect them: 100, not 100.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class ProgressReporter:
    def __init__(self, task_id: str, reporting: Reporting, clock=time.monotonic):
        self.task_id = task_id
        self.reporting = reporting
        self.clock = clock
        self.keys = ProgressKeys(reporting.key_prefix)
        self._redis = None
        if reporting.redis_url:
            self._redis = redis.Redis.from_url(
                reporting.redis_url,
                username=os.environ.get("REDIS_USERNAME") or None,  # an ACL user (the namespace's), or the default
                password=os.environ.get("REDIS_PASSWORD") or None,
                socket_timeout=2,
                socket_connect_timeout=2,
                decode_responses=True,
            )
        self._skip_until = 0.0
        self._denoise_started = None
        self._step: dict = {}  # the latest denoising step, kept through the later stages

    def stage(self, stage: Stage) -> None:
        log.info("stage: %s", stage)  # the pod's log shows progress too, Redis or not
        if stage == "denoising":
            self._denoise_started = self.clock()
        self._send(stage=stage, percent=STAGE_PERCENT[stage], **self._step)

    def step(self, step: int, total: int) -> None:
        """After denoising step `step` (1-based) of `total`: percent and the remaining denoising time."""
        elapsed = self.clock() - (self._denoise_started or self.clock())
        eta = elapsed / step * (total - step) if step else None
        percent = STAGE_PERCENT["denoising"] + 90 * step / total
        self._step = {"step": step, "total_steps": total}
        log.info("step %d/%d", step, total)
        self._send(stage="denoising", percent=round(percent, 1), eta_seconds=round(eta, 1) if eta is not None else None,
                   **self._step)

    def retrying_upload(self, attempt: int, delay: float, error: Exception) -> None:
        """Still uploading: the last try failed, the next comes after `delay` seconds."""
        self._send(stage="uploading", percent=STAGE_PERCENT["uploading"],
                   message=f"upload attempt {attempt} failed ({type(error).__name__}); retrying in {delay:.0f} s",
                   **self._step)

    def finish(self, result: RunResult) -> None:
        self._skip_until = 0.0  # the outcome is worth one more try
        fields = {"stage": result.status, "status": result.status, "exit_code": result.exit_code,
                  "result": result.model_dump_json(exclude_none=True), "eta_seconds": 0, **self._step}
        if result.status == "succeeded":
            fields.update(percent=100, output_uri=result.output.uri if result.output else None)
        else:
            fields.update(error_reason=result.reason, error_message=(result.message or "")[:2000])
        self._send(**fields)

    def _send(self, **fields) -> None:
        """Replaces the hash with the whole state (nothing of an earlier attempt survives)."""
        if self._redis is None or self.clock() < self._skip_until:
            return
        state = ProgressState(task_id=self.task_id, updated_at=round(time.time(), 3), **fields).to_hash()
        key, stream = self.keys.hash(self.task_id), self.keys.stream(self.task_id)
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping=state)
            pipe.expire(key, self.reporting.ttl_seconds)
            pipe.xadd(stream, state, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.expire(stream, self.reporting.ttl_seconds)
            pipe.publish(self.keys.channel(self.reporting.namespace), self.task_id)
            pipe.execute()
        except redis.RedisError as e:
            self._skip_until = self.clock() + RETRY_AFTER_S
            log.warning("progress not reported to Redis (%s); retrying in %.0fs", e, RETRY_AFTER_S)
