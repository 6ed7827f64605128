"""The runner's command line: `videogen-runner` or `python -m videogen_runner`.

Takes the request as JSON (`--request FILE`, or the VIDEOGEN_REQUEST variable, as the operator
passes it) and/or the flags of the original generate_final.py; flags override the JSON.
Exits with a code from errors.ExitCode and leaves the result as JSON on the termination-message
path and as the last line of stdout.
"""

import argparse
import json
import logging
import os
import random
import signal
import sys
import time
import uuid
from pathlib import Path

from pydantic import ValidationError

from videogen_runner.errors import InvalidRequest, OutOfGpuMemory, RunnerError, Terminated
from videogen_runner.model_folder import infer_preset, read_ahead
from videogen_runner.presets import PRESETS
from videogen_runner.progress import ProgressReporter
from videogen_runner.request import TASK_ID, GenerationRequest, Reporting, describe
from videogen_runner.result import RunResult, Timings

log = logging.getLogger("videogen_runner")
WAN_TASK_NAMES = {"t2v-a14b": "t2v-a14b", "i2v-a14b": "i2v-a14b", "ti2v-5b": "ti2v-5b"}


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise InvalidRequest(f"command line: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="videogen-runner", description="Generate one Wan2.2 video with diffusers.")
    p.add_argument("--request", help="JSON request file (default: the VIDEOGEN_REQUEST variable)")
    p.add_argument("--task_id")
    p.add_argument("--model_path")
    p.add_argument("--model", "--preset", dest="preset", choices=sorted(PRESETS),
                   help="model family (default: inferred from the model folder)")
    p.add_argument("--task", help="t2v, i2v or ti2v; Wan's names (t2v-A14B, ti2v-5B, …) also pick the model")
    p.add_argument("--prompt")
    p.add_argument("--negative_prompt")
    p.add_argument("--image", help="first frame: s3:// or https:// URL")
    p.add_argument("--size", help="WIDTH*HEIGHT, as in Wan's generate.py")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--frame_num", "--num_frames", "--frames", dest="frames", type=int)
    p.add_argument("--fps", type=int)
    p.add_argument("--sample_steps", "--num_inference_steps", "--steps", dest="steps", type=int)
    p.add_argument("--sample_guide_scale", "--guidance_scale", dest="guidance_scale", type=float)
    p.add_argument("--guidance_scale_2", type=float)
    p.add_argument("--sample_shift", "--flow_shift", dest="flow_shift", type=float)
    p.add_argument("--sample_solver", "--sampler", dest="sampler", help="unipc (default) or euler")
    p.add_argument("--base_seed", "--seed", dest="seed", type=int)
    p.add_argument("--lora", action="append", metavar="PATH[:WEIGHT]", help="repeatable")
    p.add_argument("--output_path", help="local MP4 path")
    p.add_argument("--s3_bucket")
    p.add_argument("--s3_key", help="object key template, e.g. videos/{task_id}.mp4")
    p.add_argument("--s3_endpoint_url")
    p.add_argument("--s3_region")
    p.add_argument("--redis_url")
    p.add_argument("--redis_host")
    p.add_argument("--redis_port", type=int, default=6379)
    p.add_argument("--redis_db", type=int, default=0)
    p.add_argument("--attention_backend")
    p.add_argument("--offload", choices=["none", "model", "sequential"])
    p.add_argument("--termination-message-path",
                   default=os.environ.get("TERMINATION_MESSAGE_PATH", "/dev/termination-log"))
    return p


def request_document(args: argparse.Namespace) -> dict:
    """The JSON request (if any) with the flags laid over it."""
    doc: dict = {}
    text = Path(args.request).read_text() if args.request else os.environ.get("VIDEOGEN_REQUEST")
    if text:
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise InvalidRequest(f"request: not valid JSON: {e}") from e
        if not isinstance(doc, dict):
            raise InvalidRequest("request: must be a JSON object")

    def put(path: str, value):
        if value is None:
            return
        *parents, leaf = path.split(".")
        node = doc
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value

    if args.task and args.task.lower() in WAN_TASK_NAMES:
        args.preset, args.task = WAN_TASK_NAMES[args.task.lower()], None
    if args.size:
        try:
            args.width, args.height = (int(v) for v in args.size.lower().replace("x", "*").split("*"))
        except ValueError:
            raise InvalidRequest(f"size: {args.size!r} is not WIDTH*HEIGHT") from None
    put("task_id", args.task_id)
    doc.setdefault("task_id", f"run-{uuid.uuid4().hex[:12]}")
    put("model.path", args.model_path)
    put("model.preset", args.preset)
    if doc.get("model", {}).get("path") and not doc["model"].get("preset"):
        put("model.preset", infer_preset(doc["model"]["path"]))
    for name in ("task", "prompt", "negative_prompt", "image", "width", "height", "frames", "fps", "steps",
                 "guidance_scale", "guidance_scale_2", "flow_shift", "sampler", "seed"):
        put(name, getattr(args, name))
    if args.lora:
        doc["loras"] = [lora_flag(value) for value in args.lora]
    put("output.path", args.output_path)
    put("output.bucket", args.s3_bucket)
    put("output.key", args.s3_key)
    put("output.endpoint_url", args.s3_endpoint_url)
    put("output.region", args.s3_region)
    if args.redis_host:
        put("reporting.redis_url", f"redis://{args.redis_host}:{args.redis_port}/{args.redis_db}")
    put("reporting.redis_url", args.redis_url)
    put("acceleration.attention_backend", args.attention_backend)
    put("acceleration.offload", args.offload)
    return doc


def lora_flag(value: str) -> dict:
    """PATH or PATH:WEIGHT."""
    path, _, weight = value.rpartition(":")
    try:
        return {"path": path, "weight": float(weight)}
    except ValueError:
        return {"path": value}


def on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one clean stop; the rest is ours to finish
    raise Terminated("stopped by SIGTERM")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, on_sigterm)
    termination_path = os.environ.get("TERMINATION_MESSAGE_PATH", "/dev/termination-log")
    task_id = "unknown"
    reporter = None
    try:
        # 1. The request: parsed and validated before anything heavy is imported.
        args = build_parser().parse_args(argv)
        termination_path = args.termination_message_path
        doc = request_document(args)
        task_id = str(doc.get("task_id"))
        reporter = reporter_for(doc)
        try:
            request = GenerationRequest.model_validate(doc)
        except ValidationError as e:
            raise InvalidRequest(f"invalid request: {describe(e)}") from None

        # 2. The generation (imports torch and diffusers, while the weights are read ahead).
        #    Several GPUs: one process each, this one only launches them and passes rank 0's exit
        #    code on.
        if "RANK" not in os.environ:  # the ranks of several GPUs find the launcher's read in the page cache
            read_ahead(request)
        imports_started = time.perf_counter()
        from videogen_runner import parallel
        from videogen_runner.generate import run

        timings = Timings(imports=round(time.perf_counter() - imports_started, 3))

        if parallel.world_size() == 1 and (processes := parallel.processes_for(request)) > 1:
            # Every rank must draw the same noise: the seed is fixed here when the request has none
            # (the one of the run that left a checkpoint, if any).
            seed = request.seed if request.seed is not None else checkpoint_seed(request) or random.randrange(2**32)
            command = [*(sys.argv[1:] if argv is None else argv), "--base_seed", str(seed)]
            result = parallel.launch(command, processes, request.task_id)
        else:
            if not parallel.is_main():  # only rank 0 reports progress
                reporter = ProgressReporter(request.task_id, Reporting())
            result = run(request, reporter, timings)
    except RunnerError as e:
        result = failure(task_id, e, e)
    except Exception as e:  # noqa: BLE001 - every failure must end with a result
        if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
            result = failure(task_id, OutOfGpuMemory(f"out of GPU memory: {e}"), e)
        else:
            log.exception("unexpected failure")
            result = failure(task_id, RunnerError(f"{type(e).__name__}: {e}"), e)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one rank of several: the launcher reports the outcome
        from videogen_runner import parallel

        parallel.hand_over(result)
        return result.exit_code
    if reporter is not None:
        reporter.finish(result)
    write_termination_message(termination_path, result)
    print(result.model_dump_json(exclude_none=True), flush=True)
    return result.exit_code


