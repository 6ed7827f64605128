"""Frames to MP4.

diffusers returns float frames shaped (batch, frames, H, W, 3) in [0, 1]; imageio wants one
video of uint8 (H, W, 3) images, or it fails with "Image must have 1, 2, 3 or 4 channels".
"""

import hashlib
from pathlib import Path

import imageio.v2 as imageio
import numpy as np


def to_uint8_video(frames: np.ndarray) -> np.ndarray:
    """One video as uint8 (frames, H, W, 3), from the pipeline's float output."""
    if frames.ndim == 5:
        if frames.shape[0] != 1:
            raise ValueError(f"expected one video, got a batch of {frames.shape[0]}")
        frames = frames[0]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames shaped (frames, H, W, 3), got {frames.shape}")
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def write_mp4(frames: np.ndarray, path: Path, fps: int) -> None:
    """H.264 in yuv420p, which every browser and player decodes."""
    video = to_uint8_video(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Sizes are validated as multiples of 16, so the writer never resizes (macro_block_size).
    with imageio.get_writer(
        path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p", quality=8, macro_block_size=16
    ) as writer:
        for frame in video:
            writer.append_data(frame)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
