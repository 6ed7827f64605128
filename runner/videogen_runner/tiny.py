"""Tiny random-weight Wan2.2 models of each family, written with save_pretrained.

They have the real structure (TI2V-5B: Wan2.2 VAE with 16x spatial compression and per-token
timesteps; A14B: two experts with a boundary ratio; I2V: image-conditioned input channels) at
a size that runs on a CPU in seconds, so tests and the demo exercise the runner's real loading
code with nothing downloaded. The tokenizer is a small word-level one, built offline.

    python -m videogen_runner.tiny FOLDER [--family ti2v-5b|t2v-a14b|i2v-a14b]
"""

import argparse
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from videogen_runner.presets import PRESETS

WORDS = (
    "a an the of in on over under with and at by to from is are cat dog eagle bird fish horse fox "
    "storm sea ocean river forest mountain city street night day sunset sunrise rain snow fire light "
    "red blue green golden white black majestic flying running walking swimming slow fast camera "
    "close up wide shot cinematic blurry low quality static ugly"
).split()
TEXT_DIM = 32


def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def text_encoder(vocab_size: int) -> UMT5EncoderModel:
    config = UMT5Config(vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True)
    return UMT5EncoderModel(config).eval()


def transformer(in_channels: int, out_channels: int) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=in_channels,
        out_channels=out_channels, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
    ).eval()


def vae_latent_channels(family: str) -> int:
    return 8 if family == "ti2v-5b" else 16


def vae(family: str) -> AutoencoderKLWan:
    """TI2V-5B: the Wan2.2 VAE (residual, patchified, 16x spatial; 8 latent channels here, 48 in
    the real one). A14B: the Wan2.1 VAE (8x spatial, 16 latent channels)."""
    z = vae_latent_channels(family)
    if family == "ti2v-5b":
        return AutoencoderKLWan(base_dim=16, decoder_base_dim=16, z_dim=z, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                                scale_factor_spatial=16, scale_factor_temporal=4,
                                latents_mean=[0.0] * z, latents_std=[1.0] * z)
    return AutoencoderKLWan(base_dim=16, z_dim=z, dim_mult=[1, 2, 2, 2], num_res_blocks=1)


def write(folder: Path, family: str, seed: int = 0) -> Path:
    """Writes a tiny model of `family` to `folder` and returns the folder."""
    preset = PRESETS[family]
    torch.manual_seed(seed)
    tok = tokenizer()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=preset.flow_shift)
    common = dict(tokenizer=tok, text_encoder=text_encoder(len(tok)), scheduler=scheduler)
    z = vae_latent_channels(family)
    if family == "ti2v-5b":
        pipe = WanPipeline(vae=vae(family), transformer=transformer(z, z), expand_timesteps=True, **common)
    elif family == "t2v-a14b":  # two experts split at the boundary
        pipe = WanPipeline(vae=vae(family), transformer=transformer(z, z), transformer_2=transformer(z, z),
                           boundary_ratio=0.875, **common)
    else:  # i2v-a14b: noise, image latents and a 4-channel frame mask
        pipe = WanImageToVideoPipeline(vae=vae(family), transformer=transformer(2 * z + 4, z),
                                       transformer_2=transformer(2 * z + 4, z), boundary_ratio=0.9,
                                       image_processor=None, image_encoder=None, **common)
    pipe.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--family", choices=sorted(PRESETS), default="ti2v-5b")
    args = parser.parse_args()
    print(write(args.folder, args.family))


if __name__ == "__main__":
    main()
