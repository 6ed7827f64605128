"""Reading a model folder without loading it (no torch): which family it is, and whether it
matches the request, so a wrong path fails in milliseconds."""

import json
from pathlib import Path

from videogen_runner.errors import ModelNotFound
from videogen_runner.request import GenerationRequest


def read_model_index(path: str) -> dict:
    """The folder's model_index.json, or ModelNotFound naming what is missing."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise ModelNotFound(f"model.path: no diffusers model at {path} (missing {index.name})")
    try:
        return json.loads(index.read_text())
    except (OSError, ValueError) as e:
        raise ModelNotFound(f"model.path: unreadable {index}: {e}") from e


def infer_preset(path: str) -> str:
    """The family of a model folder: a second transformer, and the pipeline class, tell them apart."""
    model_index = read_model_index(path)
    if model_index.get("transformer_2", [None])[0] is None:
        return "ti2v-5b"
    return "i2v-a14b" if model_index["_class_name"] == "WanImageToVideoPipeline" else "t2v-a14b"


def check(request: GenerationRequest) -> None:
    """Fails before loading when the folder is not the family the request names."""
    found = infer_preset(request.model.path)
    if found != request.model.preset:
        raise ModelNotFound(
            f"model.path: {request.model.path} holds a {found} model, not a {request.model.preset} model")
    for lora in request.loras:
        if not Path(lora.path).exists():
            raise ModelNotFound(f"loras: no LoRA at {lora.path}")


def attention_heads(path: str) -> int:
    """Attention heads of the (first) transformer: several GPUs split them among themselves."""
    config = Path(path) / "transformer" / "config.json"
    try:
        return int(json.loads(config.read_text())["num_attention_heads"])
    except (OSError, ValueError, KeyError) as e:
        raise ModelNotFound(f"model.path: unreadable {config}: {e}") from e
