"""Frames to MP4, encoded while the VAE decodes.

The pipeline's frames are floats in [0, 1] on its device; imageio wants uint8 (H, W, 3) images
on the host, or it fails with "Image must have 1, 2, 3 or 4 channels". The encoder (ffmpeg) is
another process: fed from a thread of its own as the decoder hands over each chunk of frames,
it encodes while the GPU decodes the next ones, and only the last chunk's encoding is left
once decoding ends.
"""

import hashlib
import queue
import tempfile
import threading
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch

from videogen_runner.errors import InvalidRequest


def destination(path: str, task_id: str) -> Path:
    """Where the MP4 goes: `path`, or `<task_id>.mp4` inside it when it names a folder (one that
    exists, or any path ending in /), as the original script's --output_path did. Its folder is
    made and tried for writing here, before any GPU work that could not be saved."""
    target = Path(path)
    if path.endswith("/") or target.is_dir():
        target = target / f"{task_id}.mp4"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target.parent):
            pass
    except OSError as e:
        raise InvalidRequest(f"output.path: cannot write into {target.parent}: {e.strerror or e}") from e
    return target


def to_uint8_video(frames: torch.Tensor) -> np.ndarray:
    """One video as uint8 (frames, H, W, 3) on the host. Converted where the frames are (the
    GPU): a quarter of the bytes cross to the host, and no float pass runs on the CPU."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected one video shaped (frames, H, W, 3), got {tuple(frames.shape)}")
    return frames.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy()


class Mp4Writer:
    """H.264 in yuv420p (what every browser and player decodes), written as frames arrive.

    add() converts a chunk to uint8 and queues it; close() waits for the encoder and returns the
    video's (frames, height, width); abort() stops and removes the partial file."""

    def __init__(self, path: Path, fps: int):
        self.path, self.fps = path, fps
        self.shape: tuple[int, int, int] | None = None
        self.chunks: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def add(self, frames: torch.Tensor) -> None:
        self.add_uint8(to_uint8_video(frames))

    def add_uint8(self, video: np.ndarray) -> None:
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames shaped (frames, H, W, 3), got {video.dtype} {video.shape}")
        if self.shape is None:
            self.shape = (0, *video.shape[1:3])
            self.thread = threading.Thread(target=self._encode, name="mp4-writer", daemon=True)
            self.thread.start()
        elif video.shape[1:3] != self.shape[1:]:
            raise ValueError(f"frames of {video.shape[2]}×{video.shape[1]} in a video of "
                             f"{self.shape[2]}×{self.shape[1]}")
        self.shape = (self.shape[0] + video.shape[0], *self.shape[1:])
        self.chunks.put(video)

    def _queued(self):
        """The chunks, until close() or abort() puts None."""
        while (video := self.chunks.get()) is not None:
            yield video

    def _encode(self) -> None:
        chunks = self._queued()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Sizes are validated as multiples of 16, so the writer never resizes (macro_block_size).
            with imageio.get_writer(self.path, format="FFMPEG", fps=self.fps, codec="libx264",
                                    pixelformat="yuv420p", quality=8, macro_block_size=16) as writer:
                for video in chunks:
                    for frame in video:
                        writer.append_data(frame)
        except BaseException as e:  # noqa: BLE001 - raised again by close()
            self.error = e
            for _ in chunks:  # add() goes on until close(), which reports the error
                pass

    def close(self) -> tuple[int, int, int]:
        if self.shape is None:
            raise ValueError("no frames to write")
        self.chunks.put(None)
        self.thread.join()
        if self.error is not None:
            self.path.unlink(missing_ok=True)
            raise self.error
        return self.shape

    def abort(self) -> None:
        if self.thread is not None:
            self.chunks.put(None)
            self.thread.join()
        self.path.unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
