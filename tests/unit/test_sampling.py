"""The solver a request gets, and the Euler schedule of step-distilled LoRAs."""

import pytest
import torch
from diffusers import UniPCMultistepScheduler

from videogen_runner import sampling
from videogen_runner.request import GenerationRequest

WAN_UNIPC = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "num_train_timesteps": 1000,
             "flow_shift": 3.0}


def request(**fields):
    return GenerationRequest(task_id="s", model={"preset": "t2v-a14b", "path": "/m"}, prompt="a fox", **fields)


def test_unipc_at_the_requested_shift_by_default():
    solver = sampling.scheduler(WAN_UNIPC, request(flow_shift=12.0))
    assert isinstance(solver, UniPCMultistepScheduler) and solver.config.flow_shift == 12.0


def test_euler_steps_where_four_step_distillation_expects_them():
    solver = sampling.scheduler(WAN_UNIPC, request(sampler="euler", steps=4, flow_shift=5.0))
    solver.set_timesteps(4)
    # lightx2v's denoising_step_list [1000, 750, 500, 250], shifted by 5.
    assert solver.timesteps.tolist() == pytest.approx([1000.0, 937.5, 833.333, 625.0], abs=1e-2)
    assert solver.sigmas[-1] == 0.0  # the last step lands on the clean sample


def test_euler_keeps_fp32_latents_whatever_the_model_returns():
    solver = sampling.scheduler(WAN_UNIPC, request(sampler="euler"))
    solver.set_timesteps(4)
    latents = torch.randn(1, 4, 2, 2)
    out = solver.step(torch.randn(1, 4, 2, 2, dtype=torch.bfloat16), solver.timesteps[0], latents).prev_sample
    assert out.dtype == torch.float32
