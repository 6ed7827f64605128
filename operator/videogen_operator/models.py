"""The VideoGeneration resource: spec and status as pydantic models, the one source of the CRD.

Field bounds and CEL rules here are what the API server enforces (crds/ is generated from this
file by `python -m videogen_operator.crd`); sampling defaults come from the runner's presets,
applied when the operator builds the runner's request, so the spec stays what the user wrote.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from videogen_runner.addresses import NON_PUBLIC
from videogen_runner.presets import PRESETS, PresetName
from videogen_runner.progress import ProgressState
from videogen_runner.request import (
    MAX_LORAS,
    Bucket,
    EndpointUrl,
    GenerationRequest,
    ImageUrl,
    KeyTemplate,
    LoraExperts,
    LoraWeight,
    NegativePrompt,
    Prompt,
    RedisUrl,
    Region,
    TaskChoice,
)
from videogen_runner.request import Acceleration as RequestAcceleration
from videogen_runner.result import RunResult, VideoOutput

GROUP = "videogen.io"
VERSION = "v1alpha1"
KIND = "VideoGeneration"
PLURAL = "videogenerations"


def rule(expression: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict:
    """One CEL validation rule, as x-kubernetes-validations wants it."""
    return {"rule": expression, "message": message, **({"fieldPath": field_path} if field_path else {}),
            **({"reason": reason} if reason else {})}


def checks(*rules: dict) -> dict:
    """Field(**checks(...)): CEL rules on the field itself, so the API server names its path."""
    return {"json_schema_extra": {"x-kubernetes-validations": list(rules)}}


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
OBJECT_NAME = rule(f"self.matches('{DNS_SUBDOMAIN}')",
                   "must be a DNS-1123 subdomain name: lowercase letters, digits, '-' and '.'")
NO_TRAVERSAL = "!self.split('/').exists(s, s == '' || s == '.' || s == '..')"
INSIDE_VOLUME = rule(NO_TRAVERSAL, "must stay inside its volume: a relative path without '..', '.' or empty "
                     "segments, no leading or trailing '/'")
NO_USER_INFO = rule("!self.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@')",
                    "must not hold user info or a password: credentials come only from Secrets")
# A literal address in a URL must be public: the ranges are the runner's own (addresses.py),
# which judges every resolved address again at fetch time. IPv4 written inside IPv6 is not an
# address the API server's ip() accepts, so it is refused here as well. (One-element lists bind
# the host and the address once: the API server's budget counts every re-parse.)
PUBLIC_LITERAL = rule(
    "!isURL(self) || [url(self).getHostname()].all(h, !isIP(h) ? !h.contains(':') : [ip(h)].all(a, !["
    + ", ".join(f"'{network}'" for network in NON_PUBLIC if not network.startswith("::ffff:"))
    + "].exists(c, cidr(c).containsIP(a))))",
    "must not name a private, loopback, link-local or otherwise non-public address")
QUANTITY = rule("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
                "must be a positive quantity, e.g. '8', '500m' or '64Gi'")
EXTENDED_RESOURCE = rule(
    "self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$') && "
    "!self.split('/')[0].endsWith('kubernetes.io')",
    "must be an extended resource name such as nvidia.com/gpu (domain/name, outside kubernetes.io)")


class Model(BaseModel):
    # Unknown fields are the API server's to refuse (the CRD's structural schema prunes them, and
    # kubectl's strict field validation reports them). Ignoring them here keeps an operator that
    # is older than its CRD (the CRD upgraded first, as Helm does) working on newer resources.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class SecretKey(Model):
    name: str = Field(min_length=1, max_length=253, description="Secret in the resource's namespace.",
                      **checks(OBJECT_NAME))
    key: str = Field(min_length=1, max_length=253, description="Key within the Secret.")


class PvcSource(Model):
    claim_name: str = Field(min_length=1, max_length=253, description="PersistentVolumeClaim holding the weights.",
                            **checks(OBJECT_NAME))


class ModelRef(Model):
    """Which Wan2.2 family, and where its diffusers weights are."""

    preset: PresetName = Field(description="Model family: ti2v-5b, t2v-a14b or i2v-a14b.")
    pvc: PvcSource | None = Field(default=None, description="Weights on a PersistentVolumeClaim (mounted read-only).")
    host_path: str | None = Field(default=None, pattern=r"^/", max_length=1024,
                                  description="Weights in a folder of the node (mounted read-only).",
                                  **checks(rule(f"self == '/' || {NO_TRAVERSAL.replace('self.', 'self.substring(1).')}",
                                                "must be an absolute path without '..', '.' or empty segments")))
    path: str = Field(default="", max_length=1024, pattern=r"^[A-Za-z0-9._/-]*$",
                      description="Folder of the diffusers model (model_index.json) inside the volume.",
                      **checks(rule(f"self == '' || {NO_TRAVERSAL}", INSIDE_VOLUME["message"])))


# Where each request field that a resource sets sits in its spec (python names; the CRD's are
# camelCased). The spec's `video` and `sampling` objects are made of those request fields as the
# request declares them, job.build_request takes the values from these places, and a refused
# request names the spec's field (job.spec_field).
PLACEMENT: dict[str, tuple[str, ...]] = {
    "task": ("task",), "prompt": ("prompt",), "negative_prompt": ("negative_prompt",), "image": ("image",),
    **{name: ("video", name) for name in ("width", "height", "frames", "fps")},
    **{name: ("sampling", name) for name in ("steps", "guidance_scale", "guidance_scale_2", "flow_shift", "sampler",
                                             "seed")},
    "acceleration": ("acceleration",),
}
# The runner's acceleration settings that are not a resource's to choose (docs/operator.md).
RUNNER_ONLY = {"uniform_timesteps", "overlap_load", "processes", "cfg_parallel"}


def spec_object(name: str, doc: str, fields: dict[str, FieldInfo]) -> type[Model]:
    """A spec object made of the runner's own field declarations (type, bounds, default, description)."""
    return create_model(name, __base__=Model, __doc__=doc, **{
        field: (info.annotation, info) for field, info in fields.items()})


