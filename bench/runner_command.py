"""GPU check of the runner's own command, as a pod runs it, on a full-size random-weight model.

Builds TI2V-5B or T2V-A14B at full size with random weights (bench/wan_bench.py's
architectures), writes it with `save_pretrained` to a folder on the machine's disk, then runs
`python -m videogen_runner --request FILE` in new processes, each after dropping the folder from
the page cache (a cold read from disk, as a new pod on a node gets): load from the folder,
generate, export the MP4, write the result to the termination path. S3 and Redis are off. Per
run: the stage times the runner reports, the time from process start to the end of the first
denoising step (from the runner's log, read as it comes), the disk's read rate measured in the
same run, and a check that the MP4 decodes at the requested frames, size and fps.

    python bench/runner_command.py --model ti2v-5b --folder /models/ti2v --runs cold,serial,runner

Runs: "cold" is the runner with an empty Inductor cache (it fills it); "runner" is the runner
with that cache on disk (as pods get it with runner.compileCacheClaim); "serial" is the same
with `acceleration.overlap_load` off (every weight loaded before the first step, no read-ahead:
the runner before the overlap), measured in the same run. A folder larger than the disk's free
space puts its text encoder on `--spill` (a tmpfs; said in the output).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wan_bench  # noqa: E402

from videogen_runner import export, model_folder, tiny  # noqa: E402  (on the path through wan_bench)

RUNNER = Path(__file__).resolve().parents[1] / "runner"
DISTILLED = dict(steps=4, guidance_scale=1.0, guidance_scale_2=1.0, flow_shift=5.0, sampler="euler")


def write_model(model: str, folder: Path, spill: Path | None, small: bool) -> dict:
    """The random-weight pipeline written as a diffusers folder; what went where."""
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    if small:  # CPU smoke test of this script: the test suite's tiny model
        tiny.write(folder, model)
        build_s = save_s = time.perf_counter() - started
    else:
        if spill is not None:  # the disk is too small for the whole folder: the text encoder goes there
            shutil.rmtree(spill / "text_encoder", ignore_errors=True)
            (spill / "text_encoder").mkdir(parents=True)
            (folder / "text_encoder").symlink_to(spill / "text_encoder")
        pipe = wan_bench.build(model, torch.device("cuda"), torch.bfloat16, small=False)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        pipe.save_pretrained(folder)
        save_s = time.perf_counter() - started
        del pipe
        torch.cuda.empty_cache()
    placed = {"build_s": round(build_s, 1), "save_s": round(save_s, 1)}
    if spill is not None:
        placed["text_encoder_on"] = str(spill)
    placed["gib"] = {part.name: round(size_of(part) / 2**30, 2) for part in sorted(folder.iterdir())
                     if part.is_dir()}
    return placed


def size_of(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.resolve().rglob("*") if f.is_file())


def disk_read_rate(folder: Path) -> dict:
    """The disk's sequential read rate on the model's largest part, from a cold page cache."""
    part = max((p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()), key=size_of)
    size = wan_bench.evict(part)
    started = time.perf_counter()
    model_folder.read_files(sorted(part.rglob("*.safetensors")))  # the runner's own read-ahead
    seconds = time.perf_counter() - started
    return {"part": part.name, "gib": round(size / 2**30, 2), "seconds": round(seconds, 2),
            "gib_per_s": round(size / 2**30 / seconds, 2)}


def request_for(model: str, folder: Path, out: Path, name: str, distilled: bool, steps: int | None,
                fp8: bool, small: bool) -> dict:
    fields = dict(DISTILLED) if distilled else {}
    if small:
        fields.update(width=64, height=64, frames=9, steps=2)
    if steps:
        fields["steps"] = steps
    kind, _, processes = name.partition("@")  # runner@4: four processes; cfg@4: CFG-parallel on four
    acceleration = {"overlap_load": kind != "serial", "fp8": fp8, "cfg_parallel": kind == "cfg",
                    "processes": int(processes) if processes else None}
    return {"task_id": f"check-{label(name)}", "model": {"preset": model, "path": str(folder)},
            "prompt": wan_bench.PROMPT, "negative_prompt": wan_bench.NEGATIVE, "seed": 7,
            "output": {"path": str(out / f"{label(name)}.mp4")}, "acceleration": acceleration, **fields}


def label(name: str) -> str:
    """A run's name in task ids and file names: plain characters (runner@4 → runner-4)."""
    return name.replace("@", "-")


