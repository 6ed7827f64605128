"""The transformers read in the background: the same models as diffusers' from_pretrained, and
every damaged file a clear failure at the first forward."""

import json
import struct
import threading

import pytest
import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file, save_file

from videogen_runner import background_load
from videogen_runner.errors import ModelNotFound


def assert_same_model(ours, reference):
    theirs = reference.state_dict()
    assert ours.state_dict().keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert ours.state_dict()[name].dtype == tensor.dtype, name
        assert torch.equal(ours.state_dict()[name], tensor), name
    buffers = dict(reference.named_buffers())  # also those computed at construction (not in the files)
    for name, buffer in ours.named_buffers():
        assert buffer.dtype == buffers[name].dtype and torch.equal(buffer, buffers[name]), name
    assert not ours.training and not any(p.requires_grad for p in ours.parameters())
    assert ours.config == reference.config


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_transformers_read_in_the_background_are_the_ones_from_pretrained_builds(tiny_models, dtype):
    path = str(tiny_models["t2v-a14b"])
    models = background_load.start(path, ["transformer", "transformer_2"], dtype, torch.device("cpu"))
    assert list(models) == ["transformer", "transformer_2"]
    for subfolder, model in models.items():
        background_load.wait(model)
        assert_same_model(model, WanTransformer3DModel.from_pretrained(path, subfolder=subfolder, torch_dtype=dtype,
                                                                       device_map="cpu"))
    assert torch.get_default_dtype() == torch.float32  # restored for everything else in the process


