"""Reading a model folder without loading it (no torch): which family it is, and whether it
matches the request, so a wrong path fails in milliseconds; and its weights read ahead into the
page cache while torch imports."""

import json
import logging
import threading
from pathlib import Path

from videogen_runner.errors import ModelNotFound
from videogen_runner.presets import PRESETS
from videogen_runner.request import GenerationRequest

log = logging.getLogger(__name__)
READ_CHUNK = 16 << 20
TRUSTED_LIBRARIES = {"diffusers", "transformers"}  # what a model_index.json may name classes from


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
    """Fails before loading when the folder is not the family the request names, or would run
    code of its own."""
    check_no_code(request.model.path)
    found = infer_preset(request.model.path)
    if found != request.model.preset:
        raise ModelNotFound(
            f"model.path: {request.model.path} holds a {found} model, not a {request.model.preset} model")
    for lora in request.loras:
        if not Path(lora.path).exists():
            raise ModelNotFound(f"loras: no LoRA at {lora.path}")


def check_no_code(path: str) -> None:
    """A folder whose components are classes of its own (a module beside the weights, or a
    config's `auto_map`) would need `trust_remote_code`: code from the model folder, which the
    runner never runs. Permanent: the same folder fails the same way on every attempt."""
    for name, entry in read_model_index(path).items():
        if name.startswith("_") or not isinstance(entry, list) or not entry or entry[0] is None:
            continue
        if entry[0] not in TRUSTED_LIBRARIES:
            raise ModelNotFound(f"model.path: {path} names {name} as {'.'.join(map(str, entry))}, code that "
                                f"comes with the model; only {sorted(TRUSTED_LIBRARIES)} classes are loaded")
        for config in (Path(path) / name / "config.json", Path(path) / name / "tokenizer_config.json"):
            try:
                auto_map = json.loads(config.read_text()).get("auto_map") if config.is_file() else None
            except (OSError, ValueError, AttributeError) as e:
                raise ModelNotFound(f"model.path: unreadable {config}: {e}") from e
            if auto_map:
                raise ModelNotFound(f"model.path: {config} maps its classes to code that comes with the model "
                                    f"(auto_map); only {sorted(TRUSTED_LIBRARIES)} classes are loaded")


def attention_heads(path: str) -> int:
    """Attention heads of the (first) transformer: several GPUs split them among themselves."""
    config = Path(path) / "transformer" / "config.json"
    try:
        return int(json.loads(config.read_text())["num_attention_heads"])
    except (OSError, ValueError, KeyError) as e:
        raise ModelNotFound(f"model.path: unreadable {config}: {e}") from e


def read_ahead(request: GenerationRequest) -> threading.Thread | None:
    """Starts reading the weights that the first step needs into the page cache, in a thread.

    Importing torch and diffusers takes seconds of CPU and no disk; the load that follows is
    bound by the disk. Reading meanwhile overlaps the two. The A14B low-noise expert is left
    out: it loads in the background while the high-noise one denoises (pipeline.load). Skipped
    when the files would not fit in the memory the page cache may use (the pod's limit), where
    they would be read twice."""
    if not request.acceleration.overlap_load:
        return None
    folder = Path(request.model.path)
    parts = ["text_encoder", "transformer", "vae", "image_encoder"]
    if not PRESETS[request.model.preset].two_experts or request.loras:
        parts.append("transformer_2")
    files = [f for part in parts for f in sorted((folder / part).glob("*.safetensors"))]
    size = sum(f.stat().st_size for f in files)
    room = memory_for_cache()
    if not files or size > room // 2:
        log.info("no read-ahead of %.1f GiB of weights (room for %.1f GiB)", size / 2**30, room / 2**30)
        return None
    thread = threading.Thread(target=read_files, args=(files,), name="read-ahead", daemon=True)
    thread.start()
    return thread


def read_files(files: list[Path]) -> None:
    buffer = bytearray(READ_CHUNK)
    for path in files:
        try:
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass
        except OSError as e:  # the load that follows reports what is wrong with the folder
            log.debug("read-ahead stopped at %s: %s", path, e)
            return


def memory_for_cache() -> int:
    """Bytes the page cache may grow by: what the machine has free, within the cgroup's limit."""
    free = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass  # no cgroup v2 here: the machine's figure
    return max(free, 0)
