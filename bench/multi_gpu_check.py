"""GPU-only check of one video on several GPUs, through the runner's own launcher and loading:
a tiny model generates the same video with 1 and with N processes (Ulysses; with --cfg-parallel,
the two guidance passes on two halves of them, each half splitting the sequence), and the two
must agree within bf16 rounding.

    python3 bench/multi_gpu_check.py --processes 2 [--cfg-parallel]
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runner"))
from videogen_runner import parallel, pipeline, tiny  # noqa: E402
from videogen_runner.request import GenerationRequest  # noqa: E402
from videogen_runner.result import RunResult, Timings  # noqa: E402


def generate(model: Path, out: Path, cfg_parallel: bool) -> None:
    """One rank (or the only process): the runner's load() and generate_frames()."""
    request = GenerationRequest(task_id="check", model={"preset": "t2v-a14b", "path": str(model)}, prompt="a cat",
                                width=64, height=64, frames=9, steps=4, seed=3,
                                acceleration={"compile": False, "cfg_parallel": cfg_parallel})
    loaded = pipeline.load(request)
    frames = pipeline.generate_frames(loaded, request, 3, None, Timings())
    if parallel.is_main():
        np.save(out, frames.float().cpu().numpy())
    if parallel.world_size() > 1:
        parallel.hand_over(RunResult(task_id="check", status="succeeded", exit_code=0,
                                     attention_backend=loaded.attention_backend))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--cfg-parallel", action="store_true")
    parser.add_argument("--rank-of", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_of:
        generate(Path(args.rank_of[0]), Path(args.rank_of[1]), args.cfg_parallel)
        return 0
    folder = Path(tempfile.mkdtemp())
    model = tiny.write(folder / "t2v-a14b", "t2v-a14b")
    generate(model, folder / "one.npy", cfg_parallel=False)
    program = (sys.executable, __file__, "--rank-of", str(model), str(folder / "many.npy"),
               *(["--cfg-parallel"] if args.cfg_parallel else []))
    result = parallel.launch([], args.processes, "check", program)
    one, many = np.load(folder / "one.npy"), np.load(folder / "many.npy")
    report = {"processes": args.processes, "cfg_parallel": args.cfg_parallel, "exit_code": result.exit_code,
              "attention": result.attention_backend,
              "max_abs_diff": float(np.abs(one - many).max()), "shape": list(many.shape)}
    print(json.dumps(report))
    name = f"multi_gpu_check{'_cfg' if args.cfg_parallel else ''}.json"
    Path(os.environ.get("OUT", "."), name).write_text(json.dumps(report))
    return 0 if result.exit_code == 0 and report["max_abs_diff"] < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