def run_command(name: str, request: dict, folder: Path, out: Path, cache: Path) -> dict:
    """One new process of the runner's command; its log read line by line as it comes."""
    for part in folder.iterdir():  # the parts behind links too (what is on a tmpfs stays cached)
        wan_bench.evict(part.resolve())
    request_file = out / f"{label(name)}.request.json"
    request_file.write_text(json.dumps(request))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNNER), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TORCHINDUCTOR_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    log_path = out / f"{label(name)}.log"
    marks: dict[str, float] = {}
    gpu = GpuSampler()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "videogen_runner", "--request", str(request_file),
         "--termination-message-path", str(out / f"{label(name)}.termination.json")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    with open(log_path, "w") as log:
        for line in process.stdout:
            now = time.perf_counter() - started
            log.write(f"{now:8.2f} {line}")
            lines.append(line)
            for mark in ("stage: loading", "stage: encoding", "stage: denoising", "step 1/", "stage: decoding",
                         "stage: exporting", "transformer loaded", "transformer_2 loaded", "configured "):
                if mark in line and mark not in marks:
                    marks[mark] = round(now, 2)
                    if mark == "stage: denoising":
                        gpu.start()
                    if mark == "stage: decoding":
                        gpu.stop()
    code = process.wait()
    wall = time.perf_counter() - started
    gpu.stop()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    row = {"run": name, "exit_code": code, "wall_s": round(wall, 2), "to_first_step_s": marks.get("step 1/"),
           "marks_s": marks, "timings": result.get("timings"), "attention": result.get("attention_backend"),
           "gpu_while_denoising": gpu.summary()}
    if code == 0:
        row["mp4"] = check_mp4(Path(request["output"]["path"]), request)
    print(json.dumps(row), flush=True)
    return row


def check_mp4(path: Path, request: dict) -> dict:
    """Decodes the MP4 (the carried ffmpeg, through imageio) and compares it with the request."""
    import imageio.v2 as imageio

    from videogen_runner.presets import PRESETS

    preset = PRESETS[request["model"]["preset"]]
    reader = imageio.get_reader(path, format="FFMPEG")
    meta = reader.get_meta_data()
    frames = sum(1 for _ in reader)
    reader.close()
    want = dict(frames=request.get("frames", preset.frames), width=request.get("width", preset.width),
                height=request.get("height", preset.height), fps=request.get("fps", preset.fps))
    got = dict(frames=frames, width=meta["size"][0], height=meta["size"][1], fps=round(meta["fps"]))
    return {"bytes": path.stat().st_size, "sha256": export.sha256_of(path), "decoded": got,
            "as_requested": got == want}


class GpuSampler:
    """nvidia-smi's SM clock and power draw every half second while the steps run."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.process = None

    def start(self):
        if shutil.which("nvidia-smi") is None or self.process is not None:
            return
        query = ["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits", "-lms", "500"]
        self.process = subprocess.Popen(query, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            try:
                clock, power = (float(v) for v in line.split(","))
                self.samples.append((clock, power))
            except ValueError:
                pass

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        clocks, powers = sorted(c for c, _ in self.samples), sorted(p for _, p in self.samples)
        return {"samples": len(self.samples), "sm_mhz_median": clocks[len(clocks) // 2], "sm_mhz_min": clocks[0],
                "power_w_median": powers[len(powers) // 2]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ti2v-5b", choices=sorted(wan_bench.ARCHITECTURES))
    parser.add_argument("--folder", type=Path, required=True, help="where the model is written (local disk)")
    parser.add_argument("--spill", type=Path, help="a tmpfs for the text encoder when the disk is too small")
    parser.add_argument("--runs", default="cold,serial,runner",
                        help="comma-separated: cold, serial, runner, fp8; runner@N or cfg@N: N processes (cfg: "
                        "CFG-parallel)")
    parser.add_argument("--distilled", action="store_true", help="the 4-step distilled setting (no LoRA: same speed)")
    parser.add_argument("--steps", type=int, help="fewer steps than the preset's")
    parser.add_argument("--tiny", action="store_true", help="tiny model on any device: checks the script")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/videogen-inductor-cache"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    result = {"model": args.model, "device": torch.cuda.get_device_name() if gpu else "cpu",
              "torch": torch.__version__, "matmul_tflops": round(wan_bench.matmul_tflops(), 1) if gpu else None,
              "runs": []}
    if not (args.folder / "model_index.json").exists():
        result["written"] = write_model(args.model, args.folder, args.spill, args.tiny)
    result["disk_read"] = disk_read_rate(args.folder)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}), flush=True)
    for name in args.runs.split(","):
        if name == "cold":
            shutil.rmtree(args.cache, ignore_errors=True)
        request = request_for(args.model, args.folder, args.out, name, args.distilled, args.steps, name == "fp8",
                              args.tiny)
        result["runs"].append(run_command(name, request, args.folder, args.out, args.cache))
        suffix = f"{'_distilled' if args.distilled else ''}{'_tiny' if args.tiny else ''}"
        (args.out / f"runner_command_{args.model}{suffix}.json").write_text(json.dumps(result, indent=1))
    print(f"\n{args.model} on {result['device']}, disk {result['disk_read']['gib_per_s']} GiB/s, "
          f"matmul {result['matmul_tflops']} TFLOP/s")
    print("| run | exit | to first step | imports | load | encode | first step | weights wait | denoise | decode | "
          "export | wall | MP4 as requested | same MP4 as the first |")
    first = (result["runs"][0].get("mp4") or {}).get("sha256") if result["runs"] else None
    for r in result["runs"]:
        t = r["timings"] or {}
        print(f"| {r['run']} | {r['exit_code']} | {r['to_first_step_s']} | {t.get('imports')} | {t.get('load')} | "
              f"{t.get('encode')} | {t.get('first_step')} | {t.get('weights_wait')} | {t.get('denoise')} | "
              f"{t.get('decode')} | {t.get('export')} | {r['wall_s']} | {(r.get('mp4') or {}).get('as_requested')} | "
              f"{(r.get('mp4') or {}).get('sha256') == first} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
