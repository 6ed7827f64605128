"""The generation request: the one JSON document the operator hands to the runner.

Both sides validate it with these models (pydantic only, no torch), so a request that the
runner would refuse is refused before any model loads, with the field named.
Credentials never travel in it: S3 and Redis secrets reach the runner as environment variables,
and a URL holding user info (a password) is refused.
"""

import re
import string
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from videogen_runner.addresses import literal_address, why_not_public
from videogen_runner.presets import PRESETS, PresetName, Task

TASK_ID = re.compile(r"[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?")
TASK_ID_PATTERN = f"^{TASK_ID.pattern}$"
MAX_PROMPT_CHARS = 2000  # UMT5 reads 512 tokens; longer text would be cut silently
KEY_TEMPLATE_FIELDS = {"task_id", "model", "seed", "date"}
SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/=-]*")
KEY_PREFIX_PATTERN = r"^([a-z0-9][a-z0-9.-]*/)?$"  # "" or one namespace-like folder: "team-a/"
# diffusers' attention backends (AttentionBackendName of the locked diffusers) that need nothing
# downloaded at run time (a pod may have no internet: no `_hub` kernels); tests compare the list
# with diffusers' own. Which of them really runs is judged on the pod's GPU (attention.py).
ATTENTION_BACKENDS = (
    "auto", "native", "_native_cudnn", "_native_efficient", "_native_flash", "_native_math", "_native_npu",
    "_native_xla", "flash", "flash_varlen", "_flash_3", "_flash_varlen_3", "flex", "sage", "sage_varlen",
    "_sage_qk_int8_pv_fp8_cuda", "_sage_qk_int8_pv_fp8_cuda_sm90", "_sage_qk_int8_pv_fp16_cuda",
    "_sage_qk_int8_pv_fp16_triton", "xformers")
AttentionBackend = Literal[ATTENTION_BACKENDS]
Loc = tuple[str | int, ...]


def dotted(loc: Loc) -> str:
    """A field's path as Kubernetes writes it: loras[0].path."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).removeprefix(".")


def describe(error: ValidationError, where: Callable[[Loc], str] = dotted) -> str:
    """One line per problem, each starting with the field's name (`where` spells it)."""
    lines = []
    for e in error.errors():
        message = e["msg"].removeprefix("Value error, ")
        lines.append(f"{where(e['loc'])}: {message}" if e["loc"] else message)
    return "; ".join(lines)


def invalid(loc: Loc, message: str, value: object) -> ValidationError:
    """A validation error of a whole-request check, located at the field it is about."""
    error = PydanticCustomError("value_error", "{message}", {"message": message})
    return ValidationError.from_exception_data("GenerationRequest", [
        InitErrorDetails(type=error, loc=loc, input=value)])


def credentials_problem(url: str) -> str | None:
    """Why a URL may not be used anywhere: it carries user info (a password), in plain text."""
    if "@" in urlsplit(url).netloc:
        return "must not hold user info or a password (credentials come from Secrets)"
    return None


def input_url_problem(url: str) -> str | None:
    """Why an input URL may not be fetched: credentials, or a literal host that is not public
    (services such as S3 and Redis endpoints may be private; inputs may not)."""
    if problem := credentials_problem(url):
        return problem
    address = literal_address(urlsplit(url).hostname or "")
    if address is not None and (why := why_not_public(address)):
        return f"host {why}; only public addresses are fetched"
    return None


def key_problem(key: str) -> str | None:
    """Why a string is not a safe object key (no traversal, no odd characters, not too long)."""
    if not SAFE_KEY.fullmatch(key) or len(key) > 1024 or any(s in ("", ".", "..") for s in key.split("/")):
        return f"{key!r} is not a safe object key (letters, digits, . _ / = -; no empty, . or .. segments)"
    return None


def path_problem(path: str) -> str | None:
    """Why a local path would leave the folder it names (.., . or empty segments)."""
    if any(s in ("", ".", "..") for s in path.removeprefix("/").removesuffix("/").split("/")):
        return f"{path!r} must not hold '..', '.' or empty segments"
    return None


