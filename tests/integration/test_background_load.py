"""The A14B low-noise expert read in the background: the same model as diffusers' from_pretrained."""

import pytest
import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file, save_file

from videogen_runner import background_load
from videogen_runner.errors import ModelNotFound


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_expert_read_in_the_background_is_the_one_from_pretrained_builds(tiny_models, dtype):
    path = str(tiny_models["t2v-a14b"])
    reference = WanTransformer3DModel.from_pretrained(path, subfolder="transformer_2", torch_dtype=dtype,
                                                      device_map="cpu")
    expert = background_load.start(path, "transformer_2", dtype, torch.device("cpu")).result(timeout=60)
    ours, theirs = expert.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype, name
        assert torch.equal(ours[name], tensor), name
    buffers = dict(reference.named_buffers())  # also those computed at construction (not in the files)
    for name, buffer in expert.named_buffers():
        assert buffer.dtype == buffers[name].dtype and torch.equal(buffer, buffers[name]), name
    assert not expert.training and not any(p.requires_grad for p in expert.parameters())
    assert torch.get_default_dtype() == torch.float32  # restored for everything else in the process
    assert expert.config == reference.config


def test_a_folder_missing_weights_fails_naming_them(tiny_models, tmp_path):
    source = tiny_models["t2v-a14b"] / "transformer_2"
    folder = tmp_path / "model"
    (folder / "transformer_2").mkdir(parents=True)
    (folder / "transformer_2" / "config.json").write_text((source / "config.json").read_text())
    tensors = load_file(next(source.glob("*.safetensors")))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, folder / "transformer_2" / "diffusion_pytorch_model.safetensors")
    future = background_load.start(str(folder), "transformer_2", torch.float32, torch.device("cpu"))
    with pytest.raises(ModelNotFound, match=f"lacks 1 weights, e.g. {dropped}"):
        future.result(timeout=60)
