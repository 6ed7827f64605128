"""The transformers' weights, read from disk behind the work that does not need them yet.

One thread reads the transformers in the order denoising uses them: while it reads, the main
thread loads the text encoder and the VAE, encodes the prompt, and (A14B) the high-noise expert
denoises the first steps while the low-noise one is still being read. Each transformer's first
forward waits for its own weights.

Only the weights' bytes may move in the background. diffusers' `from_pretrained` sets torch's
process-wide default dtype while it builds a model, which changes what a denoising step that runs
meanwhile computes (seen on the GPU: another video from the same seed). So the models are built in
the calling thread, with their parameters allocated on the device in the dtypes `from_pretrained`
gives them, and the thread only copies the files' tensors into them: tensor copies, no global
state. It reads each file with plain reads into two pinned buffers in turn and copies from them on
a CUDA stream of its own (the copies of one buffer overlap the reading of the other), a few calls
per buffer: no page faults on a memory-mapped file and no copies from pageable memory, which
slowed the main thread's kernels by half when the weights came through safetensors' memory map,
and few handovers of the GIL, which the denoising thread holds most of the time.
"""

import json
import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import WanTransformer3DModel

from videogen_runner.errors import ModelNotFound

log = logging.getLogger(__name__)
BUFFER_BYTES = 512 << 20
# The safetensors format (github.com/huggingface/safetensors): an 8-byte little-endian header
# length, a JSON header naming each tensor's dtype, shape and byte range, then the bytes.
DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


@dataclass(frozen=True)
class Stored:
    """One tensor of a safetensors file: where its bytes are."""
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # from the start of the file
    end: int


class WaitForWeights:
    """A forward pre-hook: the model's first forward waits until its weights are in (or raises
    what reading them failed with); `waited` is how long it waited."""

    def __init__(self, model: torch.nn.Module, future: Future):
        self.future, self.waited = future, 0.0
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.wait()

    def wait(self) -> None:
        if self.future is None:
            return
        started = time.perf_counter()
        self.future.result()
        self.waited = time.perf_counter() - started
        self.future = None
        self.handle.remove()


def start(path: str, subfolders: list[str], dtype: torch.dtype,
          device: torch.device) -> dict[str, WanTransformer3DModel]:
    """Builds the transformers of `subfolders` here and now, checks their files against them, and
    returns them while one daemon thread reads their weights in that order (a pod stopped meanwhile
    exits without waiting for it)."""
    models = {subfolder: empty_model(path, subfolder, dtype, device) for subfolder in subfolders}
    files = {subfolder: {file: stored_tensors(file) for file in weight_files(path, subfolder)}
             for subfolder in subfolders}
    largest = max((t.end - t.begin for layouts in files.values() for tensors in layouts.values() for t in tensors),
                  default=0)
    on_gpu = device.type == "cuda"
    buffers = [torch.empty(max(BUFFER_BYTES, largest), dtype=torch.uint8, pin_memory=on_gpu) for _ in range(2)]
    plans = {subfolder: plan(models[subfolder], files[subfolder], buffers) for subfolder in subfolders}
    futures = {subfolder: Future() for subfolder in subfolders}
    for subfolder, model in models.items():
        model._videogen_weights = WaitForWeights(model, futures[subfolder])

    def read():
        stream = torch.cuda.Stream(device) if on_gpu else None
        copied = [None, None]  # the event after each buffer's last copies, before it is read into again
        for subfolder, batches in plans.items():
            try:
                started = time.perf_counter()
                fill(batches, buffers, stream, copied)
                log.info("%s loaded in the background in %.1f s", subfolder, time.perf_counter() - started)
                futures[subfolder].set_result(models[subfolder])
            except BaseException as error:  # noqa: BLE001 - whoever waits for it gets it
                for future in futures.values():
                    if not future.done():
                        future.set_exception(error)
                return

    threading.Thread(target=read, name="load-transformers", daemon=True).start()
    return models


def weight_files(path: str, subfolder: str) -> list[Path]:
    files = sorted((Path(path) / subfolder).glob("*.safetensors"))
    if not files:
        raise ModelNotFound(f"model.path: no safetensors weights in {Path(path) / subfolder}")
    return files


def wait(model: torch.nn.Module) -> None:
    """Blocks until the model's weights are in, if they are being read."""
    weights = getattr(model, "_videogen_weights", None)
    if weights is not None:
        weights.wait()


def waited(models: list[torch.nn.Module | None]) -> float:
    """Seconds the models' first forwards (or wait()) spent waiting for their weights."""
    weights = (getattr(model, "_videogen_weights", None) for model in models)
    return sum(w.waited for w in weights if w is not None)


def empty_model(path: str, subfolder: str, dtype: torch.dtype, device: torch.device) -> WanTransformer3DModel:
    """The model as `from_pretrained(..., torch_dtype=dtype, device_map=device)` builds it
    (buffers computed, the `_keep_in_fp32_modules` in float32, eval mode), its parameters
    allocated on `device` and not yet read."""
    cls = WanTransformer3DModel
    config = cls.load_config(path, subfolder=subfolder)
    previous = cls._set_default_torch_dtype(dtype)  # what from_pretrained builds under
    try:
        with init_empty_weights(include_buffers=False):
            model = cls.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    keep = cls._keep_in_fp32_modules or []
    for name, param in list(model.named_parameters()):
        owner, _, leaf = name.rpartition(".")
        in_fp32 = param.is_floating_point() and any(module in name.split(".") for module in keep)
        module = model.get_submodule(owner)
        module._parameters[leaf] = torch.nn.Parameter(
            torch.empty(param.shape, dtype=torch.float32 if in_fp32 else dtype if param.is_floating_point()
                        else param.dtype, device=device), requires_grad=False)
    model.to(device)  # the buffers, computed on the CPU at construction
    model.register_to_config(_name_or_path=path)
    return model.eval()