def test_tensors_larger_than_a_buffer_and_runs_across_buffers_read_the_same(tiny_models, monkeypatch):
    path = str(tiny_models["t2v-a14b"])
    file = next((tiny_models["t2v-a14b"] / "transformer").glob("*.safetensors"))
    sizes = sorted(t.end - t.begin for t in background_load.stored_tensors(file))
    monkeypatch.setattr(background_load, "BUFFER_BYTES", sizes[len(sizes) // 2])  # half the tensors exceed it
    assert len(background_load.runs(background_load.stored_tensors(file), sizes[len(sizes) // 2])) > 10
    model = background_load.start(path, ["transformer"], torch.bfloat16, torch.device("cpu"))["transformer"]
    background_load.wait(model)
    assert_same_model(model, WanTransformer3DModel.from_pretrained(path, subfolder="transformer",
                                                                   torch_dtype=torch.bfloat16, device_map="cpu"))


def test_the_first_forward_waits_for_the_weights_and_counts_the_wait(tiny_models, monkeypatch):
    release = threading.Event()
    fill = background_load.fill
    monkeypatch.setattr(background_load, "fill", lambda *args: (release.wait(30), fill(*args))[1])
    models = background_load.start(str(tiny_models["ti2v-5b"]), ["transformer"], torch.float32, torch.device("cpu"))
    model = models["transformer"]
    threading.Timer(0.5, release.set).start()
    config = model.config
    hidden = torch.randn(1, config.in_channels, 1, 4, 4)
    with torch.no_grad():
        model(hidden_states=hidden, timestep=torch.tensor([500]),
              encoder_hidden_states=torch.randn(1, 8, config.text_dim), return_dict=False)
    assert 0.3 < background_load.waited([model, None]) < 30
    reference = WanTransformer3DModel.from_pretrained(str(tiny_models["ti2v-5b"]), subfolder="transformer")
    assert_same_model(model, reference)


def copy_folder(tiny_models, tmp_path, edit):
    """The tiny A14B transformer folder with its weights changed by `edit(tensors) -> tensors`."""
    source = tiny_models["t2v-a14b"] / "transformer"
    folder = tmp_path / "model"
    (folder / "transformer").mkdir(parents=True)
    (folder / "transformer" / "config.json").write_text((source / "config.json").read_text())
    tensors = edit(load_file(next(source.glob("*.safetensors"))))
    file = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    save_file(tensors, file)
    return folder, file


def failure_of(folder) -> str:
    """What loading the folder fails with: at load (what the headers show) or at the first forward."""
    with pytest.raises(ModelNotFound) as raised:
        background_load.wait(background_load.start(str(folder), ["transformer"], torch.float32,
                                                   torch.device("cpu"))["transformer"])
    return str(raised.value)


def test_a_folder_missing_weights_fails_naming_them(tiny_models, tmp_path):
    dropped = []
    folder, _ = copy_folder(tiny_models, tmp_path, lambda t: (dropped.append(sorted(t)[0]), t.pop(sorted(t)[0]), t)[2])
    assert f"lacks 1 weights, e.g. {dropped[0]}" in failure_of(folder)


def test_a_tensor_the_model_does_not_have_fails_naming_it(tiny_models, tmp_path):
    folder, file = copy_folder(tiny_models, tmp_path, lambda t: {**t, "blocks.99.extra": torch.zeros(3)})
    assert failure_of(folder) == f"model.path: {file} holds blocks.99.extra, which the model does not have"


def test_a_misshapen_tensor_fails_naming_both_shapes(tiny_models, tmp_path):
    name = "proj_out.bias"
    folder, file = copy_folder(tiny_models, tmp_path, lambda t: {**t, name: torch.zeros(t[name].numel() + 1)})
    assert "holds proj_out.bias of shape [" in failure_of(folder) and "the model's is [" in failure_of(folder)


def test_a_file_cut_short_fails_where_it_ends(tiny_models, tmp_path):
    folder, file = copy_folder(tiny_models, tmp_path, lambda t: t)
    size = file.stat().st_size
    with open(file, "r+b") as f:
        f.truncate(size - 100)
    assert failure_of(folder).startswith(f"model.path: {file} ends at byte ")


def test_a_file_that_is_not_safetensors_fails_naming_it(tiny_models, tmp_path):
    folder, file = copy_folder(tiny_models, tmp_path, lambda t: t)
    file.write_bytes(struct.pack("<Q", 10) + b"not json!!")
    assert failure_of(folder).startswith(f"model.path: {file} is not a readable safetensors file")


def test_weights_stored_in_another_dtype_are_converted_as_from_pretrained_converts_them(tiny_models, tmp_path):
    folder, file = copy_folder(tiny_models, tmp_path, lambda t: {k: v.to(torch.bfloat16) for k, v in t.items()})
    header = json.loads(file.read_bytes()[8:8 + struct.unpack("<Q", file.read_bytes()[:8])[0]])
    assert {info["dtype"] for key, info in header.items() if key != "__metadata__"} == {"BF16"}
    model = background_load.start(str(folder), ["transformer"], torch.float32, torch.device("cpu"))["transformer"]
    background_load.wait(model)
    assert_same_model(model, WanTransformer3DModel.from_pretrained(str(folder), subfolder="transformer",
                                                                   torch_dtype=torch.float32, device_map="cpu"))



def test_tensors_at_offsets_unaligned_for_their_dtype_are_read_too(tiny_models, tmp_path):
    """safetensors aligns every tensor for its dtype; a file from another writer may not (here: two
    bytes before the first tensor, so every float32 one starts at 2 mod 4)."""
    folder, file = copy_folder(tiny_models, tmp_path, lambda t: t)
    tensors = {name: tensor.clone() for name, tensor in load_file(file).items()}  # not the file's memory map
    header, data = {}, bytearray(2)
    for name, tensor in sorted(tensors.items()):
        raw = tensor.contiguous().view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    file.write_bytes(struct.pack("<Q", len(text)) + text + bytes(data))
    assert all(t.begin % 4 == 2 for t in background_load.stored_tensors(file))
    model = background_load.start(str(folder), ["transformer"], torch.float32, torch.device("cpu"))["transformer"]
    background_load.wait(model)
    ours = model.state_dict()
    for name, tensor in tensors.items():
        assert torch.equal(ours[name], tensor), name


def test_a_folder_without_safetensors_weights_fails_naming_it(tiny_models, tmp_path):
    folder, file = copy_folder(tiny_models, tmp_path, lambda t: t)
    file.rename(file.with_suffix(".bin"))
    assert failure_of(folder) == f"model.path: no safetensors weights in {file.parent}"
