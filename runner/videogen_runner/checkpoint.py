"""Checkpoints: no GPU work thrown away when a pod is stopped or its upload fails.

While denoising, the state after the latest step (latents, the solver's history, the step, the
seed, the expert in use) is saved every `checkpoints.every_seconds`, in the background, and once
more when the run is stopped (SIGTERM). A later attempt of the same task resumes from it and ends
with the same video as an uninterrupted run on the same device: the solvers draw no noise after
the first latents, so the seed and this state are all there is (sampling.Resumable). A finished
MP4 whose upload failed is kept too, so that the next attempt only uploads.

Where: the task's folder in S3 (under the request's prefix, the tenant's), or a local folder on a
volume that outlives the pod. A checkpoint is only data (safetensors and JSON, never a pickle),
bound to the request by a fingerprint; one that cannot be read or belongs to another request is
ignored with a warning, never trusted. All of it is best effort: a failing store never fails a
generation, it only loses the chance to resume.
"""

import hashlib
import json
import logging
import os
import struct
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from botocore.exceptions import BotoCoreError, ClientError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from videogen_runner.request import GenerationRequest
from videogen_runner.result import VideoOutput

log = logging.getLogger(__name__)
FORMAT = "videogen-checkpoint/1"
STATE, VIDEO, VIDEO_META = "state.safetensors", "video.mp4", "video.json"


class InvalidCheckpoint(Exception):
    """A checkpoint that must not be trusted: unreadable, or of another request."""


@dataclass
class Checkpoint:
    steps_done: int
    seed: int
    latents: torch.Tensor
    solver: dict  # sampling.Resumable.state()
    expert: str  # the transformer of the last step: "high_noise", "low_noise" or "transformer"


def fingerprint(request: GenerationRequest) -> str:
    """What decides the frames: the request less where they go, how they are reported, and the
    seed (a checkpoint brings the seed of the run that saved it)."""
    decisive = request.model_dump(mode="json", exclude={"seed", "output", "reporting", "checkpoints"})
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()


# --- the format: safetensors for tensors, its metadata for the rest ------------------------------

def encode(checkpoint: Checkpoint, print_: str) -> bytes:
    tensors = {"latents": checkpoint.latents.detach().cpu().contiguous()}
    layout = {}
    for name, value in checkpoint.solver.items():
        items = value if isinstance(value, list) else [value]
        described = []
        for i, item in enumerate(items):
            if isinstance(item, torch.Tensor):
                tensors[f"solver.{name}.{i}"] = item.detach().cpu().contiguous()
                described.append("tensor")
            else:
                described.append(item)  # None, or a number
        layout[name] = {"list": isinstance(value, list), "items": described}
    metadata = {"format": FORMAT, "fingerprint": print_, "steps_done": str(checkpoint.steps_done),
                "seed": str(checkpoint.seed), "expert": checkpoint.expert, "solver": json.dumps(layout)}
    return save_tensors(tensors, metadata=metadata)


def header(data: bytes, print_: str) -> dict:
    """The metadata of a checkpoint of this request, or InvalidCheckpoint."""
    try:
        (length,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8:8 + length])["__metadata__"]
    except Exception as e:  # any malformed input: truncated, not safetensors, a forged header
        raise InvalidCheckpoint(f"unreadable: {type(e).__name__}: {e}") from None
    if metadata.get("format") != FORMAT:
        raise InvalidCheckpoint(f"not a {FORMAT} file")
    if metadata.get("fingerprint") != print_:
        raise InvalidCheckpoint("saved for another request")
    return metadata