def placed_in(part: str) -> dict[str, FieldInfo]:
    return {place[1]: GenerationRequest.model_fields[field] for field, place in PLACEMENT.items()
            if len(place) == 2 and place[0] == part}


Video = spec_object("Video", "Size, frames and fps (default: the family's).", placed_in("video"))
Sampling = spec_object("Sampling", "Steps, guidance, shift, solver, seed.", placed_in("sampling"))
Acceleration = spec_object(
    "Acceleration", "The runner's settings a resource may choose: exact by default, approximations when asked.",
    {name: info for name, info in RequestAcceleration.model_fields.items() if name not in RUNNER_ONLY})


class Lora(Model):
    path: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z0-9._/-]+$",
                      description="LoRA file inside the model volume.", **checks(INSIDE_VOLUME))
    weight: LoraWeight
    experts: LoraExperts


class Output(Model):
    bucket: Bucket
    key: KeyTemplate | None = None
    endpoint_url: Annotated[EndpointUrl, Field(**checks(NO_USER_INFO))]
    region: Region
    credentials_secret: str | None = Field(
        default=None, max_length=253, **checks(OBJECT_NAME),
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (default: the operator's). With "
        "the operator's, keys lie under the namespace's folder; with a Secret of the resource's own, as given.")


class Reporting(Model):
    redis_url: Annotated[RedisUrl, Field(**checks(NO_USER_INFO))]
    password_secret: SecretKey | None = Field(default=None, description="Redis password, from a Secret.")


class Resources(Model):
    gpus: int = Field(default=1, ge=0, le=16, description="GPUs for the pod (0: CPU only, for tests).")
    gpu_resource: str = Field(default="nvidia.com/gpu", max_length=253, description="Extended resource name.",
                              **checks(EXTENDED_RESOURCE))
    cpu: str | None = Field(default=None, max_length=32, description="CPU request and limit, e.g. '8'.",
                            **checks(QUANTITY))
    memory: str | None = Field(default=None, max_length=32, description="Memory request and limit, e.g. '64Gi'.",
                               **checks(QUANTITY))


class Toleration(Model):
    """A pod toleration, as in a Pod's spec."""

    key: str | None = Field(default=None, description="Taint key; empty with Exists: every taint.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal (default).")
    value: str | None = Field(default=None, description="Taint value, with Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect; empty: all.")
    toleration_seconds: int | None = Field(default=None, description="NoExecute: how long the pod stays.")


class VideoGenerationSpec(Model):
    """What to generate, where the weights are, where the MP4 goes, and how to run it."""

    model: ModelRef
    task: TaskChoice
    prompt: Prompt
    negative_prompt: NegativePrompt
    image: Annotated[ImageUrl, Field(**checks(NO_USER_INFO, PUBLIC_LITERAL))]
    video: Video = Field(default_factory=Video, description="Size, frames and fps (default: the family's).")
    sampling: Sampling = Field(default_factory=Sampling, description="Steps, guidance, shift, solver, seed.")
    loras: list[Lora] = Field(default_factory=list, max_length=MAX_LORAS, description="LoRAs merged into the model.")
    output: Output = Field(default_factory=Output, description="Where the MP4 goes (S3).")
    reporting: Reporting = Field(default_factory=Reporting, description="Redis for live progress.")
    acceleration: Acceleration = Field(default_factory=Acceleration,
                                       description="Runner speed settings and opt-in approximations.")
    resources: Resources = Field(default_factory=Resources, description="GPUs, CPU and memory of the pod.")
    node_selector: dict[str, str] | None = Field(default=None, description="Node labels the pod must match.")
    tolerations: list[Toleration] | None = Field(default=None, description="Taints the pod tolerates.")
    priority_class_name: str | None = Field(default=None, max_length=253, description="Pod priority class.",
                                            **checks(OBJECT_NAME))
    runner_image: str | None = Field(default=None, max_length=512, description="Runner image override.")
    deadline_seconds: int | None = Field(default=None, ge=60, description="Job activeDeadlineSeconds.")
    retries: int = Field(default=2, ge=0, le=10, description="Retries of retryable failures (backoffLimit).")
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0,
                                                   description="Delete the finished Job (never the resource) after.")
    suspend: bool = Field(default=False, description="Stop (delete the running pod) while true; resume when false.")
    queue_name: str | None = Field(default=None, max_length=63, description="Kueue LocalQueue.",
                                   **checks(OBJECT_NAME))
    workload_priority_class_name: str | None = Field(
        default=None, max_length=253, **checks(OBJECT_NAME),
        description="Kueue WorkloadPriorityClass (with queueName): the video's priority in Kueue's queues and "
        "preemption, among those the operator allows.")


