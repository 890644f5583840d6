"""Tiny Stable Diffusion pipelines with random weights and the real classes.

They exercise exactly the code paths of real checkpoints (same pipeline classes, same loaders),
at a size that runs in milliseconds on a CPU. Used by the test fixtures and the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from sdkit._clip_vocab import clip_tokenizer

# The schedulers' configs as the real checkpoints ship them (SD 1.5 and SDXL base 1.0).
SD15_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}
SDXL_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "prediction_type": "epsilon",
    "use_karras_sigmas": False,
}


def _vae(latent_channels: int = 4) -> AutoencoderKL:
    # Four levels, so the spatial factor is 8 as in every real SD VAE.
    return AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=64,
    )


def _text_config(hidden: int = 32, *, layers: int = 4, act: str = "quick_gelu") -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=hidden,
        hidden_act=act,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        layer_norm_eps=1e-5,
    )


def _realistic_final_norm(encoder: torch.nn.Module) -> None:
    # Trained CLIP encoders end in a layer norm with a bias, so embeddings have a clear nonzero
    # mean (A1111's emphasis rescales by it). A fresh LayerNorm's zero bias would not.
    inner = getattr(encoder, "text_model", encoder)
    norm = inner.final_layer_norm
    with torch.no_grad():
        norm.bias.normal_(0.0, 0.5)


def build_tiny_sd(
    folder: Path,
    *,
    seed: int = 0,
    sample_size: int = 8,
    name: str = "tiny-sd",
    latent_channels: int = 4,
) -> Path:
    """Build an SD 1.x-style pipeline (random weights) and save it in diffusers format.

    ``sample_size`` is in latents: the native image size is 8x that (64 px by default).
    """
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=32,
    )
    vae = _vae(latent_channels)
    text_encoder = CLIPTextModel(_text_config())
    _realistic_final_norm(text_encoder)
    tokenizer = clip_tokenizer(folder / "_tok")
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = folder / name
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_sdxl(folder: Path, *, seed: int = 0) -> Path:
    """Build an SDXL-style pipeline (two text encoders, micro-conditioning) and save it."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        # as in SDXL: time ids (6 x 8) + the second encoder's pooled width; the context is
        # both encoders' widths side by side (32 + 48, like 768 + 1280)
        projection_class_embeddings_input_dim=6 * 8 + 48,
        cross_attention_dim=32 + 48,
        norm_num_groups=32,
    )
    vae = _vae()
    text_encoder = CLIPTextModel(_text_config())
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(48, act="gelu"))
    _realistic_final_norm(text_encoder)
    _realistic_final_norm(text_encoder_2)
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=clip_tokenizer(folder / "_tok"),
        tokenizer_2=clip_tokenizer(folder / "_tok2", pad_token="!"),
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
        force_zeros_for_empty_prompt=True,
    )
    out = folder / "tiny-sdxl"
    pipe.save_pretrained(out, safe_serialization=True)
    return out
