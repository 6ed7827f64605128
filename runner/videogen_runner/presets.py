"""The Wan2.2 model families and their official sampling defaults.

Pure data (no torch): the operator imports it to default and validate specs.
"""

from dataclasses import dataclass
from typing import Literal

PresetName = Literal["ti2v-5b", "t2v-a14b", "i2v-a14b"]
Task = Literal["t2v", "i2v", "ti2v"]


@dataclass(frozen=True)
class Preset:
    name: PresetName
    tasks: tuple[Task, ...]  # the first is the default
    width: int
    height: int
    frames: int
    fps: int
    steps: int
    guidance_scale: float
    guidance_scale_2: float | None  # only the two-expert A14B models have a second scale
    flow_shift: float
    size_multiple: int  # VAE spatial factor × transformer patch size
    two_experts: bool


PRESETS: dict[str, Preset] = {
    # Wan-AI/Wan2.2-TI2V-5B: one transformer, Wan2.2 VAE (16× spatial), per-token timesteps.
    "ti2v-5b": Preset(
        name="ti2v-5b", tasks=("ti2v", "t2v", "i2v"),
        width=1280, height=704, frames=121, fps=24, steps=50,
        guidance_scale=5.0, guidance_scale_2=None, flow_shift=5.0, size_multiple=32, two_experts=False,
    ),
    # Wan-AI/Wan2.2-T2V-A14B: high-noise and low-noise experts, Wan2.1 VAE (8× spatial).
    "t2v-a14b": Preset(
        name="t2v-a14b", tasks=("t2v",),
        width=1280, height=720, frames=81, fps=16, steps=40,
        guidance_scale=4.0, guidance_scale_2=3.0, flow_shift=12.0, size_multiple=16, two_experts=True,
    ),
    # Wan-AI/Wan2.2-I2V-A14B: like T2V-A14B, conditioned on a first frame.
    "i2v-a14b": Preset(
        name="i2v-a14b", tasks=("i2v",),
        width=1280, height=720, frames=81, fps=16, steps=40,
        guidance_scale=3.5, guidance_scale_2=3.5, flow_shift=5.0, size_multiple=16, two_experts=True,
    ),
}
