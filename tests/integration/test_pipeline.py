"""The model side in-process on tiny real models: what the exact accelerations and LoRAs do."""

import re
import threading

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from videogen_runner import background_load, checkpoint, export, generate, pipeline
from videogen_runner.progress import ProgressReporter
from videogen_runner.request import GenerationRequest
from videogen_runner.result import Timings


def request(models, family="ti2v-5b", **fields):
    fields = {"width": 64, "height": 64, "frames": 5, "steps": 2, **fields}
    return GenerationRequest(task_id="p", model={"preset": family, "path": str(models[family])}, prompt="a red fox",
                             **fields)


def frames(req):
    return pipeline.generate_frames(pipeline.load(req), req, seed=1, image=None, timings=Timings())


def test_uniform_timesteps_compute_the_same_video(tiny_models):
    exact = frames(request(tiny_models, acceleration={"uniform_timesteps": False}))
    fast_request = request(tiny_models)
    loaded = pipeline.load(fast_request)
    during = []
    fast = pipeline.generate_frames(loaded, fast_request, seed=1, image=None, timings=Timings(),
                                    on_step=lambda step, total: during.append(loaded.pipe.config.expand_timesteps))
    assert during and not any(during)  # one timestep per video while it is made
    assert loaded.pipe.config.expand_timesteps is True  # the model's own again, once it is done
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


def test_the_low_noise_expert_is_read_while_the_high_noise_one_denoises_and_computes_the_same_video(tiny_models,
                                                                                                     monkeypatch):
    together = frames(request(tiny_models, "t2v-a14b", steps=12, acceleration={"overlap_load": False}))
    first_step, fill = threading.Event(), background_load.fill

    def after_the_first_step(batches, *rest):  # the high-noise expert's steps must not wait for this
        if batches[0].file.parent.name == "transformer_2":
            assert first_step.wait(60), "the first step waited for the low-noise expert"
        return fill(batches, *rest)

    monkeypatch.setattr(background_load, "fill", after_the_first_step)
    req = request(tiny_models, "t2v-a14b", steps=12)
    loaded = pipeline.load(req)
    assert loaded.pipe.transformer_2 is not loaded.pipe.transformer
    experts, timings = [], Timings()
    behind = pipeline.generate_frames(loaded, req, 1, None, timings, on_step=lambda step, total: first_step.set(),
                                      on_state=lambda steps_done, latents, solver, expert: experts.append(expert))
    assert experts == ["high_noise"] * 8 + ["low_noise"] * 3  # the steps before the last (shift 12, ratio 0.875)
    torch.testing.assert_close(behind, together, atol=0, rtol=0)


@pytest.mark.parametrize("overlap_load", [False, True])
def test_every_weight_lies_in_aligned_memory_of_the_process_whichever_way_it_was_loaded(tiny_models, overlap_load):
    """Weights read serially are views into the memory-mapped files, at whatever offset the file
    gives them; CPU kernels take another code path for unaligned operands on some processors
    (AMD EPYC: the two loads' videos differed in the last bits). Checked here on every machine."""
    loaded = pipeline.load(request(tiny_models, "t2v-a14b", acceleration={"overlap_load": overlap_load}))
    modules = {name: c for name, c in loaded.pipe.components.items() if isinstance(c, torch.nn.Module)}
    assert {"transformer", "transformer_2", "vae", "text_encoder"} <= set(modules)
    for name, module in modules.items():
        unaligned = [n for n, t in (*module.named_parameters(), *module.named_buffers())
                     if t.data_ptr() % pipeline.ALIGNMENT]
        assert not unaligned, f"{name}: {unaligned[:3]}"


@pytest.mark.parametrize("family", ["ti2v-5b", "t2v-a14b"])  # with and without the VAE's patches
def test_the_frames_handed_over_while_decoding_are_the_video_returned(tiny_models, family):
    req = request(tiny_models, family, frames=9)  # three chunks: 1 frame, then 4 and 4
    chunks = []
    video = pipeline.generate_frames(pipeline.load(req), req, seed=1, image=None, timings=Timings(),
                                     on_frames=lambda frames: chunks.append(frames.clone()))
    assert [c.shape[0] for c in chunks] == [1, 4, 4]
    assert torch.equal(torch.cat(chunks), video)


def test_a_failure_while_decoding_leaves_no_partial_mp4_and_keeps_the_denoised_state(tiny_models, tmp_path,
                                                                                     monkeypatch):
    req = request(tiny_models, frames=9, output={"path": str(tmp_path / "out.mp4")},
                  checkpoints={"folder": str(tmp_path / "checkpoints"), "every_seconds": 3600})
    decoder = WanPipeline.from_pretrained  # the decoder breaks after handing over its first chunk

    def load_with_a_failing_decoder(*args, **kwargs):
        pipe = decoder(*args, **kwargs)
        chunks = []

        def second_chunk_fails(module, args, out):
            chunks.append(out)
            if len(chunks) == 2:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
        pipe.vae.decoder.register_forward_hook(second_chunk_fails)
        return pipe

    monkeypatch.setattr(WanPipeline, "from_pretrained", load_with_a_failing_decoder)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        generate.run(req, ProgressReporter(req.task_id, req.reporting))
    assert not (tmp_path / "out.mp4").exists()
    monkeypatch.undo()
    shape = pipeline.latents_shape(pipeline.load(req), req)
    saved = checkpoint.load(checkpoint.FolderStore(tmp_path / "checkpoints"), req, torch.device("cpu"), shape)
    assert saved.steps_done == req.steps - 1  # the last state offered before the decode