def decode(data: bytes, print_: str, device: torch.device) -> Checkpoint:
    """The checkpoint in `data`, or InvalidCheckpoint: it is checked before anything is used."""
    metadata = header(data, print_)
    try:
        # Copied out of `data` into tensors of their own: views into a bytes object are not aligned as
        # torch's allocations are, and some CPU kernels compute other last bits on unaligned inputs.
        tensors = {name: tensor.to(device, copy=True) for name, tensor in load_tensors(data).items()}
        solver = {}
        for name, entry in json.loads(metadata["solver"]).items():
            items = [tensors[f"solver.{name}.{i}"] if item == "tensor" else item
                     for i, item in enumerate(entry["items"])]
            solver[name] = items if entry["list"] else items[0]
        return Checkpoint(steps_done=int(metadata["steps_done"]), seed=int(metadata["seed"]),
                          latents=tensors["latents"], solver=solver, expert=metadata["expert"])
    except Exception as e:  # any malformed input: a truncated file, missing tensors, odd values
        raise InvalidCheckpoint(f"unreadable: {type(e).__name__}: {e}") from None


# --- where checkpoints live ----------------------------------------------------------------------

class FolderStore:
    """A folder on a volume that outlives the pod; each write is atomic (a rename)."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.where = str(self.folder)

    def get(self, name: str) -> bytes | None:
        try:
            return (self.folder / name).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, name: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{name}.partial"
        with open(partial, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, self.folder / name)

    def delete(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)


class S3Store:
    """The task's folder in the output bucket (an S3 object appears whole or not at all)."""

    def __init__(self, client, bucket: str, folder: str):
        self.client, self.bucket, self.folder = client, bucket, folder
        self.where = f"s3://{bucket}/{folder}"

    def get(self, name: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.folder + name)["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.folder + name, Body=data)

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.folder + name)


STORE_ERRORS = (OSError, BotoCoreError, ClientError)


def store_for(request: GenerationRequest, s3_client) -> FolderStore | S3Store | None:
    """The task's checkpoint folder: the local one asked for, else in the output bucket."""
    if request.checkpoints.every_seconds == 0:
        return None
    if request.checkpoints.folder:
        return FolderStore(request.checkpoints.folder)
    if request.output.bucket:
        return S3Store(s3_client(), request.output.bucket, f"{request.output.prefix}checkpoints/{request.task_id}/")
    return None


# --- saving while generating, and resuming --------------------------------------------------------

class Checkpointer:
    """Keeps the latest step's state (references only: the tensors are not changed afterwards)
    and saves it when due, one save at a time in the background; `save_latest()` saves at once."""

    def __init__(self, store, print_: str, seed: int, every_seconds: float, clock=time.monotonic):
        self.store, self.print_, self.seed, self.every = store, print_, seed, every_seconds
        self.clock = clock
        self.last_saved_at = clock()
        self.latest: Checkpoint | None = None
        self.saved_steps = 0
        self.saves: list[tuple[int, float]] = []  # (bytes, seconds) of each save, for logs and the benchmark
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self.pending: Future | None = None

    def offer(self, steps_done: int, latents: torch.Tensor, solver: dict, expert: str) -> None:
        self.latest = Checkpoint(steps_done, self.seed, latents, solver, expert)
        if self.clock() - self.last_saved_at >= self.every and (self.pending is None or self.pending.done()):
            self.last_saved_at = self.clock()
            self.pending = self.pool.submit(self._save, self.latest)

    def save_latest(self) -> None:
        """On a stop: the newest state, unless already saved; waits for it."""
        if self.pending is not None:
            self.pending.result()
        if self.latest is not None and self.latest.steps_done > self.saved_steps:
            self._save(self.latest)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _save(self, checkpoint: Checkpoint) -> None:
        """One save at a time: offer() waits for the last to be done, save_latest() for it to end."""
        started = time.perf_counter()
        try:
            data = encode(checkpoint, self.print_)
            self.store.put(STATE, data)
        except STORE_ERRORS as e:
            log.warning("checkpoint after step %d not saved to %s: %s", checkpoint.steps_done, self.store.where, e)
            return
        seconds = time.perf_counter() - started
        self.saved_steps = max(self.saved_steps, checkpoint.steps_done)
        self.saves.append((len(data), seconds))
        log.info("checkpoint after step %d saved to %s (%.1f MiB, %.2f s)", checkpoint.steps_done,
                 self.store.where, len(data) / 2**20, seconds)