def checked(problem: Callable[[str], str | None]):
    """A field validator from a problem function (None: fine)."""
    def check(value):
        if value is not None and (message := problem(value)):
            raise ValueError(message)
        return value
    return check


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- The contract's fields, each declared once -----------------------------------------------------
# The request below and the VideoGeneration spec (operator/videogen_operator/models.py, from which
# the CRD is generated) are both made of these: a bound, a default or a description is one edit for
# the request, the spec, the CRD and the CLI's help. The spec's video, sampling and acceleration
# objects are made from the request's own fields (models.PLACEMENT); the rest use the types below.

SIZE = "a multiple of 16 (A14B) or 32 (TI2V-5B)"
TaskChoice = Annotated[Task | None, Field(default=None, description="t2v, i2v or ti2v (default: the family's "
                                          "first; TI2V-5B takes an image or not).")]
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What the video shows.")]
NegativePrompt = Annotated[str, Field(default="", max_length=MAX_PROMPT_CHARS, description="What to avoid.")]
ImageUrl = Annotated[str | None, Field(
    default=None, pattern=r"^(s3|https)://", max_length=2048,
    description="First frame (i2v, ti2v): an s3:// or https:// URL (public hosts only; with the operator's "
    "credentials, s3:// objects under the namespace's folder).")]
MAX_LORAS = 8
LoraWeight = Annotated[float, Field(default=1.0, ge=-4.0, le=4.0, description="Adapter strength.")]
LoraExperts = Annotated[Literal["both", "high_noise", "low_noise"], Field(
    default="both", description="Two-expert A14B models: which expert(s) receive the LoRA.")]
Bucket = Annotated[str | None, Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                                     description="S3 bucket of the MP4 (default: the operator's).")]
KeyTemplate = Annotated[str, Field(max_length=512, description="Object key template; fields: {task_id} {model} "
                                   "{seed} {date} (default: {task_id}.mp4).")]
EndpointUrl = Annotated[str | None, Field(default=None, pattern=r"^https?://", max_length=512,
                                          description="S3-compatible endpoint (default: the operator's, else AWS).")]
Region = Annotated[str | None, Field(default=None, pattern=r"^[a-z0-9-]{1,32}$", description="S3 region.")]
RedisUrl = Annotated[str | None, Field(default=None, pattern=r"^rediss?://", max_length=512,
                                       description="redis://host:port/db (default: the operator's).")]


class ModelSource(Strict):
    """Which Wan2.2 family, and the local folder holding its diffusers weights."""

    preset: PresetName = Field(description="Model family: ti2v-5b, t2v-a14b or i2v-a14b.")
    path: str = Field(min_length=1, description="Local folder with the diffusers layout (model_index.json).")

    _inside = field_validator("path")(checked(path_problem))


class Lora(Strict):
    path: str = Field(min_length=1, description="Local .safetensors file or folder of a LoRA.")
    weight: LoraWeight
    experts: LoraExperts

    _inside = field_validator("path")(checked(path_problem))


class Output(Strict):
    """Where the MP4 goes: always a local file, and S3 when a bucket is given."""

    path: str = Field(default="/tmp/videogen/output.mp4", min_length=1, description="Local MP4 path, or a folder "
                      "(one that exists, or a path ending in /) to write <task_id>.mp4 into.")
    bucket: Bucket
    key: KeyTemplate = "{task_id}.mp4"
    prefix: str = Field(
        default="", pattern=KEY_PREFIX_PATTERN,
        description="Folder every key this request writes or reads lies under (the operator: the tenant's).",
    )
    endpoint_url: EndpointUrl
    region: Region
    upload_retry_seconds: float = Field(
        default=300.0, ge=0, le=3600,
        description="How long the pod keeps retrying a failed upload (backoff with jitter) before it gives up.",
    )

    _no_credentials = field_validator("endpoint_url")(checked(credentials_problem))

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

    redis_url: RedisUrl

    _no_credentials = field_validator("redis_url")(checked(credentials_problem))
    key_prefix: str = Field(default="videogen", pattern=r"^[A-Za-z0-9:_-]{1,64}$")
    ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60, description="Expiry of the task's keys.")
    namespace: str = Field(
        default="", pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$",
        description="The Kubernetes namespace of the task (the operator sets it): nudges go to its channel, "
        "<prefix>:updates:<namespace>, and the task id must start with '<namespace>.' (progress.py).",
    )


