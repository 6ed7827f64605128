"""Several GPUs for one video: one process per GPU, the token sequence split among them by
Ulysses context parallelism (diffusers' ContextParallelConfig), all-to-all over the heads. With
`cfg_parallel`, the two passes of classifier-free guidance run on two halves of the processes,
each half splitting the sequence among its own; the halves exchange their predictions after each
forward (a mesh of cfg × ring × ulysses, ring unused).

The runner launches its own workers (rather than asking for torchrun) so that the pod's exit code
stays the runner's own: permanent and retryable failures must survive the launcher. Rank 0
reports progress, writes the MP4 and uploads it; the other ranks only compute. Each rank hands its
result to the launcher, which writes the termination message, the final Redis state and the
exit code.
"""

import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from videogen_runner import model_folder
from videogen_runner.errors import ExitCode
from videogen_runner.request import GenerationRequest
from videogen_runner.result import RunResult


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


RESULT_FILE = "VIDEOGEN_RESULT_FILE"  # where a rank leaves its result for the launcher
STOP_GRACE_S = 30.0


def launch(argv: list[str], processes: int, task_id: str, program: tuple[str, ...] = RUNNER) -> RunResult:
    """Runs `processes` copies of the runner as ranks and returns the run's result: rank 0's, or
    the first failing rank's (the cause; the others were stopped because of it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = Path(tempfile.mkdtemp(prefix="videogen-ranks-"))
    workers = []
    for index in range(processes):
        env = {**os.environ, "RANK": str(index), "LOCAL_RANK": str(index), "WORLD_SIZE": str(processes),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), RESULT_FILE: str(folder / f"{index}.json")}
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
        if failed or all(w.returncode == 0 for w in workers):
            break
        time.sleep(0.2)
    cause = workers[0] if not failed or workers[0] in failed else failed[0]
    if failed:
        forward(signal.SIGTERM, None)
        for worker in workers:
            try:
                worker.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:  # stuck in a collective: SIGTERM cannot reach Python
                worker.kill()
                worker.wait()
    return result_of(folder / f"{workers.index(cause)}.json", cause.returncode, task_id)


def result_of(path: Path, returncode: int, task_id: str) -> RunResult:
    """The rank's own result, or one made from its exit code when it died without writing it."""
    try:
        return RunResult.model_validate_json(path.read_text())
    except (OSError, ValueError):
        code = returncode if returncode >= 0 else 128 - returncode
        reason = "Terminated" if code == ExitCode.TERMINATED else "InternalError"
        return RunResult(task_id=task_id, status="failed", exit_code=code, reason=reason,
                         message=f"a runner process exited with code {code} without a result")


def hand_over(result: RunResult) -> None:
    """A rank's result, for its launcher (which reports the pod's outcome)."""
    Path(os.environ[RESULT_FILE]).write_text(result.model_dump_json())


def init(device_type: str) -> torch.device:
    """Joins the process group; each rank takes its own GPU."""
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return torch.device(device_type, torch.cuda.current_device()) if device_type == "cuda" else torch.device("cpu")


def cfg_groups(request: GenerationRequest) -> int:
    """2 when the two guidance passes run on separate halves of the processes, else 1. Diffusers
    guides when guidance_scale > 1 (then with guidance_scale_2 too, for the low-noise expert)."""
    guided = request.guidance_scale > 1.0
    return 2 if request.acceleration.cfg_parallel and guided and world_size() % 2 == 0 else 1


def cfg_rank(groups: int) -> int:
    """Which pass this process computes: 0 the conditional one (rank 0's), 1 the unconditional."""
    return rank() // (world_size() // groups)


@functools.cache
def mesh(device_type: str, groups: int):
    """The processes as cfg × ring × ulysses (row-major: a cfg half holds consecutive ranks)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device_type, (groups, 1, world_size() // groups), mesh_dim_names=("cfg", "ring", "ulysses"))


def split_sequence(transformers: list, device_type: str, groups: int) -> None:
    """Each cfg half splits the sequence among its processes (nothing to split with one)."""
    from diffusers import ContextParallelConfig

    ulysses = world_size() // groups
    for transformer in transformers:
        if ulysses > 1 and transformer._parallel_config is None:  # not split already (same process)
            transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=ulysses,
                                                                        mesh=mesh(device_type, groups)))


def both_passes(prediction: torch.Tensor, device_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditional, unconditional): this process's prediction and its partner's in the other half."""
    parts = [torch.empty_like(prediction) for _ in range(2)]
    torch.distributed.all_gather(parts, prediction.contiguous(), group=mesh(device_type, 2)["cfg"].get_group())
    return parts[0], parts[1]
