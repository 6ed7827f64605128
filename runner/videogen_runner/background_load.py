"""Loading the A14B low-noise expert while the high-noise expert denoises.

Only the weights' bytes may move in the background. diffusers' `from_pretrained` sets torch's
process-wide default dtype while it builds a model, which changes what a denoising step that runs
meanwhile computes (seen on the GPU: another video from the same seed). So the model is built in
the calling thread, with its parameters allocated on the device in the dtypes `from_pretrained`
gives them, and a background thread only copies the safetensors into them on a CUDA stream of its
own: tensor copies, no global state.
"""

import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import WanTransformer3DModel
from safetensors import safe_open

from videogen_runner.errors import ModelNotFound

log = logging.getLogger(__name__)


def start(path: str, subfolder: str, dtype: torch.dtype, device: torch.device) -> Future:
    """Builds the model here and now, and returns the future of it with its weights read. The
    reading thread is a daemon: a pod stopped meanwhile (SIGTERM) exits without waiting for it."""
    model = empty_model(path, subfolder, dtype, device)
    files = sorted((Path(path) / subfolder).glob("*.safetensors"))
    future = Future()

    def read():
        try:
            future.set_result(fill(model, files, device))
        except BaseException as error:  # noqa: BLE001 - whoever takes the result gets it
            future.set_exception(error)

    threading.Thread(target=read, name=f"load-{subfolder}", daemon=True).start()
    return future


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


def fill(model: torch.nn.Module, files: list[Path], device: torch.device) -> torch.nn.Module:
    """Copies every tensor of `files` into `model`, on a stream of its own (its copies overlap the
    denoising kernels); fails naming what is missing or unexpected."""
    started = time.perf_counter()
    targets = dict(model.named_parameters()) | dict(model.named_buffers())
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    read = set()
    with torch.no_grad(), torch.cuda.stream(stream):  # no stream (the CPU): as it is
        for file in files:
            with safe_open(file, framework="pt", device="cpu") as tensors:
                for key in tensors.keys():  # noqa: SIM118 - safe_open has no iterator
                    if key not in targets:
                        raise ModelNotFound(f"model.path: {file} holds {key}, which the model does not have")
                    targets[key].copy_(tensors.get_tensor(key))
                    read.add(key)
    if stream is not None:
        stream.synchronize()
    missing = set(dict(model.named_parameters())) - read
    if missing:
        raise ModelNotFound(f"model.path: {files[0].parent if files else 'the folder'} lacks "
                            f"{len(missing)} weights, e.g. {sorted(missing)[0]}")
    log.info("%s loaded in the background in %.1f s", files[0].parent.name, time.perf_counter() - started)
    return model
