"""The multi-GPU launcher: ranks get their environment, and the run's result is the cause's."""

import sys

from videogen_runner.parallel import launch

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
