"""The flow-matching solver of a request: Wan's UniPC, or Euler steps for step-distilled LoRAs.

Both can hand over their state after a step and take it back in another process, so that an
interrupted generation resumes where it stopped and ends with the same video (checkpoint.py).
"""

import copy

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from videogen_runner.request import GenerationRequest


class Resumable:
    """A scheduler whose multistep state can be saved after a step and restored before the next.

    The pipeline loops over `scheduler.timesteps` as set_timesteps() leaves them, so a resumed
    run hands it the steps still to do; at the first of them the solver gets back the full
    schedule, its position and its history (model outputs of earlier steps, the last sample),
    so that it computes what it would have computed without the interruption."""

    STATE = ("model_outputs", "timestep_list", "lower_order_nums", "last_sample", "this_order")
    _resume: tuple[int, dict] | None = None

    def state(self) -> dict:
        """The solver's history after the last step (lists copied: the solver shifts them in place)."""
        return {name: copy.copy(getattr(self, name)) for name in self.STATE if hasattr(self, name)}

    def resume_after(self, steps_done: int, state: dict) -> None:
        self._resume = (steps_done, state)

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        if self._resume:
            self._schedule = (self.timesteps, self.sigmas)
            self.timesteps = self.timesteps[self._resume[0]:]  # what the pipeline will loop over

    def step(self, model_output, timestep, sample, *args, **kwargs):
        if self._resume:
            (steps_done, state), self._resume = self._resume, None
            timesteps, sigmas = self._schedule
            # As many steps of the full schedule kept before the current one as the solver looks
            # back (its order): its position and the sigmas it reads are then what they were.
            back = min(steps_done, getattr(self.config, "solver_order", 1))
            self.timesteps, self.sigmas = timesteps[steps_done - back:], sigmas[steps_done - back:]
            self._step_index = back
            for name, value in state.items():
                setattr(self, name, value)
        return super().step(model_output, timestep, sample, *args, **kwargs)


class ResumableUniPC(Resumable, UniPCMultistepScheduler):
    """Wan's own solver (UniPC, flow prediction)."""


class EvenEulerScheduler(Resumable, FlowMatchEulerDiscreteScheduler):
    """Euler steps at N sigmas evenly spaced from 1 towards 0, then shifted: the schedule that Wan's
    step-distillation LoRAs are trained for (4 steps, shift 5: t = 1000, 937.5, 833.3, 625), where
    diffusers' default spaces N sigmas from 1 to its (shifted) minimum. Latents stay in fp32 between
    steps, as with UniPC, whatever the transformer's dtype."""

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, sigmas=None, **kwargs):
        if sigmas is None:
            sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
        super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, **kwargs)

    def step(self, model_output: torch.Tensor, *args, **kwargs):
        return super().step(model_output.float(), *args, **kwargs)


def scheduler(config: dict, request: GenerationRequest):
    """A new scheduler for the pipeline whose scheduler config is `config`, at the request's shift."""
    if request.sampler == "euler":
        return EvenEulerScheduler(shift=request.flow_shift)
    return ResumableUniPC.from_config(config, flow_shift=request.flow_shift)
