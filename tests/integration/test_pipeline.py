"""The model side in-process on tiny real models: what the exact accelerations and LoRAs do."""

import numpy as np
import pytest
import torch
from diffusers import WanPipeline, WanTransformer3DModel
from peft import LoraConfig, get_peft_model_state_dict

from videogen_runner import export, pipeline
from videogen_runner.request import GenerationRequest
from videogen_runner.result import Timings


def request(models, family="ti2v-5b", **fields):
    return GenerationRequest(task_id="p", model={"preset": family, "path": str(models[family])}, prompt="a red fox",
                             width=64, height=64, frames=5, steps=2, **fields)


def frames(req):
    return pipeline.generate_frames(pipeline.load(req), req, seed=1, image=None, timings=Timings())


def test_uniform_timesteps_compute_the_same_video(tiny_models):
    exact = frames(request(tiny_models, acceleration={"uniform_timesteps": False}))
    fast_request = request(tiny_models)
    loaded = pipeline.load(fast_request)
    assert loaded.pipe.config.expand_timesteps is False
    fast = pipeline.generate_frames(loaded, fast_request, seed=1, image=None, timings=Timings())
    assert exact.shape == fast.shape == (5, 64, 64, 3)
    torch.testing.assert_close(fast, exact, atol=1e-5, rtol=0)


def test_generation_fills_the_stage_timings(tiny_models):
    timings = Timings()
    stages, steps = [], []
    req = request(tiny_models)
    pipeline.generate_frames(pipeline.load(req), req, 1, None, timings, stages.append,
                             lambda step, total: steps.append((step, total)))
    assert stages == ["encoding", "denoising", "decoding"]
    assert steps == [(1, 2), (2, 2)]
    assert timings.encode > 0 and timings.denoise > 0 and timings.decode > 0


@pytest.fixture(scope="module")
def lora_file(tiny_models, tmp_path_factory):
    """A LoRA with random (non-zero) weights for the tiny transformers, saved as diffusers does."""
    transformer = WanTransformer3DModel.from_pretrained(tiny_models["t2v-a14b"], subfolder="transformer")
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    folder = tmp_path_factory.mktemp("lora")
    WanPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer))
    return folder / "pytorch_lora_weights.safetensors"


def test_lora_changes_the_video_and_weight_zero_does_not(tiny_models, lora_file):
    base = frames(request(tiny_models, "t2v-a14b"))
    with_lora = frames(request(tiny_models, "t2v-a14b", loras=[{"path": str(lora_file), "weight": 1.0}]))
    muted = frames(request(tiny_models, "t2v-a14b", loras=[{"path": str(lora_file), "weight": 0.0}]))
    assert (with_lora - base).abs().max() > 1e-3
    torch.testing.assert_close(muted, base, atol=1e-5, rtol=0)


@pytest.mark.parametrize("experts, high, low", [("both", True, True), ("high_noise", True, False),
                                                 ("low_noise", False, True)])
def test_lora_goes_into_the_experts_asked_for(tiny_models, lora_file, experts, high, low):
    loaded = pipeline.load(request(tiny_models, "t2v-a14b", loras=[{"path": str(lora_file), "experts": experts}]))
    has = lambda model: "lora0" in (getattr(model, "peft_config", None) or {})  # noqa: E731
    assert (has(loaded.pipe.transformer), has(loaded.pipe.transformer_2)) == (high, low)


def test_a_broken_lora_is_an_invalid_request(tiny_models, tmp_path):
    from videogen_runner.errors import InvalidRequest

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InvalidRequest, match=r"loras\[0\]"):
        pipeline.load(request(tiny_models, "ti2v-5b", loras=[{"path": str(bad)}]))


def test_fp8_without_a_gpu_is_refused_naming_the_field(tiny_models):
    from videogen_runner.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="acceleration.fp8"):
        pipeline.load(request(tiny_models, acceleration={"fp8": True}))


def test_bf16_vae_decodes_close_to_the_fp32_reference(tiny_models):
    exact = frames(request(tiny_models))
    approximate = frames(request(tiny_models, acceleration={"vae_bf16": True}))
    difference = (approximate.float() - exact).abs()
    assert 0 < difference.max() < 0.05
    levels = np.abs(export.to_uint8_video(approximate).astype(int) - export.to_uint8_video(exact))
    assert levels.max() <= 0.05 * 255 + 1
