"""The result of one run, as written to the termination message and to Redis.

The operator parses it with this same model, so a Redis outage loses nothing: the
termination message (at most 4 KiB) carries the whole outcome.
"""

from typing import Literal

from pydantic import BaseModel, Field

TERMINATION_MESSAGE_LIMIT = 4096


class VideoOutput(BaseModel):
    uri: str | None = Field(default=None, description="s3://bucket/key of the MP4, when uploaded.")
    path: str = Field(description="Local MP4 path inside the pod.")
    bytes: int = Field(description="Size of the MP4.")
    sha256: str = Field(description="SHA-256 of the MP4, in hex.")
    frames: int = Field(description="Frames in the video.")
    width: int = Field(description="Width in pixels.")
    height: int = Field(description="Height in pixels.")
    fps: int = Field(description="Frames per second.")


class Timings(BaseModel):
    """Seconds spent in each stage."""

    imports: float = Field(default=0.0, description="Importing torch and diffusers (weights are read meanwhile).")
    load: float = Field(default=0.0, description="Loading the model onto its devices.")
    encode: float = Field(default=0.0, description="Encoding the prompt (and the image).")
    first_step: float = Field(default=0.0, description="The first denoising step (compilation or its cache included).")
    weights_wait: float = Field(default=0.0, description="Denoising waiting for transformer weights still being "
                                "read in the background (acceleration.overlap_load).")
    denoise: float = Field(default=0.0, description="The denoising loop.")
    decode: float = Field(default=0.0, description="Decoding the latents with the VAE.")
    export: float = Field(default=0.0, description="Finishing the MP4 once decoding ends (it is encoded "
                          "while the VAE decodes).")
    upload: float = Field(default=0.0, description="Uploading it to S3.")
    total: float = Field(default=0.0, description="The whole run.")


class RunResult(BaseModel):
    task_id: str
    status: Literal["succeeded", "failed"]
    exit_code: int
    reason: str | None = None
    message: str | None = None
    seed: int | None = Field(default=None, description="Seed used (the one drawn when the request set none).")
    resumed_from_step: int | None = Field(
        default=None, description="The attempt that made the video began after this denoising step, from an "
        "earlier attempt's checkpoint (the steps: it only uploaded a video made before).")
    attention_backend: str | None = None
    output: VideoOutput | None = None
    timings: Timings = Field(default_factory=Timings, description="Seconds spent in each stage.")

    def termination_message(self) -> str:
        """Compact JSON under the kubelet's 4 KiB limit; only the free-text message is ever cut."""
        text = self.model_dump_json(exclude_none=True)
        if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
            return text
        overflow = len(text.encode()) - TERMINATION_MESSAGE_LIMIT + 16
        cut = (self.message or "").encode()[: max(0, len((self.message or "").encode()) - overflow)]
        return self.model_copy(update={"message": cut.decode(errors="ignore") + "…"}).model_dump_json(exclude_none=True)
