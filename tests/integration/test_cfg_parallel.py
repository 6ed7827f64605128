"""CFG-parallel on the CPU: two processes (gloo), started by the runner's own launcher, each
computing one guidance pass of a tiny real model, make the video one process makes, bit for bit.
(Splitting the sequence as well needs GPUs: diffusers' context parallelism takes one device per
process; bench/multi_gpu_check.py checks that on a GPU machine.)"""

import subprocess
import sys

import numpy as np

from videogen_runner import parallel
from videogen_runner.request import GenerationRequest


def video(tmp_path, name, request, processes):
    (tmp_path / f"{name}.json").write_text(request.model_dump_json())
    out = tmp_path / f"{name}.npy"
    program = (sys.executable, "-m", "tests.support.one_video", str(tmp_path / f"{name}.json"), str(out))
    if processes == 1:
        subprocess.run(program, check=True)
    else:
        result = parallel.launch([], processes, request.task_id, program)
        assert result.exit_code == 0, result
    return np.load(out)


def test_two_processes_one_pass_each_make_the_video_of_one_process(tiny_models, tmp_path):
    def request(cfg_parallel):  # two experts, a guidance scale each
        return GenerationRequest(task_id="cfg", model={"preset": "t2v-a14b", "path": str(tiny_models["t2v-a14b"])},
                                 prompt="a red fox", negative_prompt="blurry", width=64, height=64, frames=5,
                                 steps=4, seed=3, guidance_scale=4.0, guidance_scale_2=3.0,
                                 acceleration={"cfg_parallel": cfg_parallel})

    one = video(tmp_path, "one", request(False), 1)
    two = video(tmp_path, "two", request(True), 2)
    assert np.array_equal(one, two)
    # The two passes really differ: without the negative prompt's pass, the video is another one.
    unguided = video(tmp_path, "unguided", request(False).model_copy(update={"guidance_scale": 1.0}), 1)
    assert not np.array_equal(one, unguided)
