"""Loading a Wan2.2 diffusers pipeline from a local folder, configured by the request.

setup() of the runner: everything that happens once, before the first step.
"""

import logging
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline

from videogen_runner import attention
from videogen_runner.errors import InvalidRequest
from videogen_runner.request import GenerationRequest

log = logging.getLogger(__name__)


@dataclass
class LoadedPipeline:
    pipe: WanPipeline | WanImageToVideoPipeline
    device: torch.device
    attention_backend: str


def pipeline_class(request: GenerationRequest) -> type:
    uses_image = request.task == "i2v" or (request.task == "ti2v" and request.image is not None)
    return WanImageToVideoPipeline if uses_image else WanPipeline


def load(request: GenerationRequest) -> LoadedPipeline:
    # 1. Where and in which precision: bf16 transformers on GPU, the VAE always in fp32
    #    (diffusers' Wan docs: the VAE loses detail in half precision).
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gpus = torch.cuda.device_count()
    path = request.model.path

    # 2. Components: the VAE separately in fp32, the rest in `dtype`. Several GPUs: the experts
    #    and encoders spread over them ("balanced") instead of offloading to the CPU.
    vae = AutoencoderKLWan.from_pretrained(path, subfolder="vae", dtype=torch.float32)
    placement = {"device_map": "balanced"} if gpus > 1 and request.acceleration.offload == "none" else {}
    pipe = pipeline_class(request).from_pretrained(path, vae=vae, dtype=dtype, **placement)

    # 3. Sampling: the flow-matching UniPC solver with the request's shift.
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=request.flow_shift)

    # 4. LoRAs, into one or both experts.
    load_loras(pipe, request)

    # 5. Placement on the GPU (or offload when asked).
    if request.acceleration.offload == "model":
        pipe.enable_model_cpu_offload()
    elif request.acceleration.offload == "sequential":
        pipe.enable_sequential_cpu_offload()
    elif not placement:
        pipe.to(device)

    # 6. Attention: the fastest backend verified to run here.
    backend = attention.choose(request.acceleration.attention_backend, device, dtype)
    for transformer in (pipe.transformer, getattr(pipe, "transformer_2", None)):
        if transformer is not None:
            transformer.set_attention_backend(backend)
    log.info("loaded %s on %s (%d GPU), attention %s", request.model.preset, device, gpus, backend)
    return LoadedPipeline(pipe=pipe, device=device, attention_backend=backend)


def load_loras(pipe, request: GenerationRequest) -> None:
    """Each LoRA becomes a named adapter in the experts it targets, at its weight."""
    adapters: dict[str, tuple[list[str], list[float]]] = {"transformer": ([], []), "transformer_2": ([], [])}
    for i, lora in enumerate(request.loras):
        name = f"lora{i}"
        targets = {"both": ("transformer", "transformer_2"), "high_noise": ("transformer",),
                   "low_noise": ("transformer_2",)}[lora.experts]
        for target in targets:
            if getattr(pipe, target, None) is None:
                continue
            try:
                pipe.load_lora_weights(lora.path, adapter_name=name, load_into_transformer_2=target == "transformer_2")
            except (ValueError, KeyError, OSError) as e:
                raise InvalidRequest(f"loras[{i}]: cannot load {lora.path} into {target}: {e}") from e
            adapters[target][0].append(name)
            adapters[target][1].append(lora.weight)
    for target, (names, weights) in adapters.items():
        if names:
            getattr(pipe, target).set_adapters(names, weights)