@dataclass
class Batch:
    """Consecutive tensors of one file: one read into one of the buffers, then one call that copies
    them all (every torch call gives up the GIL and waits to take it back from the denoising
    thread, so the reading thread makes few)."""
    file: Path
    begin: int
    end: int
    buffer: int
    targets: list[torch.Tensor]
    sources: list[torch.Tensor]  # views of the buffer as the stored tensors
    unaligned: list[tuple[torch.Tensor, torch.Tensor, Stored]]  # (target, its bytes, stored): through a copy


def plan(model: torch.nn.Module, layouts: dict[Path, list[Stored]], buffers: list[torch.Tensor]) -> list[Batch]:
    """The reads and copies that fill `model` from the files; fails naming what is unexpected,
    misshapen or missing, before anything is read."""
    targets = dict(model.named_parameters()) | dict(model.named_buffers())
    batches, read = [], set()
    for file, tensors in layouts.items():
        for run in runs(tensors, len(buffers[0])):
            buffer = buffers[len(batches) % 2]
            batch = Batch(file, run[0].begin, run[-1].end, len(batches) % 2, [], [], [])
            for stored in run:
                target = target_for(targets, stored, file)
                raw = buffer[stored.begin - batch.begin: stored.end - batch.begin]
                if raw.storage_offset() % stored.dtype.itemsize:
                    batch.unaligned.append((target, raw, stored))
                else:
                    batch.targets.append(target)
                    batch.sources.append(raw.view(stored.dtype).view(stored.shape))
                read.add(stored.name)
            batches.append(batch)
    missing = set(dict(model.named_parameters())) - read
    if missing:
        raise ModelNotFound(f"model.path: {next(iter(layouts)).parent} lacks {len(missing)} weights, "
                            f"e.g. {sorted(missing)[0]}")
    return batches


def fill(batches: list[Batch], buffers: list[torch.Tensor], stream: torch.cuda.Stream | None, copied: list) -> None:
    """Reads and copies the batches, the copies of one buffer overlapping the read into the other
    (converting dtypes where the file's differ from the model's)."""
    views = [memoryview(buffer.numpy()) for buffer in buffers]
    with torch.no_grad(), torch.cuda.stream(stream):  # no stream (the CPU): as it is
        for batch in batches:
            if copied[batch.buffer] is not None:
                copied[batch.buffer].synchronize()
            with open(batch.file, "rb", buffering=0) as f:
                read_exactly(f, views[batch.buffer][: batch.end - batch.begin], batch.begin, batch.file)
            torch._foreach_copy_(batch.targets, batch.sources, non_blocking=stream is not None)
            for target, raw, stored in batch.unaligned:
                target.copy_(raw.clone().view(stored.dtype).view(stored.shape))
            copied[batch.buffer] = stream.record_event() if stream is not None else None
    if stream is not None:
        stream.synchronize()


def target_for(targets: dict[str, torch.Tensor], stored: Stored, file: Path) -> torch.Tensor:
    """The model's tensor that a stored one fills, or why there is none."""
    target = targets.get(stored.name)
    if target is None:
        raise ModelNotFound(f"model.path: {file} holds {stored.name}, which the model does not have")
    if tuple(target.shape) != stored.shape:
        raise ModelNotFound(f"model.path: {file} holds {stored.name} of shape {list(stored.shape)}, "
                            f"the model's is {list(target.shape)}")
    return target


def stored_tensors(file: Path) -> list[Stored]:
    """The tensors of a safetensors file, in the order of their bytes."""
    try:
        with open(file, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(length))
        header.pop("__metadata__", None)
        data = 8 + length
        tensors = [Stored(name, DTYPES[info["dtype"]], tuple(info["shape"]), data + info["data_offsets"][0],
                          data + info["data_offsets"][1]) for name, info in header.items()]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise ModelNotFound(f"model.path: {file} is not a readable safetensors file: {e!r}") from e
    return sorted(tensors, key=lambda t: t.begin)


def runs(tensors: list[Stored], size: int) -> list[list[Stored]]:
    """Runs of consecutive tensors whose bytes fit in one buffer of `size` bytes."""
    grouped: list[list[Stored]] = []
    for stored in tensors:
        if grouped and stored.end - grouped[-1][0].begin <= size:
            grouped[-1].append(stored)
        else:
            grouped.append([stored])
    return grouped


def read_exactly(f, view: memoryview, offset: int, file: Path) -> None:
    """Reads len(view) bytes at `offset` (the read releases the GIL: the main thread runs on)."""
    done = 0
    while done < len(view):
        got = os.preadv(f.fileno(), [view[done:]], offset + done)
        if got == 0:
            raise ModelNotFound(f"model.path: {file} ends at byte {offset + done}, before its tensors' end")
        done += got
