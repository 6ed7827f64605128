"""Frames to MP4.

The pipeline's frames are floats in [0, 1] on its device; imageio wants uint8 (H, W, 3) images
on the host, or it fails with "Image must have 1, 2, 3 or 4 channels".
"""

import hashlib
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch


def to_uint8_video(frames: torch.Tensor) -> np.ndarray:
    """One video as uint8 (frames, H, W, 3) on the host. Converted where the frames are (the
    GPU): a quarter of the bytes cross to the host, and no float pass runs on the CPU."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected one video shaped (frames, H, W, 3), got {tuple(frames.shape)}")
    return frames.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy()


def write_mp4(video: np.ndarray, path: Path, fps: int) -> None:
    """H.264 in yuv420p, which every browser and player decodes."""
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames shaped (frames, H, W, 3), got {video.dtype} {video.shape}")
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
