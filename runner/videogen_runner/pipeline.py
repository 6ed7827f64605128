"""The model side of the runner, in two verbs: load() once, then generate_frames() per video.

What loads once (the weights, text encoder, VAE, attention backend, compilation, the opt-in
accelerations) is never changed by a video; what a video sets (its sampler and shift, whether
timesteps are per token, its LoRAs in a warm runner, its guidance) is applied inside
generate_frames and undone when it ends, however it ends (per_video), so a runner that makes many
videos makes each as a new process would. Storage, progress and retries live elsewhere
(generate.py); the benchmark calls these same functions on full-size random-weight models, so what
it measures is what pods run.
"""

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline
from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig
from PIL import Image

from videogen_runner import attention, background_load, parallel, sampling, vae_decode
from videogen_runner.errors import InvalidRequest
from videogen_runner.presets import PRESETS
from videogen_runner.request import GenerationRequest
from videogen_runner.result import Timings

if TYPE_CHECKING:
    from videogen_runner.checkpoint import Checkpoint

log = logging.getLogger(__name__)
MAX_SEQUENCE_LENGTH = 512  # UMT5 tokens, as Wan2.2 was trained
ALIGNMENT = 64  # bytes: what torch's CPU allocator gives every tensor it allocates


@dataclass
class LoadedPipeline:
    pipe: WanPipeline | WanImageToVideoPipeline
    device: torch.device
    attention_backend: str
    scheduler_config: dict  # the model folder's, which each video's sampler starts from
    expand_timesteps: bool  # the model's own (TI2V-5B: per-token timesteps), before any video's setting
    request: GenerationRequest  # the video being made (its guidance, for CFG-parallel's hook)
    warm: bool = False  # makes many videos: LoRAs are each video's, applied and removed around it
    cfg_groups: int = 1  # 2: this process computes one of the two guidance passes (parallel.py)


def transformers_of(pipe) -> list:
    """The pipeline's transformers: one, or the A14B models' two experts."""
    experts = (pipe.transformer, getattr(pipe, "transformer_2", None))
    return list({id(t): t for t in experts if t is not None}.values())


def pipeline_class(request: GenerationRequest) -> type:
    uses_image = request.task == "i2v" or (request.task == "ti2v" and request.image is not None)
    return WanImageToVideoPipeline if uses_image else WanPipeline


def load(request: GenerationRequest, warm: bool = False) -> LoadedPipeline:
    """Reads the weights from the model folder and configures the pipeline: for the request's model
    and acceleration, and (one video per process) its LoRAs, merged; `warm`: for many videos."""
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    device = parallel.init(device_type) if parallel.world_size() > 1 else torch.device(device_type)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    path = request.model.path
    # The VAE stays in fp32 (diffusers' Wan docs: it loses detail in half precision). Weights go
    # from safetensors straight to their device. Several GPUs for one process (processes: 1)
    # share the components ("balanced"); with one process per GPU, each holds the whole model.
    # (diffusers' pipeline device maps are "balanced", "cuda" or "cpu": one rank of several loads
    # to the CPU and moves to its own GPU.)
    if request.acceleration.offload != "none" or parallel.world_size() > 1:
        device_map = None
    elif torch.cuda.device_count() > 1:
        device_map = "balanced"
    else:
        device_map = device.type
    # One device, one process, no offload: the transformers are read in the background, in the
    # order denoising uses them, while the VAE and text encoder load, the prompt is encoded and
    # (A14B) the high-noise expert denoises the first steps (background_load.py).
    own = request.acceleration.overlap_load and device_map in ("cuda", "cpu") and parallel.world_size() == 1
    experts = ["transformer", "transformer_2"] if PRESETS[request.model.preset].two_experts else ["transformer"]
    transformers = background_load.start(path, experts, dtype, device) if own else {}
    vae = AutoencoderKLWan.from_pretrained(path, subfolder="vae", dtype=torch.float32,
                                           device_map=None if device_map == "balanced" else device_map)
    if device_map == "balanced":
        vae.to(device)  # not part of the balanced map: decode on the first GPU, not the CPU
    pipe = pipeline_class(request).from_pretrained(path, vae=vae, dtype=dtype, device_map=device_map,
                                                   **transformers)
    if device.type == "cpu":
        own_aligned_memory(pipe)
    return configure(pipe, request, device, warm)


