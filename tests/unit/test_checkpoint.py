"""Checkpoints as data: what is saved comes back exactly, and nothing else is ever trusted."""

import pytest
import torch
from safetensors.torch import save as save_tensors

from videogen_runner import checkpoint
from videogen_runner.checkpoint import Checkpoint, FolderStore, InvalidCheckpoint, decode, encode
from videogen_runner.request import GenerationRequest

CPU = torch.device("cpu")


def request(**fields):
    return GenerationRequest.model_validate({"task_id": "t", "model": {"preset": "t2v-a14b", "path": "/m"},
                                             "prompt": "a fox", "steps": 10, **fields})


def state():
    return Checkpoint(steps_done=4, seed=7, latents=torch.randn(1, 4, 2, 3, 3), expert="low_noise",
                      solver={"model_outputs": [torch.randn(1, 4, 2, 3, 3), None], "lower_order_nums": 2,
                              "last_sample": torch.randn(1, 4, 2, 3, 3), "this_order": 2,
                              "timestep_list": [torch.tensor(812.0), torch.tensor(750.0)]})


def test_what_is_saved_comes_back_exactly():
    saved = state()
    back = decode(encode(saved, "print"), "print", CPU)
    assert (back.steps_done, back.seed, back.expert) == (4, 7, "low_noise")
    assert torch.equal(back.latents, saved.latents) and torch.equal(back.solver["last_sample"],
                                                                    saved.solver["last_sample"])
    assert back.solver["model_outputs"][1] is None and torch.equal(back.solver["model_outputs"][0],
                                                                   saved.solver["model_outputs"][0])
    assert back.solver["lower_order_nums"] == 2 and [t.item() for t in back.solver["timestep_list"]] == [812, 750]


@pytest.mark.parametrize("data, words", [
    (b"", "unreadable"),
    (b"\x00" * 64, "unreadable"),
    (b"\xff" * 8 + b"{}", "unreadable"),
    (save_tensors({"latents": torch.zeros(1)}, metadata={"format": "other"}), "not a videogen-checkpoint"),
    (save_tensors({"latents": torch.zeros(1)}, metadata={"format": checkpoint.FORMAT, "fingerprint": "x"}),
     "another request"),
    (save_tensors({"x": torch.zeros(1)}, metadata={"format": checkpoint.FORMAT, "fingerprint": "print",
                                                   "steps_done": "1", "seed": "1", "expert": "e", "solver": "{}"}),
     "unreadable"),  # no latents
])
def test_anything_else_is_refused(data, words):
    with pytest.raises(InvalidCheckpoint, match=words):
        decode(data, "print", CPU)


def test_a_truncated_checkpoint_is_refused():
    data = encode(state(), "print")
    with pytest.raises(InvalidCheckpoint):
        decode(data[: len(data) - 100], "print", CPU)


def test_the_fingerprint_is_what_decides_the_frames():
    base = checkpoint.fingerprint(request())
    assert checkpoint.fingerprint(request(seed=3, output={"bucket": "videos", "key": "x.mp4"},
                                          checkpoints={"every_seconds": 5})) == base
    assert checkpoint.fingerprint(request(prompt="a cat")) != base
    assert checkpoint.fingerprint(request(steps=11)) != base
    assert checkpoint.fingerprint(request(acceleration={"step_cache": "taylorseer"})) != base


def test_load_ignores_what_does_not_fit_the_request(tmp_path, caplog):
    store = FolderStore(str(tmp_path / "task"))
    wanted = request(seed=7)
    store.put(checkpoint.STATE, encode(state(), checkpoint.fingerprint(wanted)))
    shape = (1, 4, 2, 3, 3)
    assert checkpoint.load(store, wanted, CPU, shape).steps_done == 4
    assert checkpoint.load(store, request(seed=8), CPU, shape) is None  # another seed
    assert checkpoint.load(store, request(seed=7, prompt="a cat"), CPU, shape) is None  # another request
    assert checkpoint.load(store, request(seed=7, steps=4), CPU, shape) is None  # step 4 of 4 is no step to resume
    assert checkpoint.load(store, wanted, CPU, (1, 4, 2, 3, 4)) is None  # latents of another shape
    assert caplog.text.count("ignored") == 4
    assert checkpoint.saved_seed(store, wanted) == 7


def test_the_folder_store_writes_atomically(tmp_path, monkeypatch):
    store = FolderStore(str(tmp_path / "a" / "b"))
    assert store.get("x") is None
    store.put("x", b"one")
    with monkeypatch.context() as m:  # the pod dies while the new bytes are on their way to disk
        m.setattr("os.fsync", lambda fd: (_ for _ in ()).throw(OSError("killed mid-write")))
        with pytest.raises(OSError, match="mid-write"):
            store.put("x", b"two, but never whole")
    assert store.get("x") == b"one"  # the last whole checkpoint, never a torn one
    store.put("x", b"two")
    assert store.get("x") == b"two" and sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["x"]
    store.delete("x")
    store.delete("x")
    assert store.get("x") is None


def test_a_store_that_fails_never_fails_the_generation(tmp_path, caplog):
    class Broken(FolderStore):
        def put(self, name, data):
            raise OSError("disk full")

    saver = checkpoint.Checkpointer(Broken(str(tmp_path)), "print", 7, every_seconds=0)
    saved = state()
    saver.offer(4, saved.latents, saved.solver, saved.expert)
    saver.save_latest()
    saver.close()
    assert "checkpoint after step 4 not saved" in caplog.text and saver.saved_steps == 0
