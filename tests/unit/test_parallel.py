"""The multi-GPU launcher: ranks get their environment, and the pod's exit code is the cause's."""

import sys

from videogen_runner.parallel import launch

# A stand-in worker: exits with the code given for its rank in argv ("rank0,rank1").
WORKER = (sys.executable, "-c", "import os, sys, time; codes = sys.argv[1].split(','); "
          "rank = int(os.environ['RANK']); assert os.environ['WORLD_SIZE'] == str(len(codes)); "
          "time.sleep(0.3 * rank); sys.exit(int(codes[rank]))")


def test_all_ranks_succeed():
    assert launch(["0,0,0"], 3, WORKER) == 0


def test_a_failing_rank_gives_its_code_and_stops_the_others():
    assert launch(["0,12"], 2, (*WORKER[:2], WORKER[2].replace("time.sleep(0.3 * rank)",
                                                                 "time.sleep(60 if rank == 0 else 0)"))) == 12


def test_the_first_failure_is_the_cause():
    assert launch(["20,11"], 2, WORKER) == 20  # rank 1 would fail 0.3 s later
