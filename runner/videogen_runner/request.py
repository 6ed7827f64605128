"""The generation request: the one JSON document the operator hands to the runner.

Both sides validate it with these models (pydantic only, no torch), so a request that the
runner would refuse is refused before any model loads, with the field named.
Credentials never travel in it: S3 and Redis secrets reach the runner as environment variables.
"""

import re
import string
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from videogen_runner.presets import PRESETS, PresetName, Task

TASK_ID = re.compile(r"[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?")
TASK_ID_PATTERN = f"^{TASK_ID.pattern}$"
MAX_PROMPT_CHARS = 2000  # UMT5 reads 512 tokens; longer text would be cut silently
KEY_TEMPLATE_FIELDS = {"task_id", "model", "seed", "date"}
SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/=-]*")
IMAGE_SCHEMES = ("s3://", "https://")


def describe(error: ValidationError, prefix: str = "") -> str:
    """One line per problem, each starting with the field's dotted name (after `prefix`)."""
    lines = []
    for e in error.errors():
        where = ".".join(str(part) for part in e["loc"])
        message = e["msg"].removeprefix("Value error, ")
        lines.append(f"{prefix}{where}: {message}" if where else message)
    return "; ".join(lines)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSource(Strict):
    """Which Wan2.2 family, and the local folder holding its diffusers weights."""

    preset: PresetName = Field(description="Model family: ti2v-5b, t2v-a14b or i2v-a14b.")
    path: str = Field(min_length=1, description="Local folder with the diffusers layout (model_index.json).")


class Lora(Strict):
    path: str = Field(min_length=1, description="Local .safetensors file or folder of a LoRA.")
    weight: float = Field(default=1.0, ge=-4.0, le=4.0, description="Adapter strength.")
    experts: Literal["both", "high_noise", "low_noise"] = Field(
        default="both", description="A14B models: which expert(s) receive the LoRA."
    )


class Output(Strict):
    """Where the MP4 goes: always a local file, and S3 when a bucket is given."""

    path: str = Field(default="/tmp/videogen/output.mp4", description="Local MP4 path.")
    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    key: str = Field(
        default="{task_id}.mp4",
        max_length=512,
        description="Object key template; fields: {task_id} {model} {seed} {date}.",
    )
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://", description="S3-compatible endpoint.")
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,32}$")

    @field_validator("key")
    @classmethod
    def _known_fields(cls, key: str) -> str:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(key) if name is not None}
        except ValueError as e:
            raise ValueError(f"malformed key template: {e}") from None
        unknown = fields - KEY_TEMPLATE_FIELDS
        if unknown:
            raise ValueError(f"unknown template fields {sorted(unknown)}; allowed: {sorted(KEY_TEMPLATE_FIELDS)}")
        return key


class Reporting(Strict):
    """Redis progress reporting; the password comes from the REDIS_PASSWORD environment variable."""

    redis_url: str | None = Field(default=None, pattern=r"^rediss?://", description="redis://host:port/db")
    key_prefix: str = Field(default="videogen", pattern=r"^[A-Za-z0-9:_-]{1,64}$")
    ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60, description="Expiry of the task's keys.")


class Acceleration(Strict):
    attention_backend: str = Field(
        default="auto", pattern=r"^[a-z0-9_]+$", description="diffusers attention backend, or auto."
    )
    offload: Literal["none", "model", "sequential"] = Field(
        default="none", description="CPU offload when the model does not fit the GPU."
    )
    compile: bool = Field(default=True, description="Regional torch.compile of the transformer blocks (GPU).")
    uniform_timesteps: bool = Field(
        default=True, description="TI2V-5B text-to-video: one timestep embedding per video, not per token (exact)."
    )
    fast_vae: bool = Field(
        default=True, description="VAE decode with fused kernels and implicit padding, same arithmetic (GPU).",
    )
    processes: int | None = Field(
        default=None, ge=1, le=16,
        description="Processes (GPUs) for this one video, splitting its tokens (Ulysses); default: one per GPU.",
    )
    fp8: bool = Field(
        default=False, description="Opt-in approximation: FP8 weights and activations in the transformer's linear "
        "layers (torchao; GPUs with FP8 matrix units, e.g. Hopper).",
    )
    step_cache: Literal["none", "first_block", "taylorseer"] = Field(
        default="none", description="Opt-in approximation: reuse transformer work between denoising steps."
    )
    fuse_loras: bool = Field(
        default=True, description="Merge LoRAs into the weights after loading: no per-step LoRA work.",
    )
    vae_bf16: bool = Field(
        default=False, description="Opt-in approximation: the VAE in bfloat16 (decode, and an i2v image's encode).",
    )
    step_cache_threshold: float = Field(
        default=0.05, gt=0.0, le=1.0, description="first_block: relative residual change under which a step is reused."
    )


