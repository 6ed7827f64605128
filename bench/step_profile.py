"""Where one exact denoising step's GPU time goes, and what exact changes to it buy.

One full-size random-weight transformer (bench/wan_bench.py's architectures) at 720p, timed one
classifier-free-guidance step at a time (the conditional and the unconditional forward), in
the variants below. Each variant's output is compared with diffusers' default (SDPA, eager) on
the same inputs: the runner's own difference from it is the bf16 rounding band a variant must
stay within. The runner's step is then profiled (kernel time by kind), and the card's sustained
matmul and FlashAttention-3 rates are measured with the power draw and SM clock sampled.

    python bench/step_profile.py --model ti2v-5b [--variants diffusers,runner,fused-qkv,cfg-batch]

Every variant uses one timestep embedding per video (the runner's TI2V text-to-video path).
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch._inductor.config
from diffusers import WanTransformer3DModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runner"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from wan_bench import ARCHITECTURES, NEGATIVE, PROMPT, TEXT_TOKENS, flops_per_forward, matmul_tflops  # noqa: E402

from videogen_runner import attention, pipeline  # noqa: E402
from videogen_runner.request import GenerationRequest  # noqa: E402

# name → attention backend, compile, fused attention projections, cond and uncond in one
# batch-2 forward, Inductor settings while the block compiles (its kernels are tuned then).
VARIANTS = {
    "diffusers": dict(backend="native", compile=False),
    "runner": dict(),
    "fused-qkv": dict(fused=True),
    "cfg-batch": dict(batched=True),
    "fused-qkv+cfg-batch": dict(fused=True, batched=True),
    "coordinate-descent": dict(inductor=dict(coordinate_descent_tuning=True)),
    "max-autotune": dict(inductor=dict(max_autotune=True, coordinate_descent_tuning=True)),
}
LATENTS = {"ti2v-5b": (48, 31, 44, 80), "t2v-a14b": (16, 21, 90, 160)}  # 1280×704×121, 1280×720×81


class PowerSampler:
    """nvidia-smi's power draw (W) and SM clock (MHz) every 100 ms while a block runs."""

    def __enter__(self):
        self.process = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=power.draw,clocks.sm", "--format=csv,noheader,nounits", "-lms", "100"],
            stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        samples = [line.split(",") for line in self.process.communicate()[0].splitlines() if "," in line]
        watts, clocks = [float(w) for w, _ in samples], [float(c) for _, c in samples]
        self.summary = {"power_w": round(statistics.median(watts), 1) if watts else None,
                        "sm_mhz": round(statistics.median(clocks)) if clocks else None}


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return times


def repeat(fn, n: int) -> None:
    for _ in range(n):
        fn()  # each result dropped at once: n of them would not fit


def inputs(model: str, device) -> dict:
    generator = torch.Generator(device="cpu").manual_seed(0)
    latents = torch.randn(1, *LATENTS[model], generator=generator).to(device, torch.bfloat16)
    text = [torch.randn(1, TEXT_TOKENS, 4096, generator=generator).to(device, torch.bfloat16) for _ in range(2)]
    return dict(latents=latents, cond=text[0], uncond=text[1], timestep=torch.tensor([900.0], device=device))


def step_function(transformer, x: dict, batched: bool):
    """One CFG step's transformer work; returns the conditional prediction."""
    def forward(latents, text):
        return transformer(hidden_states=latents, timestep=x["timestep"].expand(latents.shape[0]),
                           encoder_hidden_states=text, return_dict=False)[0]

    if batched:
        latents, text = torch.cat([x["latents"]] * 2), torch.cat([x["cond"], x["uncond"]])
        return lambda: forward(latents, text)[:1]

    def two_forwards():
        cond = forward(x["latents"], x["cond"])
        forward(x["latents"], x["uncond"])
        return cond
    return two_forwards


def configure(base, model: str, settings: dict, device):
    torch._dynamo.reset()  # blocks of every copy share one code object: compile each variant anew
    transformer = copy.deepcopy(base)
    if settings.get("fused"):
        for block in transformer.blocks:
            block.attn1.fuse_projections()
            block.attn2.fuse_projections()
    request = GenerationRequest(task_id="bench", model={"preset": model, "path": "-"}, prompt=PROMPT,
                                negative_prompt=NEGATIVE,
                                acceleration={"compile": settings.get("compile", True)})
    backend = attention.choose(settings.get("backend", "_flash_3"), device, torch.bfloat16)
    pipeline.accelerate_transformers([transformer], request, device, backend)
    return transformer, backend


