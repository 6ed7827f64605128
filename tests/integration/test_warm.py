"""A warm runner (one load, many videos): what each video sets is undone after it, so a video made
after others (with a LoRA, another sampler, size and seed, another task, one that failed, one that
was stopped) is bit for bit the video a new process makes. Tiny real models of every family, on
the CPU."""

import subprocess
import sys

import pytest
import torch
from diffusers import WanPipeline, WanTransformer3DModel
from peft import LoraConfig, get_peft_model_state_dict
from PIL import Image

from videogen_runner import pipeline
from videogen_runner.errors import InvalidRequest, Terminated
from videogen_runner.request import GenerationRequest
from videogen_runner.result import Timings

# A new process, as a pod runs one video: load, generate, and the frames saved for comparison.
NEW_PROCESS = """
import sys, torch
from PIL import Image
from videogen_runner import pipeline
from videogen_runner.request import GenerationRequest
from videogen_runner.result import Timings
request = GenerationRequest.model_validate_json(sys.argv[1])
image = Image.open(sys.argv[3]).convert("RGB") if len(sys.argv) > 3 else None
loaded = pipeline.load(request)
torch.save(pipeline.generate_frames(loaded, request, 5, image, Timings(), release_text_encoder=True), sys.argv[2])
"""


def request(models, family, **fields) -> GenerationRequest:
    fields = {"width": 64, "height": 64, "frames": 5, "steps": 3,
              **({"image": "s3://videos/first.png"} if family == "i2v-a14b" else {}), **fields}
    return GenerationRequest(task_id="warm", model={"preset": family, "path": str(models[family])},
                             prompt="a red fox in the snow", negative_prompt="blurry", **fields)


def in_a_new_process(req: GenerationRequest, tmp_path, image_path) -> torch.Tensor:
    out = tmp_path / "new-process.pt"
    subprocess.run([sys.executable, "-c", NEW_PROCESS, req.model_dump_json(), str(out),
                    *([str(image_path)] if image_path else [])], check=True, timeout=600)
    return torch.load(out)


def lora_for(models, family, folder) -> str:
    """A LoRA with random weights for this family's transformer, saved as diffusers does."""
    transformer = WanTransformer3DModel.from_pretrained(models[family], subfolder="transformer")
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    WanPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer))
    return str(folder / "pytorch_lora_weights.safetensors")


def stop_at(step: int, error: Exception):
    def on_step(done, total):
        if done == step:
            raise error
    return on_step


@pytest.mark.parametrize("family", ["ti2v-5b", "t2v-a14b", "i2v-a14b"])
def test_a_warm_runners_video_after_others_is_the_new_process_video(family, tiny_models, tmp_path):
    image_path = tmp_path / "first.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(image_path)
    image = Image.open(image_path).convert("RGB")
    needs_image = family == "i2v-a14b"
    target = request(tiny_models, family, seed=5)
    warm = pipeline.load(target, warm=True)

    def make(req, seed=5, **callbacks):  # the image as the runner fetched it, when the request has one
        return pipeline.generate_frames(warm, req, seed, image if req.image else None, Timings(), **callbacks)

    # 1. A LoRA's video: the LoRA is applied (the video differs) and gone after it.
    lora = lora_for(tiny_models, family, tmp_path)
    plain = make(request(tiny_models, family, seed=9))
    with_lora = make(request(tiny_models, family, seed=9, loras=[{"path": lora, "weight": 1.0}]))
    assert (with_lora - plain).abs().max() > 1e-3
    assert not any("lora" in name for name, _ in warm.pipe.transformer.named_parameters())
    # 2. One that fails mid-denoise, and 3. one that is stopped (SIGTERM), each with a LoRA.
    with pytest.raises(RuntimeError, match="CUDA error"):
        make(request(tiny_models, family, loras=[{"path": lora, "weight": 0.5}]),
             on_step=stop_at(1, RuntimeError("CUDA error: an illegal memory access")))
    with pytest.raises(Terminated):
        make(request(tiny_models, family, steps=6, sampler="euler", flow_shift=3.0),
             on_step=stop_at(2, Terminated("stopped by SIGTERM")))
    # 4. Another size, solver, shift, guidance and seed; for TI2V-5B, image-to-video (another pipeline).
    other_task = {"image": "s3://videos/first.png"} if family == "ti2v-5b" else {}
    make(request(tiny_models, family, width=96, height=64, frames=9, sampler="euler", flow_shift=2.0,
                 guidance_scale=1.5, seed=11, **other_task), seed=11)
    # 5. A request it cannot serve is refused, naming the field, and changes nothing.
    with pytest.raises(InvalidRequest, match="^model: this runner serves"):
        make(request(tiny_models, "ti2v-5b" if family == "t2v-a14b" else "t2v-a14b"))

    after_others = make(target)
    assert torch.equal(after_others, in_a_new_process(target, tmp_path, image_path if needs_image else None))
