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


def denoise(solver, steps: int, begin: int = 0, stop: int | None = None, latents=None, set_begin=True):
    """A pipeline's loop with a fixed stand-in for the model: the output depends on the sample and
    the timestep, as a transformer's does."""
    solver.set_timesteps(steps)
    if set_begin:  # WanPipeline sets it; WanImageToVideoPipeline leaves it to the solver
        solver.set_begin_index(0)
    latents = torch.linspace(-1, 1, 32).reshape(1, 2, 4, 4) if latents is None else latents
    for i, t in enumerate(solver.timesteps):
        if stop is not None and begin + i == stop:
            break
        model_output = torch.sin(latents * 3.0 + t / 1000.0)
        latents = solver.step(model_output, t, latents, return_dict=False)[0]
    return latents, solver.state()


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
@pytest.mark.parametrize("set_begin", [True, False])
@pytest.mark.parametrize("interrupted_after", [1, 2, 7, 9])
def test_a_resumed_solver_ends_bit_identical(sampler, set_begin, interrupted_after):
    settings = request(sampler=sampler, steps=10, flow_shift=5.0)
    whole, _ = denoise(sampling.scheduler(WAN_UNIPC, settings), 10, set_begin=set_begin)
    partial, state = denoise(sampling.scheduler(WAN_UNIPC, settings), 10, stop=interrupted_after, set_begin=set_begin)
    resumed = sampling.scheduler(WAN_UNIPC, settings)  # a new process: a new solver
    resumed.resume_after(interrupted_after, state)
    final, _ = denoise(resumed, 10, begin=interrupted_after, latents=partial, set_begin=set_begin)
    assert torch.equal(final, whole)
    fresh, _ = denoise(sampling.scheduler(WAN_UNIPC, settings), 10 - interrupted_after, latents=partial)
    assert sampler == "euler" or not torch.equal(fresh, whole)  # restarting the solver is not the same
