import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from videogen_runner import export
from videogen_runner.errors import InvalidRequest
from videogen_runner.export import Mp4Writer, to_uint8_video


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
        Mp4Writer(tmp_path / "x.mp4", 24).add_uint8(np.zeros((5, 16, 16, 3), np.float32))
    assert not (tmp_path / "x.mp4").exists()


def noise_video(frames=9, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (frames, 32, 48, 3), dtype=np.uint8)


def test_a_video_written_in_chunks_is_the_file_written_at_once(tmp_path):
    video = noise_video()
    whole = Mp4Writer(tmp_path / "whole.mp4", 16)
    whole.add_uint8(video)
    whole.close()
    writer = Mp4Writer(tmp_path / "chunks" / "video.mp4", 16)  # a folder that does not exist yet
    for chunk in (video[:1], video[1:5], video[5:]):  # as Wan's decoder hands them over: 1, then 4 at a time
        writer.add(torch.from_numpy(chunk).float() / 255.0)
    assert writer.close() == (9, 32, 48)
    assert (tmp_path / "chunks" / "video.mp4").read_bytes() == (tmp_path / "whole.mp4").read_bytes()
    frames = imageio.mimread(tmp_path / "whole.mp4", format="FFMPEG")
    assert len(frames) == 9 and frames[0].shape == (32, 48, 3)


def test_a_chunk_of_another_size_or_no_frames_at_all_is_refused(tmp_path):
    writer = Mp4Writer(tmp_path / "x.mp4", 16)
    with pytest.raises(ValueError, match="no frames"):
        writer.close()
    writer.add_uint8(noise_video(2))
    with pytest.raises(ValueError, match="frames of 48×16 in a video of 48×32"):
        writer.add_uint8(noise_video(2)[:, :16])
    writer.abort()
    assert not (tmp_path / "x.mp4").exists()


def test_an_encoder_failure_is_raised_by_close_and_never_blocks_the_decoder(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    writer = Mp4Writer(tmp_path / "file" / "video.mp4", 16)
    for _ in range(20):  # more chunks than the encoder would ever take: add() must not wait for it
        writer.add_uint8(noise_video(2))
    with pytest.raises(OSError):
        writer.close()


def test_an_aborted_video_leaves_no_partial_file(tmp_path):
    writer = Mp4Writer(tmp_path / "video.mp4", 16)
    writer.add_uint8(noise_video(5))
    writer.abort()
    assert not (tmp_path / "video.mp4").exists()


def test_a_folder_as_output_path_gets_a_file_named_per_task(tmp_path):
    (tmp_path / "mounted").mkdir()
    assert export.destination(str(tmp_path / "mounted"), "task-1") == tmp_path / "mounted" / "task-1.mp4"
    assert export.destination(f"{tmp_path}/new/", "task-1") == tmp_path / "new" / "task-1.mp4"
    assert (tmp_path / "new").is_dir()  # made now, not after the GPU work
    assert export.destination(str(tmp_path / "a" / "b.mp4"), "task-1") == tmp_path / "a" / "b.mp4"


def test_an_output_path_that_cannot_be_written_is_refused_naming_the_field(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidRequest, match=r"^output.path: cannot write into .*file"):
        export.destination(str(tmp_path / "file" / "out.mp4"), "task-1")