def own_aligned_memory(pipe) -> None:
    """Moves the weights that are views into the memory-mapped safetensors files into memory of
    the process's own. Such views start wherever the file puts them (not on a 64-byte boundary),
    and CPU kernels (oneDNN, BLAS) take another code path for unaligned operands on some
    processors: the same weights loaded serially or in the background (background_load.py, whose
    parameters torch allocates, aligned) gave videos that differed in the last bits on AMD EPYC.
    Aligned everywhere, the same request computes the same video whichever way it was loaded."""
    with torch.no_grad():
        for component in pipe.components.values():
            if not isinstance(component, torch.nn.Module):
                continue
            for tensor in (*component.parameters(), *component.buffers()):
                if tensor.device.type == "cpu" and tensor.data_ptr() % ALIGNMENT:
                    tensor.data = tensor.data.clone()


def configure(pipe, request: GenerationRequest, device: torch.device, warm: bool = False) -> LoadedPipeline:
    """Placement, LoRAs (one video per process), and the accelerations the request asks for (exact
    by default). The sampler and the timesteps are each video's (per_video)."""
    acceleration = request.acceleration
    loaded = LoadedPipeline(pipe=pipe, device=device, attention_backend="", scheduler_config=pipe.scheduler.config,
                            expand_timesteps=bool(pipe.config.expand_timesteps), request=request, warm=warm)

    # 1. The VAE decode rewired to move less memory for the same arithmetic (vae_decode.py), and as
    #    an opt-in approximation, the VAE in bfloat16 (the pipeline casts its inputs to the VAE's
    #    dtype: the decoded latents, and for image-to-video the encoded image). Before placement,
    #    so that offload hooks see the final modules.
    if acceleration.fast_vae and device.type == "cuda":
        vae_decode.accelerate(pipe.vae, use_kernel=vae_decode.kernel_works(device))
    if acceleration.vae_bf16:
        pipe.vae.to(torch.bfloat16)

    # 2. Placement and LoRAs (into one or both experts). Without offload, everything goes to the
    #    device first (unless already spread), so that LoRAs are merged there rather than on the
    #    CPU (a rank of several GPUs loads to the CPU); offload hooks instead must see the merged
    #    weights, so they come after the LoRAs.
    transformers = transformers_of(pipe)
    loras = [] if warm else request.loras  # a warm runner's LoRAs are each video's (per_video)
    if acceleration.offload == "none":
        if getattr(pipe, "hf_device_map", None) is None:
            pipe.to(device)
        load_loras(pipe, loras, fuse=acceleration.fuse_loras)
    else:
        load_loras(pipe, loras, fuse=acceleration.fuse_loras)
        if acceleration.offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.enable_sequential_cpu_offload(device=device)

    # 3.-6. The transformers: attention, step cache, FP8, compilation; with several processes, the
    #    sequence split among them, or the guidance passes between two halves of them.
    loaded.cfg_groups = parallel.cfg_groups(request)
    loaded.attention_backend = attention.choose(acceleration.attention_backend, device, pipe.transformer.dtype,
                                                pipe.transformer.config.attention_head_dim,
                                                parallel.world_size() // loaded.cfg_groups > 1)
    accelerate_transformers(transformers, request, device, loaded.attention_backend)
    if loaded.cfg_groups > 1:
        guide_across_processes(loaded, transformers)
    log.info("configured %s on %s: attention %s, compile %s", request.model.preset, device,
             loaded.attention_backend, acceleration.compile and device.type == "cuda")
    return loaded


def guide_across_processes(loaded: LoadedPipeline, transformers: list) -> None:
    """CFG-parallel: each half of the processes computes one guidance pass (generate_frames gives
    it that pass's prompt, and diffusers no guidance of its own). After every forward the halves
    exchange their predictions, and each returns the guided one, as diffusers' pipeline computes
    it, with the scale of the expert that denoises at this timestep, in the video being made."""
    def guided(transformer, args, kwargs, output):
        cond, uncond = parallel.both_passes(output[0], loaded.device.type)
        low_noise = expert_of(loaded.pipe, kwargs["timestep"].flatten()[0]) == "low_noise"
        request = loaded.request
        scale = request.guidance_scale_2 if low_noise and request.guidance_scale_2 is not None \
            else request.guidance_scale
        return (uncond + scale * (cond - uncond), *output[1:])

    for transformer in transformers:
        transformer.register_forward_hook(guided, with_kwargs=True)


def accelerate_transformers(transformers: list, request: GenerationRequest, device: torch.device,
                            backend: str) -> None:
    """What each transformer gets: nothing here reads its weights before its first forward, except
    FP8, which quantizes them (and so waits for those still being read)."""
    acceleration = request.acceleration
    # 3. Attention: the fastest backend verified to run here.
    for transformer in transformers:
        transformer.set_attention_backend(backend)
    if parallel.world_size() > 1:  # each process attends over its share of the heads (Ulysses)
        parallel.split_sequence(transformers, device.type, parallel.cfg_groups(request))

    # 4. Opt-in approximation: a step cache skips transformer work that barely changes between
    #    steps (quality gate and speed-ups: bench/RESULTS.md).
    for transformer in transformers:
        if acceleration.step_cache == "first_block":
            transformer.enable_cache(FirstBlockCacheConfig(threshold=acceleration.step_cache_threshold))
        elif acceleration.step_cache == "taylorseer":
            transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=5, disable_cache_before_step=3,
                                                           max_order=1, use_lite_mode=True))

    # 5. Opt-in approximation: FP8 matrix products in the transformers' linear layers.
    if acceleration.fp8:
        if device.type != "cuda":
            raise InvalidRequest("acceleration.fp8: needs a GPU with FP8 matrix units (Hopper or newer)")
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

        # Only the blocks' projections: the embedders and the output layer stay in bf16.
        in_blocks = lambda module, name: isinstance(module, torch.nn.Linear) and name.startswith("blocks.")  # noqa: E731
        for transformer in transformers:
            background_load.wait(transformer)
            quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=in_blocks)

    # 6. Regional compilation: the repeated transformer block compiled once, reused 30-40 times.
    if acceleration.compile and device.type == "cuda":
        for transformer in transformers:  # a step cache's hooks break the graph on purpose
            transformer.compile_repeated_blocks(fullgraph=acceleration.step_cache == "none")


