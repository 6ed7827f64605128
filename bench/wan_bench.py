"""GPU benchmark: the runner's generation path on full-size Wan2.2 architectures.

No checkpoint can be downloaded on the GPU machine, so TI2V-5B and T2V-A14B (I2V-A14B has
T2V-A14B's shape) are built with random weights, from the configs of the Wan-AI/Wan2.2-*-Diffusers
repositories. Speed does not depend
on the weights' values. Each variant runs through videogen_runner.pipeline.configure() and
generate_frames(), exactly as pods do; "diffusers" is the same path with every acceleration off
(diffusers' defaults), so the two are compared in one process on one card.

    python bench/wan_bench.py --model ti2v-5b --steps 6 [--variants diffusers,runner] [--tiny]

Prints one table (the last lines) and writes JSON to $OUT (or --out).
"""

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from safetensors.torch import save_file
from transformers import UMT5Config, UMT5EncoderModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runner"))
from videogen_runner import checkpoint, export, parallel, pipeline, tiny, vae_decode  # noqa: E402
from videogen_runner.presets import PRESETS  # noqa: E402
from videogen_runner.request import GenerationRequest  # noqa: E402
from videogen_runner.result import Timings  # noqa: E402

# transformer/config.json and vae/config.json of the published Diffusers checkpoints.
ARCHITECTURES = {
    "ti2v-5b": dict(
        transformer=dict(num_attention_heads=24, in_channels=48, out_channels=48, ffn_dim=14336, num_layers=30),
        vae=dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
                 patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
                 latents_mean=[0.0] * 48, latents_std=[1.0] * 48),
        pipe=dict(expand_timesteps=True),
    ),
    "t2v-a14b": dict(
        transformer=dict(num_attention_heads=40, in_channels=16, out_channels=16, ffn_dim=13824, num_layers=40),
        vae=dict(base_dim=96, z_dim=16),
        pipe=dict(boundary_ratio=0.875),
    ),
}
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True)
TEXT_TOKENS = 512
PROMPT = "a majestic eagle flying over the stormy sea at sunset, cinematic, wide shot"
NEGATIVE = "blurry, low quality, static, ugly"

VARIANTS = {
    # Every acceleration off: what a plain WanPipeline call does.
    "diffusers": dict(attention_backend="native", compile=False, uniform_timesteps=False, fast_vae=False),
    # The runner's defaults.
    "runner": dict(),
    "runner-nocompile": dict(compile=False),
    # Several processes (torchrun): the two guidance passes on two halves of them, each half
    # splitting the sequence (the default splits it over all of them). Alone in its process: a
    # process splits its transformers once.
    "cfg-parallel": dict(cfg_parallel=True),
    # Opt-in approximations, each compared with the exact "runner" video of the same seed and steps.
    "taylorseer": dict(step_cache="taylorseer"),
    "first-block": dict(step_cache="first_block", step_cache_threshold=0.05),
    "fp8": dict(fp8=True),
    "vae-bf16": dict(vae_bf16=True),
    # All opt-in approximations at once (FP8 stays in the transformers: run it last).
    "approximate": dict(fp8=True, step_cache="taylorseer", vae_bf16=True),
    # A 4-step distillation LoRA's settings, with the random LoRA of --lora-rank (merged at load:
    # the LoRA stays in the weights, so run it last). Speed only: random weights have no quality.
    "distilled": dict(),
    # The same with the opt-in FP8 linear layers (after "distilled": its LoRA is already merged,
    # so its video is the reference; FP8 stays in the transformers: run it last).
    "distilled-fp8": dict(fp8=True),
    # The runner's defaults with a checkpoint after every step (the worst case: by default one a
    # minute) to the local disk: its bytes and seconds, the stall it adds to a step (against
    # "runner" in the same process), and the time to read it back onto the GPU for a resume.
    "checkpointed": dict(),
}
DISTILLED = dict(sampler="euler", steps=4, guidance_scale=1.0, flow_shift=5.0)