def checkpoint_seed(request: GenerationRequest) -> int | None:
    from videogen_runner import checkpoint, storage

    store = checkpoint.store_for(request, lambda: storage.s3_client(request.output))
    return checkpoint.saved_seed(store, request) if store else None


def reporter_for(doc: dict) -> ProgressReporter | None:
    """A reporter even for an invalid request, so that Redis consumers learn why it failed."""
    try:
        reporting = Reporting.model_validate(doc.get("reporting", {}))
    except ValidationError:
        return None
    task_id = doc.get("task_id")
    if not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id):
        return None
    return ProgressReporter(task_id, reporting)


def failure(task_id: str, error: RunnerError, cause: Exception) -> RunResult:
    """The failed result, with the timings the attempt spent (generate.run puts them on the cause)."""
    log.error("%s: %s", error.reason, error.message)
    return RunResult(task_id=task_id, status="failed", exit_code=int(error.exit_code), reason=error.reason,
                     message=error.message, timings=getattr(cause, "timings", None) or Timings())


def write_termination_message(path: str, result: RunResult) -> None:
    try:
        Path(path).write_text(result.termination_message())
    except OSError as e:  # run by hand, outside Kubernetes
        log.debug("no termination message written to %s: %s", path, e)


if __name__ == "__main__":
    sys.exit(main())
