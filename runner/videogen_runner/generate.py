"""One generation, from request to MP4 in S3, top to bottom.

Every stage is reported to Redis (best effort) and timed; every failure is a RunnerError
whose exit code says whether a retry could help.
"""

import random
import time
from pathlib import Path

from videogen_runner import export, model_folder, parallel, pipeline, storage
from videogen_runner.progress import ProgressReporter
from videogen_runner.request import GenerationRequest
from videogen_runner.result import RunResult, Timings, VideoOutput


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

    # 3. Encode the prompt, denoise, decode.
    frames = pipeline.generate_frames(loaded, request, seed, image, timings, reporter.stage, reporter.step)

    if not parallel.is_main():  # the other ranks of a multi-GPU run only compute
        return RunResult(task_id=request.task_id, status="succeeded", exit_code=0, seed=seed,
                         attention_backend=loaded.attention_backend, timings=timings)

    # 4. Export one uint8 video as H.264 MP4 at the requested fps.
    reporter.stage("exporting")
    path = Path(request.output.path)
    with stopwatch(timings, "export"):
        frames = export.to_uint8_video(frames)
        export.write_mp4(frames, path, request.fps)
    video = VideoOutput(
        path=str(path), bytes=path.stat().st_size, sha256=export.sha256_of(path),
        frames=frames.shape[0], width=frames.shape[2], height=frames.shape[1], fps=request.fps,
    )

    # 5. Upload to S3 when a bucket is given.
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
