"""Several GPUs for one video: one process per GPU, the token sequence split among them by
Ulysses context parallelism (diffusers' ContextParallelConfig), all-to-all over the heads.

The runner launches its own workers (rather than asking for torchrun) so that the pod's exit code
stays the runner's own: permanent and retryable failures must survive the launcher. Rank 0
reports progress, writes the MP4, uploads it and leaves the termination message; the other
ranks only compute.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import torch

from videogen_runner import model_folder
from videogen_runner.request import GenerationRequest


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def processes_for(request: GenerationRequest) -> int:
    """How many processes the video gets: as asked, else one per visible GPU; always a divisor
    of the attention heads (each process takes whole heads)."""
    gpus = torch.cuda.device_count()  # diffusers splits sequences only across GPUs
    wanted = min(request.acceleration.processes or gpus, gpus)
    if wanted <= 1:
        return 1
    heads = model_folder.attention_heads(request.model.path)
    return max(n for n in range(1, wanted + 1) if heads % n == 0)


RUNNER = (sys.executable, "-m", "videogen_runner")


def launch(argv: list[str], processes: int, program: tuple[str, ...] = RUNNER) -> int:
    """Runs `processes` copies of the runner as ranks; returns the exit code of the pod."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workers = []
    for index in range(processes):
        env = {**os.environ, "RANK": str(index), "LOCAL_RANK": str(index), "WORLD_SIZE": str(processes),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        workers.append(subprocess.Popen([*program, *argv], env=env))

    def forward(signum, frame):
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    # A failed rank leaves the others waiting in a collective: stop them and keep the first
    # failure's exit code (rank 0's when it is among them), as 128+N for a signal.
    while True:
        failed = [w for w in workers if w.poll() not in (None, 0)]
        if failed:
            cause = workers[0] if workers[0] in failed else failed[0]
            forward(signal.SIGTERM, None)
            for worker in workers:
                worker.wait()
            return cause.returncode if cause.returncode > 0 else 128 - cause.returncode
        if all(w.returncode == 0 for w in workers):
            return 0
        time.sleep(0.2)


def init(device_type: str) -> torch.device:
    """Joins the process group; each rank takes its own GPU."""
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return torch.device(device_type, torch.cuda.current_device()) if device_type == "cuda" else torch.device("cpu")


def split_sequence(transformers: list, processes: int) -> None:
    from diffusers import ContextParallelConfig

    for transformer in transformers:
        if transformer._parallel_config is None:  # already split (configured before, same process)
            transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=processes))
