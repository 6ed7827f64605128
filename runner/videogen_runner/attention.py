"""Choosing an attention backend that really runs on this machine.

An installed package is no proof: an xformers wheel built for another torch imports fine and
then has no kernels. So each candidate runs a small attention call and is compared with
PyTorch's reference before it is used.
"""

import logging

import torch
from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

log = logging.getLogger(__name__)

# Fastest first, as measured on Hopper (bench/RESULTS.md); hub-downloaded kernels are never
# considered: a pod may have no internet.
CUDA_PREFERENCE = ("_flash_3", "native")


def use_fa3_fwd() -> bool:
    """Serves diffusers' `_flash_3` backend from the fa3-fwd wheel (FlashAttention-3, forward
    only, on PyPI), which diffusers does not look for: it expects FA3 built from source."""
    try:
        from fa3_fwd_interface import flash_attn_func
    except Exception:  # noqa: BLE001 - absent, or built for another torch
        return False
    from diffusers.models import attention_dispatch

    attention_dispatch.flash_attn_3_func = flash_attn_func
    attention_dispatch._CAN_USE_FLASH_ATTN_3 = True
    return True


def works(backend: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Runs one small attention call with `backend` and checks it against the math reference."""
    try:
        name = AttentionBackendName(backend)
    except ValueError:
        return False
    if name.value.endswith("_hub"):
        return False
    generator = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, 64, 2, 64, generator=generator).to(device, dtype) for _ in range(3))
    try:
        out = dispatch_attention_fn(q, k, v, backend=name)
        ref = dispatch_attention_fn(q.float(), k.float(), v.float(), backend=AttentionBackendName._NATIVE_MATH)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as e:  # noqa: BLE001 - any failure disqualifies the backend
        log.info("attention backend %s does not run here: %s", backend, str(e).splitlines()[0][:200])
        return False
    error = (out.float() - ref).norm() / ref.norm()
    return bool(error < 2e-2)


def choose(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """The requested backend if it works, else the fastest that does ('native' always does)."""
    if device.type == "cuda" and requested == "_flash_3":
        use_fa3_fwd()
    if requested != "auto":
        if works(requested, device, dtype):
            return requested
        log.warning("attention backend %r does not run on this machine; choosing automatically", requested)
    if device.type == "cuda":
        use_fa3_fwd()
    candidates = CUDA_PREFERENCE if device.type == "cuda" else ("native",)
    return next(b for b in candidates if b == "native" or works(b, device, dtype))
