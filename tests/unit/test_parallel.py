"""The multi-GPU launcher: ranks get their environment, and the run's result is the cause's."""

import sys

import pytest

from videogen_runner.parallel import cfg_groups, cfg_rank, launch
from videogen_runner.request import GenerationRequest

# A stand-in rank: exits with the code given for its rank ("code0,code1", argv[1]); a rank that
# exits 0 or 12 leaves a result as the runner does, other codes die without one.
WORKER = (sys.executable, "-c", """
import os, sys, time
from videogen_runner.result import RunResult
codes = sys.argv[1].split(","); rank = int(os.environ["RANK"]); code = int(codes[rank])
assert os.environ["WORLD_SIZE"] == str(len(codes))
time.sleep(float(sys.argv[2]) * rank if len(sys.argv) > 2 else 0.3 * rank)
if code in (0, 12):
    status = "succeeded" if code == 0 else "failed"
    reason = None if code == 0 else "OutOfGpuMemory"
    result = RunResult(task_id="t", status=status, exit_code=code, reason=reason, message=f"rank {rank}")
    open(os.environ["VIDEOGEN_RESULT_FILE"], "w").write(result.model_dump_json())
sys.exit(code)
""")


def test_all_ranks_succeed_with_rank_zeros_result():
    result = launch(["0,0,0"], 3, "t", WORKER)
    assert (result.exit_code, result.message) == (0, "rank 0")


def test_a_failing_rank_is_the_cause_and_the_others_are_stopped():
    slow_rank_zero = (*WORKER[:2], WORKER[2].replace("0.3 * rank", "(60 if rank == 0 else 0)"))
    result = launch(["0,12"], 2, "t", slow_rank_zero)  # rank 0 would run for a minute
    assert (result.exit_code, result.reason, result.message) == (12, "OutOfGpuMemory", "rank 1")


def test_a_rank_that_dies_without_a_result_still_gives_its_code():
    result = launch(["20,0"], 2, "t", WORKER)
    assert (result.exit_code, result.status, result.reason) == (20, "failed", "InternalError")


@pytest.mark.parametrize("cfg_parallel, guidance, processes, groups", [
    (True, 4.0, 8, 2),   # 2 halves of 4 (each splits the sequence 4 ways)
    (True, 4.0, 2, 2),   # one process per pass, nothing split
    (True, 4.0, 3, 1),   # an odd count cannot be halved: Ulysses over all 3
    (True, 1.0, 8, 1),   # no guidance (distilled): one pass, Ulysses over all 8
    (False, 4.0, 8, 1),
    (True, 4.0, 1, 1),
])
def test_the_guidance_passes_split_only_between_two_even_halves(monkeypatch, cfg_parallel, guidance, processes,
                                                                 groups):
    monkeypatch.setenv("WORLD_SIZE", str(processes))
    request = GenerationRequest(task_id="t", model={"preset": "t2v-a14b", "path": "/models/a14b"}, prompt="p",
                                guidance_scale=guidance, acceleration={"cfg_parallel": cfg_parallel})
    assert cfg_groups(request) == groups


def test_rank_zero_computes_the_conditional_pass_and_each_half_holds_consecutive_ranks(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    passes = []
    for rank in range(8):
        monkeypatch.setenv("RANK", str(rank))
        passes.append(cfg_rank(2))
    assert passes == [0, 0, 0, 0, 1, 1, 1, 1]
