"""The rewired VAE decode computes what diffusers' decode computes (fp32, CPU)."""

import copy
import os
import subprocess
import sys

import pytest
import torch

from videogen_runner import tiny, vae_decode


@pytest.mark.parametrize("family", ["ti2v-5b", "t2v-a14b"])
def test_accelerated_decode_matches_the_stock_decode(family):
    torch.manual_seed(0)
    stock = tiny.vae(family).eval()
    fast = copy.deepcopy(stock)
    vae_decode.accelerate(fast, use_kernel=True)
    vae_decode.accelerate(fast, use_kernel=True)  # idempotent
    # 3 latent frames: the first chunk (zeros before it), the second (one cached frame), the third (two).
    latents = torch.randn(1, tiny.vae_latent_channels(family), 3, 4, 6)
    with torch.inference_mode():
        expected = stock.decode(latents).sample
        got = fast.decode(latents).sample
    scale = stock.spatial_compression_ratio
    assert got.shape == expected.shape == (1, 3, 9, 4 * scale, 6 * scale)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert isinstance(fast.decoder.conv_out, vae_decode.CausalConv3d)
    assert fast.decoder.conv_out.weight.is_contiguous(memory_format=torch.channels_last_3d)


KERNEL_CHECK = """
import torch
from videogen_runner import tiny, vae_decode
norm = tiny.vae("ti2v-5b").decoder.norm_out
with torch.no_grad():
    norm.gamma.normal_()
assert vae_decode.kernel_works(torch.device("cpu"))
fused = vae_decode.RMSNormSiLU(norm, use_kernel=True)
for channels_last in (True, False):  # the Triton kernel, then the eager fallback
    x = torch.randn(2, norm.gamma.shape[0], 3, 4, 5) * 3
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(fused(x), torch.nn.functional.silu(norm(x)), rtol=1e-5, atol=1e-6)
print("ok")
"""


def test_the_triton_kernel_computes_norm_then_silu():
    """Run by Triton's CPU interpreter, which is chosen when the kernel is defined: a new process."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", KERNEL_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_rewired_decoder_keeps_every_weight_under_its_name():
    stock = tiny.vae("ti2v-5b").eval()
    fast = copy.deepcopy(stock)
    vae_decode.accelerate(fast, use_kernel=True)
    expected, got = stock.state_dict(), fast.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[name], expected[name]) for name in expected)


def test_offload_hooks_added_after_the_rewiring_serve_the_new_modules():
    """The runner rewires before placement: CPU offload then moves every weight, the fused norms' too."""
    from accelerate import cpu_offload

    torch.manual_seed(0)
    stock = tiny.vae("ti2v-5b").eval()
    fast = copy.deepcopy(stock)
    vae_decode.accelerate(fast, use_kernel=True)
    cpu_offload(fast, execution_device=torch.device("cpu"))
    assert fast.decoder.norm_out.gamma.device.type == "meta"  # offloaded: loaded by the hook on use
    latents = torch.randn(1, tiny.vae_latent_channels("ti2v-5b"), 2, 4, 6)
    with torch.inference_mode():
        torch.testing.assert_close(fast.decode(latents).sample, stock.decode(latents).sample, rtol=1e-5, atol=1e-5)


def test_a_kernel_that_cannot_run_leaves_the_norms_in_pytorch(monkeypatch, caplog):
    assert not vae_decode.kernel_works(torch.device("cpu"))  # no GPU, no interpreter

    class Unbuildable:  # what a pod without a C compiler gets from Triton
        def __getitem__(self, grid):
            raise RuntimeError("Failed to find C compiler")

    monkeypatch.setattr(vae_decode, "_interpreted", lambda: True)
    monkeypatch.setattr(vae_decode, "_rms_norm_silu_rows", Unbuildable())
    assert not vae_decode.kernel_works(torch.device("cpu"))
    assert "C compiler" in caplog.text