def kernel_breakdown(fn) -> dict:
    """GPU time of one call by kernel kind, and the top kernels."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kinds: dict[str, float] = {}
    top = []
    for event in prof.key_averages():
        us = event.device_time_total
        if us <= 0:
            continue
        name = event.key.lower()
        kind = ("attention" if "flash" in name or "fmha" in name or "attention" in name
                else "matmul" if any(k in name for k in ("gemm", "cutlass", "xmma", "sm90", "nvjet"))
                else "fused (triton)" if "triton" in name
                else "copy/memset" if "memcpy" in name or "memset" in name
                else "other")
        kinds[kind] = kinds.get(kind, 0.0) + us / 1e6
        top.append((us / 1e6, event.count, event.key[:110], kind))
    top.sort(reverse=True)
    return {"seconds_by_kind": {k: round(v, 4) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top": [{"s": round(s, 4), "calls": n, "kernel": k, "kind": kind} for s, n, k, kind in top[:25]]}


def sustained(model: str, device) -> dict:
    """The card's bf16 matmul and FA3 rates over ~5 s of back-to-back calls (at its power limit)."""
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    tokens, heads = {"ti2v-5b": (27280, 24), "t2v-a14b": (75600, 40)}[model]
    q, k, v = (torch.randn(1, tokens, heads, 128, device=device, dtype=torch.bfloat16) for _ in range(3))
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn
    result = {}
    for name, fn, flop, n in (("matmul 8192³", lambda: a @ b, 2 * 8192**3, 4000),
                              ("fa3 at the model's shape", lambda: dispatch_attention_fn(
                                  q, k, v, backend=AttentionBackendName._FLASH_3), 4 * tokens**2 * 128 * heads,
                               30 if model == "t2v-a14b" else 400)):
        fn()
        with PowerSampler() as power:
            seconds = timed(lambda: repeat(fn, n), 1)[0]
        result[name] = {"tflops": round(flop * n / seconds / 1e12, 1), "seconds": round(seconds, 1), **power.summary}
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ti2v-5b", choices=sorted(ARCHITECTURES))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=3, help="timed CFG steps per variant (after two warm-ups)")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    device = torch.device("cuda")
    attention.use_fa3_fwd()
    request = GenerationRequest(task_id="bench", model={"preset": args.model, "path": "-"}, prompt=PROMPT,
                                width=1280, height=704 if args.model == "ti2v-5b" else 720,
                                frames=121 if args.model == "ti2v-5b" else 81)
    tokens, fl = flops_per_forward(ARCHITECTURES[args.model], request)
    result = {"model": args.model, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "tokens": tokens, "tflop_per_forward": round(fl / 1e12, 1), "matmul_tflops": round(matmul_tflops(), 1),
              "rows": []}
    out = Path(args.out) / f"step_profile_{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with torch.device(device):
        base = WanTransformer3DModel(**ARCHITECTURES[args.model]["transformer"]).to(torch.bfloat16).eval()
    x = inputs(args.model, device)
    reference = None
    for name in args.variants.split(","):
        settings = VARIANTS[name]
        transformer, backend = configure(base, args.model, settings, device)
        fn = step_function(transformer, x, settings.get("batched", False))
        with torch.inference_mode():
            started = time.perf_counter()
            with torch._inductor.config.patch(settings.get("inductor", {})):
                output = fn()
            torch.cuda.synchronize()
            first = time.perf_counter() - started
            fn()
            torch.cuda.reset_peak_memory_stats()
            with PowerSampler() as power:
                times = timed(fn, args.steps)
            row = {"variant": name, "attention": backend, "first_step_s": round(first, 1),
                   "step_s": round(statistics.median(times), 4), "steps_s": [round(t, 4) for t in times],
                   "tflops": round(2 * fl / statistics.median(times) / 1e12, 1),
                   "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1), **power.summary}
            if reference is None:
                reference = output.float()
            row["rel_error_vs_first"] = float((output.float() - reference).norm() / reference.norm())
            if name == "runner":
                row["profile"] = kernel_breakdown(fn)
        print(json.dumps({k: v for k, v in row.items() if k != "profile"}), flush=True)
        if "profile" in row:
            print(json.dumps(row["profile"], indent=1), flush=True)
        result["rows"].append(row)
        out.write_text(json.dumps(result, indent=1))
        del transformer, fn, output
        torch.cuda.empty_cache()
    result["sustained"] = sustained(args.model, device)
    print(json.dumps(result["sustained"]), flush=True)
    out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
