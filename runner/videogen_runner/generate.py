"""One generation, from request to MP4 in S3, top to bottom.

Every stage is reported to Redis (best effort) and timed; every failure is a RunnerError
whose exit code says whether a retry could help.
"""

import logging
import random
import time
from pathlib import Path

import torch

from videogen_runner import export, model_folder, pipeline, storage
from videogen_runner.progress import ProgressReporter
from videogen_runner.request import GenerationRequest
from videogen_runner.result import RunResult, Timings, VideoOutput

log = logging.getLogger(__name__)
MAX_SEQUENCE_LENGTH = 512  # UMT5 tokens, as Wan2.2 was trained


def run(request: GenerationRequest, reporter: ProgressReporter) -> RunResult:
    started = time.perf_counter()
    timings = Timings()
    seed = request.seed if request.seed is not None else random.randrange(2**32)
    key = request.object_key(seed) if request.output.bucket else None

    # 1. Check what needs the filesystem or network, before the expensive load.
    model_folder.check(request)
    image = storage.fetch_image(request.image, request.output) if request.image else None

    # 2. Load the pipeline (weights, scheduler, LoRAs, attention backend).
    reporter.stage("loading")
    with stopwatch(timings, "load"):
        loaded = pipeline.load(request)
    pipe = loaded.pipe

    # 3. Encode the prompts once, so the stage is visible and timed on its own.
    reporter.stage("encoding")
    guided = request.guidance_scale > 1.0 or (request.guidance_scale_2 or 0.0) > 1.0
    with stopwatch(timings, "encode"), torch.inference_mode():
        prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            do_classifier_free_guidance=guided,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
        )

    # 4. Denoise, then decode with the VAE (the pipeline's last act). The step callback
    #    reports progress and marks where decoding starts.
    reporter.stage("denoising")
    denoise_started = time.perf_counter()
    marks = {}

    def on_step_end(_pipe, i, _t, callback_kwargs):
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        reporter.step(i + 1, request.steps)
        if i + 1 == request.steps:
            marks["decode_started"] = time.perf_counter()
            reporter.stage("decoding")
        return callback_kwargs

    call = dict(
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_prompt_embeds,
        height=request.height,
        width=request.width,
        num_frames=request.frames,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance_scale,
        # A CPU generator draws the same noise on any device: a seed means one video.
        generator=torch.Generator(device="cpu").manual_seed(seed),
        output_type="np",
        callback_on_step_end=on_step_end,
    )
    if request.guidance_scale_2 is not None:
        call["guidance_scale_2"] = request.guidance_scale_2
    if image is not None:
        call["image"] = image
    with torch.inference_mode():
        frames = pipe(**call).frames
    finished = time.perf_counter()
    timings.denoise = round(marks["decode_started"] - denoise_started, 3)
    timings.decode = round(finished - marks["decode_started"], 3)

    # 5. Export one uint8 video as H.264 MP4 at the requested fps.
    reporter.stage("exporting")
    path = Path(request.output.path)
    with stopwatch(timings, "export"):
        export.write_mp4(frames, path, request.fps)
    video = VideoOutput(
        path=str(path), bytes=path.stat().st_size, sha256=export.sha256_of(path),
        frames=frames.shape[1], width=frames.shape[3], height=frames.shape[2], fps=request.fps,
    )

    # 6. Upload to S3 when a bucket is given.
    if key is not None:
        reporter.stage("uploading")
        with stopwatch(timings, "upload"):
            metadata = {"task-id": request.task_id, "sha256": video.sha256, "seed": str(seed)}
            video.uri = storage.upload(path, request.output, key, metadata)

    timings.total = round(time.perf_counter() - started, 3)
    return RunResult(
        task_id=request.task_id, status="succeeded", exit_code=0, seed=seed,
        attention_backend=loaded.attention_backend, output=video, timings=timings,
    )


class stopwatch:
    """Adds the seconds spent in a `with` block to one field of Timings."""

    def __init__(self, timings: Timings, field: str):
        self.timings, self.field = timings, field

    def __enter__(self):
        self.started = time.perf_counter()

    def __exit__(self, *exc):
        setattr(self.timings, self.field, round(time.perf_counter() - self.started, 3))
