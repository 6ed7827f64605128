"""Attention kernels at Wan2.2's real shapes: time, TFLOP/s and error against float32.

    python bench/attention_bench.py

The runner picks its backend by verifying each candidate (videogen_runner.attention); this
script says which one is worth preferring on the card at hand.
"""

import json
import os
import statistics
import sys
from pathlib import Path

import torch
from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runner"))
from videogen_runner import attention  # noqa: E402

SHAPES = {"ti2v-5b 1280x704x121": (27280, 24), "a14b 1280x720x81": (75600, 40)}
BACKENDS = ["native", "_native_cudnn", "_native_flash", "_native_efficient", "flex", "xformers", "_flash_3"]


def timed(fn, repeat=3) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def main() -> int:
    print("fa3-fwd usable:", attention.use_fa3_fwd())
    rows = []
    for label, (tokens, heads) in SHAPES.items():
        q, k, v = (torch.randn(1, tokens, heads, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        # Reference: the math kernel in float32 on a slice of the queries (the full one is too large).
        ref = dispatch_attention_fn(q[:, :512].float(), k.float(), v.float(), backend=AttentionBackendName._NATIVE_MATH)
        flop = 4 * tokens * tokens * 128 * heads
        for backend in BACKENDS:
            name = AttentionBackendName(backend)
            try:
                out = dispatch_attention_fn(q, k, v, backend=name)
                seconds = timed(lambda: dispatch_attention_fn(q, k, v, backend=name))
            except Exception as e:  # noqa: BLE001
                rows.append({"shape": label, "backend": backend, "error": str(e).splitlines()[0][:160]})
                print(json.dumps(rows[-1]), flush=True)
                continue
            error = ((out[:, :512].float() - ref).norm() / ref.norm()).item()
            rows.append({"shape": label, "backend": backend, "ms": round(seconds * 1e3, 1),
                         "tflops": round(flop / seconds / 1e12, 1), "rel_error": f"{error:.1e}"})
            print(json.dumps(rows[-1]), flush=True)
    Path(os.environ.get("OUT", ".")).joinpath("attention.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