class Checkpoints(Strict):
    """Denoising state saved while generating, so that a later attempt resumes (checkpoint.py)."""

    every_seconds: float = Field(
        default=60.0, ge=0, le=3600, description="Seconds of generation between saves (about 3 steps of A14B "
        "at 720p); 0: none.",
    )
    folder: str | None = Field(
        default=None, min_length=1, description="Local folder on a volume that outlives the pod, instead of the "
        "task's folder in the output bucket (<prefix>checkpoints/<task_id>/).",
    )

    _inside = field_validator("folder")(checked(path_problem))


class Acceleration(Strict):
    """How the runner computes: exact by default; approximations only when asked. A resource may set
    all but RUNNER_ONLY (the operator's models.py)."""

    attention_backend: AttentionBackend = Field(
        default="auto", description="auto (the fastest verified to run on the pod's GPU), or a diffusers backend.")
    compile: bool = Field(default=True, description="Regional torch.compile of the transformer blocks (GPU).")
    offload: Literal["none", "model", "sequential"] = Field(
        default="none", description="CPU offload when the model does not fit the GPU.")
    step_cache: Literal["none", "first_block", "taylorseer"] = Field(
        default="none", description="Opt-in approximation: reuse transformer work between denoising steps.")
    step_cache_threshold: float = Field(
        default=0.05, gt=0.0, le=1.0, description="first_block: relative residual change under which a step is reused.")
    fp8: bool = Field(default=False, description="Opt-in approximation: FP8 weights and activations in the "
                      "transformer's linear layers (torchao; GPUs with FP8 matrix units, e.g. Hopper).")
    fast_vae: bool = Field(default=True, description="VAE decode with fused kernels and implicit padding, same "
                           "arithmetic (GPU).")
    fuse_loras: bool = Field(default=True, description="Merge LoRAs into the weights after loading: no per-step "
                             "LoRA work.")
    vae_bf16: bool = Field(default=False, description="Opt-in approximation: the VAE in bfloat16 (decode, and an "
                           "i2v image's encode).")
    uniform_timesteps: bool = Field(
        default=True, description="TI2V-5B text-to-video: one timestep embedding per video, not per token (exact)."
    )
    overlap_load: bool = Field(
        default=True, description="Read the weights into the page cache while torch imports, and the transformers "
        "in the background while the rest loads and the prompt is encoded, the A14B low-noise expert while the "
        "high-noise one denoises (same result, earlier first step).",
    )
    processes: int | None = Field(
        default=None, ge=1, le=16,
        description="Processes (GPUs) for this one video, splitting its tokens (Ulysses); default: one per GPU.",
    )
    cfg_parallel: bool = Field(
        default=False, description="Several processes with guidance: the conditional and the unconditional pass "
        "on two halves of them, each half splitting the tokens among its own (same result).",
    )