def load_loras(pipe, loras: list, fuse: bool) -> None:
    """Each LoRA becomes a named adapter in the experts it targets, at its weight; merged into the
    weights when `fuse` (rounded once to their dtype: no per-step LoRA work, plain compiled blocks).
    LoRAs change the weights: those still being read in the background are waited for."""
    if loras:
        for transformer in transformers_of(pipe):
            background_load.wait(transformer)
    adapters: dict[str, tuple[list[str], list[float]]] = {"transformer": ([], []), "transformer_2": ([], [])}
    for i, lora in enumerate(loras):
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
    targets = [target for target, (names, _) in adapters.items() if names]
    if fuse and targets:
        pipe.fuse_lora(components=targets)
        pipe.unload_lora_weights()


def latents_shape(loaded: LoadedPipeline, request: GenerationRequest) -> tuple[int, ...]:
    """The shape of the latents the pipeline denoises for this request (what a checkpoint holds)."""
    pipe = loaded.pipe
    return (1, pipe.vae.config.z_dim, (request.frames - 1) // pipe.vae_scale_factor_temporal + 1,
            request.height // pipe.vae_scale_factor_spatial, request.width // pipe.vae_scale_factor_spatial)


def expert_of(pipe, timestep) -> str:
    """Which transformer denoises at `timestep` (the A14B models switch at their boundary)."""
    if pipe.config.boundary_ratio is None:
        return "transformer"
    boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps
    return "high_noise" if timestep >= boundary else "low_noise"


@contextlib.contextmanager
def per_video(loaded: LoadedPipeline, request: GenerationRequest):
    """What one video sets, applied around it and undone after, however it ends (a failure, a
    stop): its sampler at its shift, per-token timesteps or not, the pipeline class its task needs
    (sharing the loaded components), and in a warm runner its LoRAs, as adapters removed after (the
    loaded weights are never changed); the step caches' state is cleared. Yields the pipeline."""
    if warm_mismatch := serves(loaded, request):
        raise InvalidRequest(warm_mismatch)
    pipe = loaded.pipe
    if pipeline_class(request) is not type(pipe):
        pipe = pipeline_class(request).from_pipe(loaded.pipe)
    # 1. Sampling: a flow-matching solver with the request's shift (UniPC, Wan's own, or Euler).
    loaded_scheduler, pipe.scheduler = pipe.scheduler, sampling.scheduler(loaded.scheduler_config, request)
    # 2. TI2V-5B without an image gives every token the same timestep: one modulation vector per
    #    video instead of one per token (27k at 720p) computes the same numbers with less work.
    uniform = request.acceleration.uniform_timesteps and isinstance(pipe, WanPipeline)
    pipe.register_to_config(expand_timesteps=loaded.expand_timesteps and not uniform)
    loaded.request = request
    if loaded.warm:
        load_loras(pipe, request.loras, fuse=False)
    try:
        yield pipe
    finally:
        if loaded.warm and request.loras:
            pipe.unload_lora_weights()
        pipe.register_to_config(expand_timesteps=loaded.expand_timesteps)
        pipe.scheduler = loaded_scheduler
        for transformer in transformers_of(pipe):
            hooks = getattr(transformer, "_diffusers_hook", None)
            if hooks is not None:
                hooks.reset_stateful_hooks()


def serves(loaded: LoadedPipeline, request: GenerationRequest) -> str | None:
    """Why the loaded pipeline cannot make this request's video (another model, or other load-time
    settings), naming the field; None when it can."""
    made_for = loaded.request
    if (request.model.preset, request.model.path) != (made_for.model.preset, made_for.model.path):
        return f"model: this runner serves {made_for.model.preset} from {made_for.model.path}"
    per_video_settings = {"uniform_timesteps"}
    for field in type(request.acceleration).model_fields:
        if field not in per_video_settings and getattr(request.acceleration, field) != getattr(
                made_for.acceleration, field):
            return f"acceleration.{field}: this runner was loaded with {getattr(made_for.acceleration, field)!r}"
    if not loaded.warm and request.loras != made_for.loras:
        return "loras: merged into this process's weights at load"
    return None


def generate_frames(
    loaded: LoadedPipeline,
    request: GenerationRequest,
    seed: int,
    image: Image.Image | None,
    timings: Timings,
    on_stage: Callable[[str], None] = lambda stage: None,
    on_step: Callable[[int, int], None] = lambda step, total: None,
    resume: "Checkpoint | None" = None,
    on_state: Callable[[int, torch.Tensor, dict, str], None] = lambda steps_done, latents, solver, expert: None,
    release_text_encoder: bool = False,
    on_frames: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Text → latents → frames: float (frames, H, W, 3) in [0, 1], left on the pipeline's device.
    Fills the encode/denoise/decode timings. From a checkpoint, denoising starts after its step
    with its latents and solver state; after each step, `on_state` gets what a checkpoint needs.
    A process that makes one video releases the text encoder (11 GB for UMT5-XXL) once the prompt
    is encoded. `on_frames` gets the frames chunk by chunk while the VAE decodes (for an encoder
    that works meanwhile)."""
    with per_video(loaded, request) as pipe:
        sync = torch.cuda.synchronize if loaded.device.type == "cuda" else (lambda: None)

        # 1. Encode the prompts once, so the stage is visible and timed on its own.
        on_stage("encoding")
        started = time.perf_counter()
        guided = request.guidance_scale > 1.0 or (request.guidance_scale_2 or 0.0) > 1.0
        with torch.inference_mode():
            prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                do_classifier_free_guidance=guided,
                max_sequence_length=MAX_SEQUENCE_LENGTH,
            )
        sync()
        timings.encode = round(time.perf_counter() - started, 3)
        if release_text_encoder:
            pipe.text_encoder = None
            if loaded.device.type == "cuda":
                torch.cuda.empty_cache()

        # 2. Denoise, then decode with the VAE (the pipeline's last act). The step callback
        #    reports progress, hands over the state for checkpoints, and marks where decoding starts.
        on_stage("denoising")
        started = time.perf_counter()
        decode_started = []
        done_before = resume.steps_done if resume else 0
        if resume:
            pipe.scheduler.resume_after(resume.steps_done, resume.solver)

        step_started = [started]

        def on_step_end(_pipe, i, t, callback_kwargs):
            sync()
            steps_done = done_before + i + 1
            if i == 0:
                timings.first_step = round(time.perf_counter() - step_started[0], 3)
            if steps_done < request.steps:  # before the report: once a step shows, a stop saves it
                on_state(steps_done, callback_kwargs["latents"], pipe.scheduler.state(), expert_of(pipe, t))
            on_step(steps_done, request.steps)
            if steps_done == request.steps:
                decode_started.append(time.perf_counter())
                on_stage("decoding")
            return callback_kwargs

        call = dict(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            height=request.height,
            width=request.width,
            num_frames=request.frames,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            # A CPU generator draws the same noise on any device: a seed means one video.
            generator=torch.Generator(device="cpu").manual_seed(seed),
            output_type="pt",  # stays on the device: export converts to uint8 there
            callback_on_step_end=on_step_end,
        )
        if request.guidance_scale_2 is not None:
            call["guidance_scale_2"] = request.guidance_scale_2
        if loaded.cfg_groups > 1:  # this process's pass only, unguided; its transformers' hook guides
            own = (prompt_embeds, negative_prompt_embeds)[parallel.cfg_rank(loaded.cfg_groups)]
            call.update(prompt_embeds=own, negative_prompt_embeds=None, guidance_scale=1.0)
            call.pop("guidance_scale_2", None)
        if image is not None:
            call["image"] = image
        if resume:
            call["latents"] = resume.latents
        step_started[0] = time.perf_counter()
        with torch.inference_mode(), vae_decode.frames_as_decoded(pipe, on_frames):
            frames = pipe(**call).frames[0].permute(0, 2, 3, 1)  # one video: (frames, 3, H, W) → (frames, H, W, 3)
        sync()
        timings.weights_wait = round(background_load.waited(transformers_of(pipe)), 3)
        timings.denoise = round(decode_started[0] - started, 3)
        timings.decode = round(time.perf_counter() - decode_started[0], 3)
        return frames
