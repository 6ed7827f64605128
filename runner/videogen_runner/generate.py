"""One generation, from request to MP4 in S3, top to bottom.

Every stage is reported to Redis (best effort) and timed; every failure is a RunnerError
whose exit code says whether a retry could help, and carries the timings it did spend. No GPU
work is thrown away: the denoising state is checkpointed as it goes, a stopped run saves its
latest, and a later attempt resumes from it or, when only the upload failed, only uploads.
"""

import random
import time
from pathlib import Path

from videogen_runner import checkpoint, export, model_folder, parallel, pipeline, storage
from videogen_runner.errors import RunnerError
from videogen_runner.progress import ProgressReporter
from videogen_runner.request import GenerationRequest
from videogen_runner.result import RunResult, Timings, VideoOutput


def run(request: GenerationRequest, reporter: ProgressReporter, timings: Timings | None = None) -> RunResult:
    started = time.perf_counter()
    timings = timings or Timings()
    try:
        return generate(request, reporter, timings, started)
    except Exception as error:
        timings.total = round(time.perf_counter() - started, 3)
        error.timings = timings  # what this attempt spent goes into its result
        raise


def generate(request: GenerationRequest, reporter: ProgressReporter, timings: Timings, started: float) -> RunResult:
    # Every rank of a multi-GPU run reads the task's checkpoints; rank 0 alone writes them.
    store = checkpoint.store_for(request, lambda: storage.s3_client(request.output))
    main = parallel.is_main()
    path = export.destination(request.output.path, request.task_id) if main else None  # writable, or fail now

    # 1. An earlier attempt that finished the video but could not upload it: only upload.
    kept = checkpoint.kept_video(store, request, path) if store else None
    if kept is not None:
        video, seed = kept
        if not main:
            return RunResult(task_id=request.task_id, status="succeeded", exit_code=0, seed=seed, timings=timings)
        return finish(request, reporter, timings, started, video, seed, store, attention_backend=None,
                      resumed_from=request.steps)

    # 2. Check what needs the filesystem or network, before the expensive load (the output's folder
    #    was tried above).
    model_folder.check(request)
    image = storage.fetch_image(request.image, request.output) if request.image else None

    # 3. Load the pipeline (weights, scheduler, LoRAs, attention backend).
    reporter.stage("loading")
    with stopwatch(timings, "load"):
        loaded = pipeline.load(request)

    # 4. Encode the prompt, denoise (after the newest checkpoint's step, if any), decode.
    resume = checkpoint.load(store, request, loaded.device, pipeline.latents_shape(loaded, request)) if store else None
    seed = resume.seed if resume else request.seed if request.seed is not None else random.randrange(2**32)
    saver = checkpoint.Checkpointer(store, checkpoint.fingerprint(request), seed,
                                    request.checkpoints.every_seconds) if store and main else None
    # The MP4 is encoded while the VAE decodes (export.py); rank 0 alone writes it.
    writer = export.Mp4Writer(path, request.fps) if main else None
    try:
        frames = pipeline.generate_frames(loaded, request, seed, image, timings, reporter.stage, reporter.step,
                                          resume=resume, on_state=saver.offer if saver else no_state,
                                          release_text_encoder=True,  # one video per process
                                          on_frames=writer.add if writer else None)
    except BaseException:  # a stop (SIGTERM) or a failure: what was denoised is saved for the next attempt
        if saver:
            saver.save_latest()
        if writer:
            writer.abort()
        raise
    finally:
        if saver:
            saver.close()

    if not main:  # the other ranks of a multi-GPU run only compute
        return RunResult(task_id=request.task_id, status="succeeded", exit_code=0, seed=seed,
                         attention_backend=loaded.attention_backend, timings=timings)

    # 5. Finish the H.264 MP4 at the requested fps: what the encoder has left once decoding ends.
    reporter.stage("exporting")
    with stopwatch(timings, "export"):
        if writer.shape is None:  # nothing was streamed (a tiled decode)
            writer.add(frames)
        count, height, width = writer.close()
    video = VideoOutput(path=str(path), bytes=path.stat().st_size, sha256=export.sha256_of(path),
                        frames=count, width=width, height=height, fps=request.fps)
    return finish(request, reporter, timings, started, video, seed, store, loaded.attention_backend,
                  resume.steps_done if resume else None)


def finish(request: GenerationRequest, reporter: ProgressReporter, timings: Timings, started: float,
           video: VideoOutput, seed: int, store, attention_backend: str | None,
           resumed_from: int | None) -> RunResult:
    """6. Upload to S3 when a bucket is given (a failed upload keeps the MP4 for the next attempt),
    then remove the task's checkpoints."""
    if request.output.bucket:
        reporter.stage("uploading")
        metadata = {"task-id": request.task_id, "sha256": video.sha256, "seed": str(seed)}
        try:
            with stopwatch(timings, "upload"):
                video.uri = storage.upload(Path(video.path), request.output, request.object_key(seed), metadata,
                                           on_retry=reporter.retrying_upload)
        except RunnerError:
            if store:
                checkpoint.keep_video(store, request, Path(video.path), video, seed)
            raise
    if store:
        checkpoint.remove(store)
    timings.total = round(time.perf_counter() - started, 3)
    return RunResult(
        task_id=request.task_id, status="succeeded", exit_code=0, seed=seed, resumed_from_step=resumed_from,
        attention_backend=attention_backend, output=video, timings=timings,
    )


def no_state(steps_done, latents, solver, expert) -> None:
    """Without a store, the denoising state goes nowhere."""


class stopwatch:
    """Adds the seconds spent in a `with` block to one field of Timings."""

    def __init__(self, timings: Timings, field: str):
        self.timings, self.field = timings, field

    def __enter__(self):
        self.started = time.perf_counter()

    def __exit__(self, *exc):
        setattr(self.timings, self.field, round(time.perf_counter() - self.started, 3))
