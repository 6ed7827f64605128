"""The flow-matching solver of a request: Wan's UniPC, or Euler steps for step-distilled LoRAs."""

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from videogen_runner.request import GenerationRequest


class EvenEulerScheduler(FlowMatchEulerDiscreteScheduler):
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
    return UniPCMultistepScheduler.from_config(config, flow_shift=request.flow_shift)