class Condition(Model):
    """One condition, in metav1.Condition's shape (kstatus and `kubectl wait --for=condition=` read them)."""

    type: str = Field(description="Queued, Running, Succeeded, Failed or Suspended (true in that phase); Ready "
                      "(true at rest as asked: Succeeded, or Suspended by spec.suspend); Stalled (true with Failed); "
                      "ProgressAvailable.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="One CamelCase word saying why (the status' reason).")
    message: str = Field(default="", description="Why, in words.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="metadata.generation this was computed from.")


def status_part(name: str, doc: str, fields: dict[str, FieldInfo]) -> type[Model]:
    """A status object made of fields the runner declares (its progress, its result): each
    optional in status, with the runner's type and description."""
    return create_model(name, __base__=Model, __doc__=doc, **{
        field: (info.annotation | None, Field(default=None, description=info.description))
        for field, info in fields.items()})


PROGRESS_FIELDS = ("stage", "percent", "step", "total_steps", "eta_seconds", "message")
OUTPUT_FIELDS = ("uri", "bytes", "sha256", "frames", "width", "height", "fps")  # not the pod's own path
RESULT_FIELDS = ("seed", "resumed_from_step", "timings")
Progress = status_part("Progress", "Live progress, from the runner's reports in Redis.",
                       {name: ProgressState.model_fields[name] for name in PROGRESS_FIELDS})
OutputStatus = status_part("OutputStatus", "The video made, from the runner's termination message.",
                           {**{name: VideoOutput.model_fields[name] for name in OUTPUT_FIELDS},
                            **{name: RunResult.model_fields[name] for name in RESULT_FIELDS}})


Phase = Literal["Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended"]


class VideoGenerationStatus(Model):
    """What happened, written by the operator alone."""

    phase: Phase | None = Field(default=None, description="Pending, Queued, Running, Succeeded, Failed or Suspended.")
    reason: str | None = Field(default=None, description="Why it is in this phase, one CamelCase word "
                               "(Unschedulable, Generating, Generated, InvalidSpec, ModelNotFound, …).")
    message: str | None = Field(default=None, description="Why, in words.")
    observed_generation: int | None = Field(default=None, description="metadata.generation the status was "
                                            "computed from.")
    job_name: str | None = Field(default=None, description="The Job that runs the generation.")
    attempts: int | None = Field(default=None, description="Pods that ran (retries included).")
    start_time: str | None = Field(default=None, description="When the Job started (RFC 3339).")
    completion_time: str | None = Field(default=None, description="When the Job succeeded or failed (RFC 3339).")
    progress: Progress | None = Field(default=None, description="Live progress, from Redis.")
    output: OutputStatus | None = Field(default=None, description="The video, once Succeeded.")
    conditions: list[Condition] | None = Field(
        default=None, description="Conditions, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})


def quoted(names) -> str:
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


def by_preset(value) -> str:
    """A CEL expression choosing `value(preset)` by self.model.preset (the last preset is the else)."""
    *first, last = PRESETS.values()
    return "".join(f"self.model.preset == '{p.name}' ? {value(p)} : " for p in first) + str(value(last))


def spec_rules() -> list[dict]:
    """Rules the API server checks on create/update (crd.py attaches them); those that depend on
    the model family are made from the runner's presets, so a new family is one edit there."""
    multiples = {}
    for p in PRESETS.values():
        multiples.setdefault(p.size_multiple, []).append(p.name)
    sizes = ", ".join(f"{m} for {' and '.join(names)}" for m, names in multiples.items())
    tasks = "; ".join(f"{p.name}: {', '.join(p.tasks)}" for p in PRESETS.values())
    two_experts = [p.name for p in PRESETS.values() if p.two_experts]
    image_by_default = [p.name for p in PRESETS.values() if p.tasks[0] == "i2v"]
    return [
        rule("!has(self.video.frames) || self.video.frames % 4 == 1", "must be 4k+1 (81, 121, …)", ".video.frames"),
        *(rule(f"!has(self.video.{side}) || self.video.{side} % ({by_preset(lambda p: p.size_multiple)}) == 0",
               f"must be a multiple of {sizes}", f".video.{side}") for side in ("width", "height")),
        rule(f"!has(self.task) || self.task in ({by_preset(lambda p: quoted(p.tasks))})",
             f"is not supported by this model ({tasks})", ".task"),
        rule(f"has(self.image) || (has(self.task) ? self.task != 'i2v' : !(self.model.preset in "
             f"{quoted(image_by_default)}))", "is required for image-to-video", ".image"),
        rule(f"!has(self.sampling.guidanceScale2) || self.model.preset in {quoted(two_experts)}",
             f"is only for the two-expert models ({', '.join(two_experts)})", ".sampling.guidanceScale2"),
        rule("self.prompt.trim().size() > 0", "must not be blank", ".prompt"),
        rule("!has(self.workloadPriorityClassName) || has(self.queueName)", "needs spec.queueName: Kueue's "
             "priority orders its queues", ".workloadPriorityClassName"),
    ]


SPEC_RULES = spec_rules()
MODEL_RULES = [
    rule("has(self.pvc) != has(self.hostPath)", "set exactly one of pvc or hostPath"),
]
