"""Choosing an attention backend that really runs on this machine.

An installed package is no proof: an xformers wheel built for another torch imports fine and
then has no kernels. So each candidate runs a small attention call and is compared with
PyTorch's reference before it is used.
"""

import functools
import logging

import torch
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry, dispatch_attention_fn

log = logging.getLogger(__name__)

# Fastest first, as measured on Hopper (bench/RESULTS.md); hub-downloaded kernels are never
# considered: a pod may have no internet.
CUDA_PREFERENCE = ("_flash_3", "native")


def use_fa3_fwd() -> bool:
    """Serves diffusers' `_flash_3` backend from the fa3-fwd wheel (FlashAttention-3, forward
    only, on PyPI), which diffusers does not look for (it expects FA3 built from source), and lets
    it split the sequence over several GPUs (Ulysses) with diffusers' templated context-parallel
    attention, as diffusers does for its hub-downloaded FA3. Tied to diffusers 0.42's internals,
    which the lock pins; `works()` verifies the result before any use."""
    try:
        import fa3_fwd_interface as fa3
    except Exception:  # noqa: BLE001 - absent, or built for another torch
        return False
    from diffusers.models import attention_dispatch as ad

    if ad._CAN_USE_FLASH_ATTN_3 and ad.flash_attn_3_func is fa3.flash_attn_func:
        return True
    ad.flash_attn_3_func = fa3.flash_attn_func
    ad._CAN_USE_FLASH_ATTN_3 = True
    ad._HUB_KERNELS_REGISTRY[AttentionBackendName._FLASH_3_HUB].wrapped_forward_fn = fa3._flash_attn_forward
    single_gpu = ad._flash_attention_3
    ulysses_forward = functools.partial(ad._flash_attention_3_hub_forward_op, window_size=(-1, -1), softcap=0.0,
                                        num_splits=1, pack_gqa=None, deterministic=False, sm_margin=0)

    @ad._AttentionBackendRegistry.register(
        AttentionBackendName._FLASH_3,
        constraints=[ad._check_device, ad._check_qkv_dtype_bf16_or_fp16, ad._check_shape],
        supports_context_parallel=True,
    )
    def flash_attention_3(query, key, value, attn_mask=None, scale=None, is_causal=False, return_lse=False,
                          _parallel_config=None):
        if _parallel_config is None:
            return single_gpu(query, key, value, attn_mask, scale, is_causal, return_lse)
        return ad._templated_context_parallel_attention(
            query, key, value, attn_mask, 0.0, is_causal, scale, False, return_lse,
            forward_op=ulysses_forward, backward_op=None, _parallel_config=_parallel_config)

    return True


def works(backend: str, device: torch.device, dtype: torch.dtype, head_dim: int = 128) -> bool:
    """Runs one small attention call with `backend`, at the model's head size (kernels support
    only some), and checks it against the math reference."""
    try:
        name = AttentionBackendName(backend)
    except ValueError:
        return False
    if name.value.endswith("_hub"):
        return False
    generator = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, 64, 2, head_dim, generator=generator).to(device, dtype) for _ in range(3))
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


def choose(requested: str, device: torch.device, dtype: torch.dtype, head_dim: int = 128,
           context_parallel: bool = False) -> str:
    """The requested backend if it works, else the fastest that does ('native' always does);
    with context parallelism, only backends that can split the sequence."""
    if device.type == "cuda" and requested == "_flash_3":
        use_fa3_fwd()
    if requested != "auto":
        if works(requested, device, dtype, head_dim) and (not context_parallel or splits_sequence(requested)):
            return requested
        log.warning("attention backend %r does not run on this machine; choosing automatically", requested)
    if device.type == "cuda":
        use_fa3_fwd()
    candidates = CUDA_PREFERENCE if device.type == "cuda" else ("native",)
    usable = (b for b in candidates if b == "native" or works(b, device, dtype, head_dim))
    return next(b for b in usable if not context_parallel or splits_sequence(b))


def splits_sequence(backend: str) -> bool:
    return _AttentionBackendRegistry._is_context_parallel_available(AttentionBackendName(backend))