class GenerationRequest(Strict):
    """One video. Unset sampling fields take the model family's official defaults."""

    task_id: str = Field(pattern=TASK_ID_PATTERN, description="Names the run in Redis, S3 and logs.")
    model: ModelSource
    task: Task | None = Field(default=None, description="t2v, i2v or ti2v (TI2V-5B: image optional).")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    image: str | None = Field(default=None, description="First frame, as s3:// or https:// URL.")
    width: int | None = Field(default=None, ge=32, le=2048)
    height: int | None = Field(default=None, ge=32, le=2048)
    frames: int | None = Field(default=None, ge=1, le=321, description="4k+1 frames.")
    fps: int | None = Field(default=None, ge=1, le=60)
    steps: int | None = Field(default=None, ge=1, le=150)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=30.0)
    guidance_scale_2: float | None = Field(default=None, ge=0.0, le=30.0, description="A14B low-noise expert.")
    flow_shift: float | None = Field(default=None, gt=0.0, le=50.0)
    sampler: Literal["unipc", "euler"] = Field(
        default="unipc", description="Flow-matching solver: unipc (Wan's own) or euler (step-distilled LoRAs).",
    )
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="Unset: random, reported back.")
    loras: list[Lora] = Field(default_factory=list, max_length=8)
    output: Output = Field(default_factory=Output)
    reporting: Reporting = Field(default_factory=Reporting)
    acceleration: Acceleration = Field(default_factory=Acceleration)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("must not be blank")
        return prompt

    @field_validator("image")
    @classmethod
    def _allowed_scheme(cls, image: str | None) -> str | None:
        if image is not None and not image.startswith(IMAGE_SCHEMES):
            raise ValueError(f"must start with one of {IMAGE_SCHEMES}")
        return image

    @model_validator(mode="after")
    def _fill_and_check_against_model(self) -> "GenerationRequest":
        preset = PRESETS[self.model.preset]
        # 1. Defaults of the family, so the request (and the result) states every value used.
        self.task = self.task or preset.tasks[0]
        for name in ("width", "height", "frames", "fps", "steps", "guidance_scale", "flow_shift"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(preset, name))
        # 2. What the family can do.
        if self.task not in preset.tasks:
            raise ValueError(f"task: {self.task!r} is not supported by {preset.name} (supported: {preset.tasks})")
        if self.task == "i2v" and self.image is None:
            raise ValueError("image: required for task i2v")
        if self.task == "t2v" and self.image is not None:
            raise ValueError("image: not allowed for task t2v (use i2v or ti2v)")
        if preset.two_experts:
            if self.guidance_scale_2 is None:
                self.guidance_scale_2 = preset.guidance_scale_2
        elif self.guidance_scale_2 is not None:
            raise ValueError(f"guidance_scale_2: only the two-expert A14B models take it, not {preset.name}")
        if not preset.two_experts and any(lora.experts != "both" for lora in self.loras):
            raise ValueError(f"loras: experts must be 'both' for the one-transformer {preset.name}")
        # 3. Shapes the VAE and the transformer's patches can represent exactly.
        if (self.frames - 1) % 4:
            raise ValueError(f"frames: must be 4k+1 (1, 5, 9, … 81, … 121), got {self.frames}")
        for name in ("width", "height"):
            if getattr(self, name) % preset.size_multiple:
                raise ValueError(
                    f"{name}: must be a multiple of {preset.size_multiple} for {preset.name}, got {getattr(self, name)}"
                )
        # 4. The object key must be safe whatever the seed and date turn out to be.
        self.object_key(seed=self.seed or 0)
        return self

    def object_key(self, seed: int, now: datetime | None = None) -> str:
        """The S3 key from the template; user text never reaches it unchecked."""
        now = now or datetime.now(UTC)
        date = now.strftime("%Y-%m-%d")
        key = self.output.key.format(task_id=self.task_id, model=self.model.preset, seed=seed, date=date)
        segments = key.split("/")
        if not SAFE_KEY.fullmatch(key) or len(key) > 1024 or any(s in ("", ".", "..") for s in segments):
            raise ValueError(f"output.key: {key!r} is not a safe object key")
        return key
