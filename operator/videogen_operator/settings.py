"""Operator configuration, from VIDEOGEN_* environment variables (the Helm chart sets them)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDEOGEN_", env_nested_delimiter="__")

    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty: all.")
    runner_image: str = Field(default="videogen-runner:0.1.0", description="Default runner image.")
    runner_command: list[str] = Field(default_factory=lambda: ["videogen-runner"])
    image_pull_policy: str = "IfNotPresent"
    allow_image_override: bool = Field(
        default=False, description="Let resources choose their runner image (spec.runnerImage).")
    allowed_host_paths: list[str] = Field(
        default_factory=list, description="Folders under which spec.model.hostPath may point; empty: none.")
    allowed_priority_classes: list[str] = Field(
        default_factory=list, description="PriorityClasses spec.priorityClassName may name; empty: none.")
    allowed_workload_priority_classes: list[str] = Field(
        default_factory=list, description="Kueue WorkloadPriorityClasses spec.workloadPriorityClassName may name; "
        "empty: none.")
    runner_service_account: str | None = Field(
        default=None, description="ServiceAccount of runner pods, e.g. for S3 through IRSA or workload identity.")
    runner_image_pull_secrets: list[dict[str, str]] = Field(
        default_factory=list, description="imagePullSecrets of runner pods, as [{name: …}].")
    s3_endpoint_url: str | None = Field(default=None, description="Default S3 endpoint (else AWS).")
    s3_region: str | None = None
    s3_bucket: str | None = Field(default=None, description="Default bucket when a spec names none.")
    s3_credentials_secret: str | None = Field(
        default=None, description="Default Secret (in the resource's namespace) with AWS_ACCESS_KEY_ID/SECRET.")
    redis_url: str | None = Field(default=None, description="Default Redis for progress, and the operator's own.")
    redis_password_secret: str | None = Field(
        default=None, description="Secret, in each resource's namespace, with key REDIS_PASSWORD and optionally "
        "REDIS_USERNAME (the namespace's Redis ACL user) for runner pods.")
    redis_username: str | None = Field(default=None, description="The operator's own Redis ACL user (default: "
                                       "Redis' default user).")
    redis_password: str | None = Field(default=None, description="The operator's own Redis password.")
    redis_key_prefix: str = "videogen"
    job_ttl_seconds: int | None = Field(
        default=24 * 3600, ge=0, description="Default ttlSecondsAfterFinished of Jobs, given to a finished Job once "
        "its outcome is in the resource's status; unset: finished Jobs stay until their resource is deleted.")
    deadline_seconds: int | None = Field(default=None, description="Default activeDeadlineSeconds.")
    scratch_size: str = Field(default="32Gi", description="Size limit of the pod's writable /tmp.")
    default_cpu: str | None = Field(default=None, description="CPU of runner pods whose resource sets none.")
    default_memory: str | None = Field(default=None, description="Memory of runner pods whose resource sets none.")
    compile_cache_claim: str | None = Field(
        default=None, description="PVC (in each resource's namespace) for torch.compile's cache: later pods skip "
        "most of the compilation (bench/RESULTS.md: first step 11.4 s → 4.4 s for TI2V-5B).")
    checkpoint_seconds: float = Field(
        default=60.0, ge=0, le=3600, description="Seconds of generation between checkpoints of a run, from which "
        "a later attempt resumes (0: none); they go to S3 under the namespace's folder, or to checkpointClaim.")
    checkpoint_claim: str | None = Field(
        default=None, description="PVC (in each resource's namespace) for checkpoints instead of S3: it also keeps "
        "a finished video whose upload failed, so that the next attempt only uploads.")
    upload_retry_seconds: float = Field(
        default=300.0, ge=0, le=3600, description="How long a runner pod retries a failed upload before it fails.")
    termination_grace_seconds: int = Field(
        default=60, description="Seconds a stopped runner has to save its checkpoint and exit.")
    progress_interval_seconds: float = Field(default=2.0, description="At most one progress patch per this.")
    resync_seconds: float = Field(default=60.0, gt=0, description="Every unfinished resource is refreshed this often.")
    leader_election: bool = Field(default=True, description="Act only while holding the Lease (several replicas).")
    lease_name: str = Field(default="videogen-operator", description="The Lease of the operators that share work.")
    lease_namespace: str = Field(
        default="kube-system", description="Where the Lease lives when the whole cluster is watched; with "
        "namespaces, each holds its own, so two operators watching one namespace never both act.")
    lease_seconds: float = Field(default=8.0, gt=2, description="A Lease not renewed for this long is taken over.")
    metrics_port: int = 8080
    health_port: int = 8081