def matmul_tflops() -> float:
    """The card's measured bf16 matmul rate: the ceiling that achieved TFLOP/s is read against."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * 8192**3 / statistics.median(times) / 1e12


def flops_per_forward(arch: dict, request: GenerationRequest) -> tuple[int, float]:
    """Tokens and FLOPs of one transformer forward: linear layers, self- and cross-attention."""
    t = {**dict(attention_head_dim=128), **arch["transformer"]}
    dim = t["num_attention_heads"] * t["attention_head_dim"]
    spatial = arch["vae"].get("scale_factor_spatial", 8) * 2
    tokens = ((request.frames - 1) // 4 + 1) * (request.height // spatial) * (request.width // spatial)
    linear = 2 * tokens * (4 * dim * dim + 2 * dim * dim + 2 * dim * t["ffn_dim"])  # qkvo, cross q/o, ffn
    cross_kv = 2 * TEXT_TOKENS * 2 * dim * dim
    attention = 4 * tokens * tokens * dim + 4 * tokens * TEXT_TOKENS * dim
    return tokens, (linear + cross_kv + attention) * t["num_layers"]


def build(model: str, device: torch.device, dtype: torch.dtype, small: bool) -> WanPipeline:
    """Random-weight components straight on the device. A14B: both experts share one set of
    weights (same shape, so the same speed; memory of one expert, like the baselines)."""
    arch = ARCHITECTURES[model]
    torch.manual_seed(0)
    if small:  # CPU smoke test of this script: the tiny models of the test suite
        folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-tiny-{model}"
        if not (folder / "model_index.json").exists():
            tiny.write(folder, model)
        return WanPipeline.from_pretrained(folder, dtype=dtype)
    with torch.device(device):
        torch.set_default_dtype(dtype)
        transformer = WanTransformer3DModel(**arch["transformer"]).eval()
        text_encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL)).eval()
        torch.set_default_dtype(torch.float32)
        vae = AutoencoderKLWan(**arch["vae"]).eval()
    second = {"transformer_2": transformer} if "boundary_ratio" in arch["pipe"] else {}
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=PRESETS[model].flow_shift)
    return WanPipeline(tokenizer=tiny.tokenizer(), text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer, **second, **arch["pipe"])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 videos (what the MP4 would hold)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def random_lora(transformer, rank: int) -> Path:
    """A LoRA of `rank` on every attention and feed-forward projection of `transformer`, in Wan's
    own key layout (as lightx2v's distillation LoRAs ship), with small random weights."""
    wan_names = {"attn1": "self_attn", "attn2": "cross_attn", "to_q": "q", "to_k": "k", "to_v": "v",
                 "to_out.0": "o", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2"}
    tensors = {}
    for i, block in enumerate(transformer.blocks):
        for attention in ("attn1", "attn2"):
            for projection in ("to_q", "to_k", "to_v", "to_out.0"):
                linear = block.get_submodule(f"{attention}.{projection}")
                stem = f"diffusion_model.blocks.{i}.{wan_names[attention]}.{wan_names[projection]}"
                tensors.update(lora_pair(stem, linear, rank))
        for projection in ("ffn.net.0.proj", "ffn.net.2"):
            tensors.update(lora_pair(f"diffusion_model.blocks.{i}.{wan_names[projection]}",
                                     block.get_submodule(projection), rank))
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-lora-r{rank}.safetensors"
    save_file(tensors, path)
    return path


def lora_pair(stem: str, linear: torch.nn.Linear, rank: int) -> dict:
    down = torch.randn(rank, linear.in_features, dtype=torch.bfloat16) / linear.in_features**0.5
    up = torch.randn(linear.out_features, rank, dtype=torch.bfloat16) * 1e-3
    return {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up,
            f"{stem}.alpha": torch.tensor(float(rank))}


def run_variant(pipe, name: str, request: GenerationRequest, device, fl: float) -> tuple[dict, np.ndarray]:
    """One video through the runner's path, to uint8 frames on the host (what export encodes);
    per-step times from the step callback."""
    started = time.perf_counter()
    loaded = pipeline.configure(pipe, request, device)
    configure_s = time.perf_counter() - started
    stamps = []
    timings = Timings()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    saver = None
    if name == "checkpointed":
        store = checkpoint.FolderStore(tempfile.mkdtemp(prefix="videogen-checkpoints-"))
        saver = checkpoint.Checkpointer(store, checkpoint.fingerprint(request), 0, every_seconds=0)
    started = time.perf_counter()
    frames = pipeline.generate_frames(loaded, request, 0, None, timings,
                                      on_step=lambda step, total: stamps.append(time.perf_counter()),
                                      on_state=saver.offer if saver else lambda *state: None)
    video = export.to_uint8_video(frames)
    total = time.perf_counter() - started
    steps = [b - a for a, b in zip([started + timings.encode] + stamps, stamps)]
    step_s = statistics.median(steps[1:]) if len(steps) > 1 else steps[0]
    row = {"variant": name, "attention": loaded.attention_backend, "steps": request.steps,
           "configure_s": round(configure_s, 2),
           "step_s": round(step_s, 3), "first_step_s": round(steps[0], 2), "encode_s": timings.encode,
           "decode_s": timings.decode, "video_s": round(total, 2),
           "frames_shape": list(frames.shape), "frames_finite": bool(torch.isfinite(frames).all())}
    if saver is not None:
        saver.close()
        read_started = time.perf_counter()
        resumed = checkpoint.load(store, request, device, tuple(saver.latest.latents.shape))
        if device.type == "cuda":
            torch.cuda.synchronize()
        row["checkpoint"] = {"saves": len(saver.saves), "bytes": saver.saves[-1][0],
                             "save_s_median": round(statistics.median(s for _, s in saver.saves), 3),
                             "resume_read_s": round(time.perf_counter() - read_started, 3),
                             "resumed_after_step": resumed.steps_done}
    if device.type == "cuda":
        forwards = 2 if request.guidance_scale > 1.0 else 1  # CFG: two forwards per step
        row["tflops"] = round(forwards * fl / step_s / 1e12, 1)
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    if parallel.is_main():
        print(json.dumps(row), flush=True)
    return row, video


def vae_decode_check(pipe, model: str, device) -> dict:
    """The same latents through diffusers' VAE decode, the runner's, and the runner's in bf16:
    time of each (after a warm-up on two latent frames) and PSNR against diffusers' video."""
    stock = pipe.vae
    z = stock.config.z_dim
    spatial = stock.config.get("scale_factor_spatial", 8)
    shape = (1, z, 31 if model == "ti2v-5b" else 21, 704 // spatial if model == "ti2v-5b" else 720 // spatial,
             1280 // spatial)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    fast = copy.deepcopy(stock)
    vae_decode.accelerate(fast, use_kernel=vae_decode.kernel_works(device))
    fast_bf16 = copy.deepcopy(fast).to(torch.bfloat16)
    out, videos = {}, {}
    with torch.inference_mode():
        for name, vae in (("diffusers", stock), ("runner", fast), ("runner-bf16", fast_bf16)):
            x = latents.to(vae.dtype)
            vae.decode(x[:, :, :2])
            torch.cuda.synchronize()
            started = time.perf_counter()
            video = vae.decode(x, return_dict=False)[0]
            torch.cuda.synchronize()
            out[name] = {"seconds": round(time.perf_counter() - started, 2)}
            videos[name] = export.to_uint8_video((video[0].float().permute(1, 2, 3, 0) + 1) / 2)
            if name != "diffusers":
                out[name]["psnr_vs_diffusers_db"] = round(psnr(videos[name], videos["diffusers"]), 2)
                out[name]["max_uint8_diff"] = int(np.abs(videos[name].astype(int) - videos["diffusers"]).max())
    del fast, fast_bf16
    print(json.dumps({"vae_decode": out}), flush=True)
    return out


def evict(folder: Path) -> int:
    """Drops the folder's files from the page cache (no root needed), so the next read is from disk."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            total += path.stat().st_size
    return total


def load_check(pipe, model: str, folder: Path, device: torch.device) -> dict:
    """Load time of the saved model from local disk, against the disk's own read rate."""
    started = time.perf_counter()
    pipe.save_pretrained(folder)
    saved_s = time.perf_counter() - started
    size = evict(folder)
    started = time.perf_counter()
    chunk = bytearray(64 << 20)
    for path in folder.rglob("*.safetensors"):
        with open(path, "rb", buffering=0) as f:
            while f.readinto(chunk):
                pass
    read_s = time.perf_counter() - started
    out = {"gib": round(size / 2**30, 2), "save_s": round(saved_s, 1), "disk_read_s": round(read_s, 2),
           "disk_gib_per_s": round(size / 2**30 / read_s, 2)}
    request = GenerationRequest(task_id="load", model={"preset": model, "path": str(folder)}, prompt=PROMPT,
                                acceleration={"compile": False})
    for name, load in (
        ("diffusers: from_pretrained, then .to(cuda)",
         lambda: WanPipeline.from_pretrained(folder, dtype=pipe.transformer.dtype).to(device)),
        ("runner: pipeline.load (safetensors to the GPU)", lambda: pipeline.load(request).pipe),
    ):
        evict(folder)
        started = time.perf_counter()
        loaded = load()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        out[name] = {"seconds": round(seconds, 2), "gib_per_s": round(size / 2**30 / seconds, 2)}
        del loaded
    print(json.dumps({"load": out}), flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ti2v-5b", choices=sorted(ARCHITECTURES))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--variants", default="diffusers,runner-nocompile,runner",
                        help="comma-separated NAME[:STEPS]; a repeated name runs again in the same process (warm)")
    parser.add_argument("--tiny", action="store_true", help="tiny model on any device: checks the script")
    parser.add_argument("--lora-rank", type=int, default=64, help="rank of the distilled variant's random LoRA")
    parser.add_argument("--vae-check", action="store_true",
                        help="time diffusers' VAE decode against the runner's, fp32 and bf16")
    parser.add_argument("--load-check", type=Path, metavar="FOLDER",
                        help="save the model there and time loading it from disk against the disk's read rate")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    names = [variant.partition(":")[0] for variant in args.variants.split(",")]
    if "cfg-parallel" in names and len(set(names)) > 1:
        parser.error("run cfg-parallel alone: a process splits its transformers once")
    if "diffusers" in names[1:]:
        parser.error("run diffusers first: the runner's settings rewire the model in place (compile, VAE)")

    # Under torchrun (several GPUs), each rank takes its GPU and the runner splits the sequence.
    device = parallel.init("cuda") if parallel.world_size() > 1 else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = dict(width=64, height=64, frames=9) if args.tiny else {}
    result = {"model": args.model, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "gpus": parallel.world_size(), "torch": torch.__version__, "steps": args.steps, "rows": []}
    if device.type == "cuda":
        result["matmul_tflops"] = round(matmul_tflops(), 1)

    started = time.perf_counter()
    pipe = build(args.model, device, dtype, args.tiny)
    result["build_s"] = round(time.perf_counter() - started, 1)
    if args.vae_check:  # before any variant rewires pipe.vae
        result["vae_decode"] = vae_decode_check(pipe, args.model, device)
    exact = {}  # (setting, steps) → frames of the exact video, the reference of the approximations
    merged = False  # the distilled variants' random LoRA, once merged, stays in the weights
    for variant in args.variants.split(","):
        name, _, steps = variant.partition(":")
        fields = dict(steps=int(steps or args.steps), **size)
        setting = "distilled" if name.startswith("distilled") else "exact"
        if setting == "distilled":
            # A14B: the benchmark's experts share weights, so the LoRA goes into one of them.
            two_experts = PRESETS[args.model].two_experts
            fields.update(DISTILLED)
            if not merged:
                fields["loras"] = [{"path": str(random_lora(pipe.transformer, args.lora_rank)),
                                    "experts": "high_noise" if two_experts else "both"}]
                merged = True
            if two_experts:
                fields["guidance_scale_2"] = 1.0
        request = GenerationRequest(task_id="bench", model={"preset": args.model, "path": "-"}, prompt=PROMPT,
                                    negative_prompt=NEGATIVE, acceleration=VARIANTS[name], **fields)
        vae_fp32 = copy.deepcopy(pipe.vae) if VARIANTS[name].get("vae_bf16") else None
        tokens, fl = flops_per_forward(ARCHITECTURES[args.model], request)
        result.update(tokens=tokens, tflop_per_forward=round(fl / 1e12, 1),
                      shape=[request.width, request.height, request.frames])
        row, frames = run_variant(pipe, name, request, device, fl)
        key = (setting, request.steps)
        if name in ("runner", "distilled"):
            exact.setdefault(key, frames)
        elif key in exact and name not in ("diffusers", "runner-nocompile"):
            row["psnr_vs_exact_db"] = round(psnr(frames, exact[key]), 2)
            print(json.dumps({"variant": name, "psnr_vs_exact_db": row["psnr_vs_exact_db"]}), flush=True)
        if VARIANTS[name].get("step_cache"):
            for transformer in {id(t): t for t in (pipe.transformer, pipe.transformer_2) if t is not None}.values():
                transformer.disable_cache()
        if vae_fp32 is not None:  # casting back would keep bf16's rounding
            pipe.vae = vae_fp32
        result["rows"].append(row)
    if args.load_check:
        result["load"] = load_check(pipe, args.model, args.load_check, device)

    if not parallel.is_main():
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    suffix = f"{'_tiny' if args.tiny else ''}{f'_{parallel.world_size()}gpu' if parallel.world_size() > 1 else ''}"
    (Path(args.out) / f"bench_{args.model}{suffix}.json").write_text(json.dumps(result, indent=1))
    print(f"\n{result['model']} {result['shape']} on {result['gpus']}× {result['device']}, {result['tokens']} tokens, "
          f"{result['tflop_per_forward']} TFLOP/forward, matmul {result.get('matmul_tflops')} TFLOP/s")
    print("| variant | attention | configure | steps | s/step | TFLOP/s | first step | encode | decode | video | "
          "peak GiB | PSNR |")
    for r in result["rows"]:
        print(f"| {r['variant']} | {r['attention']} | {r['configure_s']} | {r['steps']} | {r['step_s']} | "
              f"{r.get('tflops')} | "
              f"{r['first_step_s']} | {r['encode_s']} | {r['decode_s']} | {r['video_s']} | {r.get('peak_gib')} | "
              f"{r.get('psnr_vs_exact_db', '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