def load(store, request: GenerationRequest, device: torch.device, latents_shape: tuple[int, ...]) -> Checkpoint | None:
    """The newest valid checkpoint of this request, or None (none, unreadable, foreign or of
    another shape than this model's latents: warned)."""
    try:
        data = store.get(STATE)
    except STORE_ERRORS as e:
        log.warning("no checkpoint read from %s: %s", store.where, e)
        return None
    if data is None:
        return None
    try:
        checkpoint = decode(data, fingerprint(request), device)
        if not 0 < checkpoint.steps_done < request.steps:
            raise InvalidCheckpoint(f"step {checkpoint.steps_done} is not within 1–{request.steps - 1}")
        if request.seed is not None and checkpoint.seed != request.seed:
            raise InvalidCheckpoint(f"seed {checkpoint.seed}, not the request's {request.seed}")
        tensors = [checkpoint.latents] + [t for value in checkpoint.solver.values()
                                          for t in (value if isinstance(value, list) else [value])
                                          if isinstance(t, torch.Tensor) and t.dim() > 0]
        if any(tuple(t.shape) != tuple(latents_shape) for t in tensors):
            raise InvalidCheckpoint(f"latents of another shape than {tuple(latents_shape)}")
    except InvalidCheckpoint as e:
        log.warning("checkpoint in %s ignored: %s", store.where, e)
        return None
    log.info("resuming after step %d of %d (%s expert) from %s", checkpoint.steps_done, request.steps,
             checkpoint.expert, store.where)
    return checkpoint


def saved_seed(store, request: GenerationRequest) -> int | None:
    """The seed of the run that left a checkpoint of this request (a launcher hands it to every
    rank of a resumed multi-GPU run), or None."""
    try:
        data = store.get(STATE)
        return int(header(data, fingerprint(request))["seed"]) if data else None
    except (InvalidCheckpoint, ValueError, KeyError, *STORE_ERRORS) as e:
        log.warning("no seed read from a checkpoint in %s: %s", store.where, e)
        return None


def keep_video(store, request: GenerationRequest, path: Path, video: VideoOutput, seed: int) -> None:
    """The finished MP4 whose upload failed, for the next attempt to upload instead of regenerate."""
    meta = {"fingerprint": fingerprint(request), "seed": seed, "video": video.model_dump(mode="json")}
    try:
        store.put(VIDEO, path.read_bytes())
        store.put(VIDEO_META, json.dumps(meta).encode())
    except STORE_ERRORS as e:
        log.warning("finished video not kept in %s: %s", store.where, e)


def kept_video(store, request: GenerationRequest, path: Path | None) -> tuple[VideoOutput, int] | None:
    """A finished MP4 of this request from an earlier attempt, with its seed; written to `path`
    when one is given (the rank that uploads)."""
    try:
        meta_data = store.get(VIDEO_META)
        if meta_data is None:
            return None
        meta = json.loads(meta_data)
        if meta["fingerprint"] != fingerprint(request) or (request.seed is not None and meta["seed"] != request.seed):
            raise InvalidCheckpoint("saved for another request")
        data = store.get(VIDEO) or b""
        video = VideoOutput.model_validate({**meta["video"], "path": str(path or request.output.path)})
        if hashlib.sha256(data).hexdigest() != video.sha256:
            raise InvalidCheckpoint("the MP4 does not match its checksum")
    except STORE_ERRORS as e:
        log.warning("no finished video read from %s: %s", store.where, e)
        return None
    except (InvalidCheckpoint, ValueError, KeyError, TypeError) as e:
        log.warning("finished video in %s ignored: %s", store.where, e)
        return None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return video, int(meta["seed"])


def remove(store) -> None:
    """After success: nothing of this task is left behind."""
    for name in (STATE, VIDEO, VIDEO_META):
        try:
            store.delete(name)
        except STORE_ERRORS as e:
            log.warning("%s not removed from %s: %s", name, store.where, e)