def test_a_video_per_process_releases_the_text_encoder_after_encoding(tiny_models):
    req = request(tiny_models)
    loaded = pipeline.load(req)
    pipeline.generate_frames(loaded, req, 1, None, Timings(), release_text_encoder=True)
    assert loaded.pipe.text_encoder is None


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
    both_loaded = {"overlap_load": False}  # the low-noise expert in the pipeline from the start
    base = pipeline.load(request(tiny_models, "t2v-a14b", acceleration=both_loaded)).pipe
    loaded = pipeline.load(request(tiny_models, "t2v-a14b", acceleration=both_loaded,
                                   loras=[{"path": str(lora_file), "experts": experts}]))
    query = lambda pipe, expert: getattr(pipe, expert).blocks[0].attn1.to_q.weight  # noqa: E731
    changed = [not torch.equal(query(loaded.pipe, e), query(base, e)) for e in ("transformer", "transformer_2")]
    assert changed == [high, low]
    # Merged into the weights, and the LoRA layers gone (fuse_loras, the default).
    assert not any("lora" in name for name, _ in loaded.pipe.transformer.named_parameters())


def test_fused_loras_compute_what_unfused_loras_compute(tiny_models, lora_file):
    loras = [{"path": str(lora_file), "weight": 0.7, "experts": "low_noise"}]
    fused = frames(request(tiny_models, "t2v-a14b", loras=loras))
    unfused = frames(request(tiny_models, "t2v-a14b", loras=loras, acceleration={"fuse_loras": False}))
    torch.testing.assert_close(fused, unfused, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def wan_format_lora(lora_file, tmp_path_factory):
    """The same LoRA in Wan's own key layout, as lightx2v's step-distillation LoRAs ship:
    diffusion_model.blocks.N.self_attn.q.lora_down.weight / lora_up.weight / alpha."""
    attention = {"attn1": "self_attn", "attn2": "cross_attn"}
    projection = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}
    converted = {}
    for key, tensor in load_file(lora_file).items():
        match = re.fullmatch(r"transformer\.blocks\.(\d+)\.(attn[12])\.(to_[qkv]|to_out\.0)\.lora_([AB])\.weight", key)
        assert match, key
        block, attn, proj, half = match.groups()
        stem = f"diffusion_model.blocks.{block}.{attention[attn]}.{projection[proj]}"
        converted[f"{stem}.lora_{'down' if half == 'A' else 'up'}.weight"] = tensor
        if half == "A":
            converted[f"{stem}.alpha"] = torch.tensor(float(tensor.shape[0]))  # alpha = rank: scale 1
    path = tmp_path_factory.mktemp("wan-lora") / "high_noise_model.safetensors"
    save_file(converted, path)
    return path


def test_a_lora_in_wan_layout_loads_like_the_diffusers_one(tiny_models, lora_file, wan_format_lora):
    diffusers_layout = frames(request(tiny_models, "t2v-a14b", loras=[{"path": str(lora_file)}]))
    wan_layout = frames(request(tiny_models, "t2v-a14b", loras=[{"path": str(wan_format_lora)}]))
    torch.testing.assert_close(wan_layout, diffusers_layout, atol=1e-5, rtol=0)


def test_four_step_distilled_settings_run_with_the_euler_sampler(tiny_models, wan_format_lora):
    """What lightx2v's 4-step LoRAs take: Euler steps, no classifier-free guidance (one forward per step)."""
    fields = dict(steps=4, guidance_scale=1.0, guidance_scale_2=1.0, flow_shift=5.0,
                  loras=[{"path": str(wan_format_lora), "experts": "high_noise"}])
    req = request(tiny_models, "t2v-a14b", sampler="euler", **fields)
    loaded = pipeline.load(req)
    steps, solvers = [], []

    def on_step(step, total):  # the video's own solver while it is made
        steps.append(step)
        solvers.append((type(loaded.pipe.scheduler), loaded.pipe.scheduler.config.shift))

    euler = pipeline.generate_frames(loaded, req, 1, None, Timings(), on_step=on_step)
    assert steps == [1, 2, 3, 4] and torch.isfinite(euler).all()
    assert all(issubclass(kind, FlowMatchEulerDiscreteScheduler) and shift == 5.0 for kind, shift in solvers)
    unipc = frames(request(tiny_models, "t2v-a14b", **fields))
    assert (euler - unipc).abs().max() > 1e-3


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
