import numpy as np
import pytest

from videogen_runner.export import to_uint8_video


def test_pipeline_output_becomes_one_uint8_video():
    frames = np.random.default_rng(0).random((1, 5, 16, 32, 3), dtype=np.float32)
    frames[0, 0, 0, 0] = [-0.5, 1.5, 1.0]
    video = to_uint8_video(frames)
    assert video.shape == (5, 16, 32, 3) and video.dtype == np.uint8
    assert video[0, 0, 0].tolist() == [0, 255, 255]


def test_batches_and_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="one video"):
        to_uint8_video(np.zeros((2, 5, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="shaped"):
        to_uint8_video(np.zeros((5, 3, 16, 16), np.float32))