class GenerationRequest(Strict):
    """One video. Unset sampling fields take the model family's official defaults."""

    task_id: str = Field(pattern=TASK_ID_PATTERN, description="Names the run in Redis, S3 and logs.")
    model: ModelSource
    task: TaskChoice
    prompt: Prompt
    negative_prompt: NegativePrompt
    image: ImageUrl
    width: int | None = Field(default=None, ge=32, le=2048, description=f"Pixels, {SIZE} (default: the family's).")
    height: int | None = Field(default=None, ge=32, le=2048, description=f"Pixels, {SIZE} (default: the family's).")
    frames: int | None = Field(default=None, ge=1, le=321, description="Frames, 4k+1: 81, 121, … (default: the "
                               "family's).")
    fps: int | None = Field(default=None, ge=1, le=60, description="Frames per second of the MP4 (default: the "
                            "family's).")
    steps: int | None = Field(default=None, ge=1, le=150, description="Denoising steps (default: the family's).")
    guidance_scale: float | None = Field(default=None, ge=0.0, le=30.0, description="Classifier-free guidance "
                                         "(default: the family's).")
    guidance_scale_2: float | None = Field(default=None, ge=0.0, le=30.0, description="Two-expert A14B models: the "
                                           "low-noise expert's guidance (default: the family's).")
    flow_shift: float | None = Field(default=None, gt=0.0, le=50.0, description="Flow-matching shift (default: "
                                     "the family's).")
    sampler: Literal["unipc", "euler"] = Field(
        default="unipc", description="Flow-matching solver: unipc (Wan's own) or euler (step-distilled LoRAs).")
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="Unset: random, reported back.")
    loras: list[Lora] = Field(default_factory=list, max_length=MAX_LORAS)
    output: Output = Field(default_factory=Output)
    reporting: Reporting = Field(default_factory=Reporting)
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    acceleration: Acceleration = Field(default_factory=Acceleration)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("must not be blank")
        return prompt

    _public_input = field_validator("image")(checked(input_url_problem))  # the schemes: ImageUrl's pattern

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
            raise invalid(("task",), f"{self.task!r} is not supported by {preset.name} (supported: {preset.tasks})",
                          self.task)
        if self.task == "i2v" and self.image is None:
            raise invalid(("image",), "required for task i2v", None)
        if self.task == "t2v" and self.image is not None:
            raise invalid(("image",), "not allowed for task t2v (use i2v or ti2v)", self.image)
        if preset.two_experts:
            if self.guidance_scale_2 is None:
                self.guidance_scale_2 = preset.guidance_scale_2
        elif self.guidance_scale_2 is not None:
            raise invalid(("guidance_scale_2",), f"only the two-expert A14B models take it, not {preset.name}",
                          self.guidance_scale_2)
        for i, lora in enumerate(self.loras):
            if not preset.two_experts and lora.experts != "both":
                raise invalid(("loras", i, "experts"), f"must be 'both' for the one-transformer {preset.name}",
                              lora.experts)
        # 3. Shapes the VAE and the transformer's patches can represent exactly.
        if (self.frames - 1) % 4:
            raise invalid(("frames",), f"must be 4k+1 (1, 5, 9, … 81, … 121), got {self.frames}", self.frames)
        for name in ("width", "height"):
            if getattr(self, name) % preset.size_multiple:
                raise invalid((name,), f"must be a multiple of {preset.size_multiple} for {preset.name}, "
                              f"got {getattr(self, name)}", getattr(self, name))
        # 4. Progress: a namespace's task lies under its namespace's keys (the Redis ACL's pattern).
        namespace = self.reporting.namespace
        if namespace and not self.task_id.startswith(f"{namespace}."):
            raise invalid(("task_id",), f"must start with '{namespace}.', the namespace it reports under",
                          self.task_id)
        # 5. Storage: the key must be safe whatever the seed and date turn out to be, and every
        #    key written or read lies under the prefix (the tenant's folder).
        self.object_key(seed=self.seed or 0)
        if self.image and self.image.startswith("s3://"):
            bucket, _, key = self.image.removeprefix("s3://").partition("/")
            if problem := ("no bucket" if not bucket else key_problem(key)):
                raise invalid(("image",), f"must be s3://bucket/key with a safe key: {problem}", self.image)
            if not key.startswith(self.output.prefix):
                raise invalid(("image",), f"{self.image} is outside this request's folder "
                              f"{self.output.prefix!r}: only objects under it can be read", self.image)
        return self

    def object_key(self, seed: int, now: datetime | None = None) -> str:
        """The S3 key: the prefix, then the template; user text never reaches it unchecked."""
        now = now or datetime.now(UTC)
        date = now.strftime("%Y-%m-%d")
        key = self.output.prefix + self.output.key.format(
            task_id=self.task_id, model=self.model.preset, seed=seed, date=date)
        if problem := key_problem(key):
            raise invalid(("output", "key"), problem, self.output.key)
        return key
