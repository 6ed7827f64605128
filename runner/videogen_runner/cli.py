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
import typing
import uuid
from pathlib import Path

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from videogen_runner.errors import InvalidRequest, OutOfGpuMemory, RunnerError, Terminated
from videogen_runner.model_folder import infer_preset, read_ahead
from videogen_runner.presets import PRESETS
from videogen_runner.progress import ProgressReporter
from videogen_runner.request import TASK_ID, GenerationRequest, Reporting, describe
from videogen_runner.result import RunResult, Timings

log = logging.getLogger("videogen_runner")
TERMINATION_MESSAGE_PATH = os.environ.get("TERMINATION_MESSAGE_PATH", "/dev/termination-log")
# The flags of each request field: generate_final.py's and Wan's generate.py's names first, then
# diffusers-style ones. Types and help come from the request model, the one declaration.
FLAGS = {
    "task_id": ("--task_id",), "prompt": ("--prompt",), "negative_prompt": ("--negative_prompt",),
    "image": ("--image",), "width": ("--width",), "height": ("--height",),
    "frames": ("--frame_num", "--num_frames", "--frames"), "fps": ("--fps",),
    "steps": ("--sample_steps", "--num_inference_steps", "--steps"),
    "guidance_scale": ("--sample_guide_scale", "--guidance_scale"), "guidance_scale_2": ("--guidance_scale_2",),
    "flow_shift": ("--sample_shift", "--flow_shift"), "sampler": ("--sample_solver", "--sampler"),
    "seed": ("--base_seed", "--seed"),
    "output.path": ("--output_path",), "output.bucket": ("--s3_bucket",), "output.key": ("--s3_key",),
    "output.endpoint_url": ("--s3_endpoint_url",), "output.region": ("--s3_region",),
    "reporting.redis_url": ("--redis_url",),
    "acceleration.attention_backend": ("--attention_backend",), "acceleration.offload": ("--offload",),
}


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise InvalidRequest(f"command line: {message}")


def request_field(path: str) -> FieldInfo:
    """The request model's declaration of a dotted field (output.key)."""
    model, *parents, leaf = (GenerationRequest, *path.split("."))
    for parent in parents:
        model = model.model_fields[parent].annotation
    return model.model_fields[leaf]


def flag_type(field: FieldInfo):
    """int or float for numeric fields (also when optional), else str: the model judges the rest."""
    kinds = typing.get_args(field.annotation) or (field.annotation,)
    return next((kind for kind in (int, float) if kind in kinds), str)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="videogen-runner", description="Generate one Wan2.2 video with diffusers.")
    p.add_argument("--request", help="JSON request file (default: the VIDEOGEN_REQUEST variable)")
    p.add_argument("--model_path", help=request_field("model.path").description)
    p.add_argument("--model", "--preset", dest="preset", choices=sorted(PRESETS),
                   help="model family (default: inferred from the model folder)")
    p.add_argument("--task", help="t2v, i2v or ti2v; Wan's names (t2v-A14B, ti2v-5B, …) also pick the model")
    p.add_argument("--size", help="WIDTH*HEIGHT, as in Wan's generate.py")
    for path, flags in FLAGS.items():
        field = request_field(path)
        p.add_argument(*flags, dest=path, metavar=path.rpartition(".")[2].upper(), type=flag_type(field),
                       help=field.description)
    p.add_argument("--lora", action="append", metavar="PATH[:WEIGHT]", help="repeatable")
    p.add_argument("--redis_host")
    p.add_argument("--redis_port", type=int, default=6379)
    p.add_argument("--redis_db", type=int, default=0)
    p.add_argument("--termination-message-path", default=TERMINATION_MESSAGE_PATH)
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

    options = vars(args)
    if args.task and args.task.lower() in PRESETS:  # Wan's task names are the model families'
        args.preset, args.task = args.task.lower(), None
    if args.size:
        try:
            options["width"], options["height"] = (int(v) for v in args.size.lower().replace("x", "*").split("*"))
        except ValueError:
            raise InvalidRequest(f"size: {args.size!r} is not WIDTH*HEIGHT") from None
    put("task", args.task)
    for path in FLAGS:
        if path != "reporting.redis_url":  # below: it wins over --redis_host
            put(path, options[path])
    doc.setdefault("task_id", f"run-{uuid.uuid4().hex[:12]}")
    put("model.path", args.model_path)
    put("model.preset", args.preset)
    if doc.get("model", {}).get("path") and not doc["model"].get("preset"):
        put("model.preset", infer_preset(doc["model"]["path"]))
    if args.lora:
        doc["loras"] = [lora_flag(value) for value in args.lora]
    if args.redis_host:
        put("reporting.redis_url", f"redis://{args.redis_host}:{args.redis_port}/{args.redis_db}")
    put("reporting.redis_url", options["reporting.redis_url"])
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
    termination_path = TERMINATION_MESSAGE_PATH
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
