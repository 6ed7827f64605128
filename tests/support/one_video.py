"""One video's frames from the runner's load() and generate_frames(), in this process or as one
rank of several (started by the runner's own launcher): `python -m tests.support.one_video
REQUEST.json OUT.npy`. Rank 0 saves the frames; every rank hands its result to the launcher."""

import sys
from pathlib import Path

import numpy as np

from videogen_runner import parallel, pipeline
from videogen_runner.request import GenerationRequest
from videogen_runner.result import RunResult, Timings


def main(request_file: str, out: str) -> None:
    request = GenerationRequest.model_validate_json(Path(request_file).read_text())
    loaded = pipeline.load(request)
    frames = pipeline.generate_frames(loaded, request, request.seed, None, Timings())
    if parallel.is_main():
        np.save(out, frames.float().cpu().numpy())
    if parallel.world_size() > 1:
        parallel.hand_over(RunResult(task_id=request.task_id, status="succeeded", exit_code=0,
                                     attention_backend=loaded.attention_backend))


if __name__ == "__main__":
    main(*sys.argv[1:])
