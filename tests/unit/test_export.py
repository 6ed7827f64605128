import numpy as np
import pytest
import torch

from videogen_runner.export import to_uint8_video, write_mp4


def test_pipeline_output_becomes_one_uint8_video():
    frames = torch.rand(5, 16, 32, 3, generator=torch.Generator().manual_seed(0))
    frames[0, 0, 0] = torch.tensor([-0.5, 1.5, 1.0])
    frames[0, 0, 1] = torch.tensor([0.5 / 255, 1.5 / 255, 127.49 / 255])
    video = to_uint8_video(frames)
    assert video.shape == (5, 16, 32, 3) and video.dtype == np.uint8
    assert video[0, 0, 0].tolist() == [0, 255, 255]
    assert video[0, 0, 1].tolist() == [0, 2, 127]  # round half to even, as numpy


def test_batches_and_wrong_shapes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="one video"):
        to_uint8_video(torch.zeros(2, 5, 16, 16, 3))
    with pytest.raises(ValueError, match="shaped"):
        to_uint8_video(torch.zeros(5, 3, 16, 16))
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(np.zeros((5, 16, 16, 3), np.float32), tmp_path / "x.mp4", 24)
    assert not (tmp_path / "x.mp4").exists()
