"""SDXL refiner: the pixels of diffusers' base + refiner hand-off done by hand, records, errors.

The tiny refiner is built as the real one is shaped: an SDXL img2img pipeline with only the
second text encoder and aesthetic-score micro-conditioning (5 time ids), sharing the base's VAE.
The oracle is diffusers' SDXL docs' "ensemble of expert denoisers": ``base(...,
denoising_end=s, output_type="latent")`` then ``refiner(..., denoising_start=s, image=latents)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from tiny_models import SDXL_SCHEDULER, _realistic_final_norm, _text_config
from transformers import CLIPTextModelWithProjection

from sdkit import Generator, InvalidOptionError, ModelLoadError, Recipe
from sdkit._clip_vocab import clip_tokenizer


@pytest.fixture(scope="module")
def refiner_path(tiny_sdxl_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("refiner")
    torch.manual_seed(7)
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
        # the refiner's time ids: original size, crop, aesthetic score (5 x 8) + pooled width
        projection_class_embeddings_input_dim=5 * 8 + 48,
        cross_attention_dim=48,
        norm_num_groups=32,
    )
    encoder = CLIPTextModelWithProjection(_text_config(48, act="gelu"))
    _realistic_final_norm(encoder)
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=AutoencoderKL.from_pretrained(tiny_sdxl_path / "vae"),
        text_encoder=None,
        text_encoder_2=encoder,
        tokenizer=None,
        tokenizer_2=clip_tokenizer(folder / "_tok2", pad_token="!"),
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    pipe.save_pretrained(folder / "tiny-refiner", safe_serialization=True)
    return folder / "tiny-refiner"


@pytest.fixture(scope="module")
def refined(tiny_sdxl_path: Path, refiner_path: Path) -> Generator:
    return Generator(tiny_sdxl_path, device="cpu", progress=False, refiner=refiner_path)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("switch", [0.5, None])
def test_pixels_equal_the_diffusers_hand_off_by_hand(
    refined: Generator, tiny_sdxl_path: Path, refiner_path: Path, switch: float | None
) -> None:
    base = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path)
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(refiner_path)
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    at = 0.8 if switch is None else switch  # A1111's "Refiner switch at" default
    generator = [torch.Generator("cpu").manual_seed(21)]
    latents = base("a castle", num_inference_steps=5, guidance_scale=5.0, denoising_end=at,
                   output_type="latent", generator=generator).images  # fmt: skip
    want = refiner("a castle", num_inference_steps=5, guidance_scale=5.0, denoising_start=at,
                   image=latents, generator=generator).images[0]  # fmt: skip
    got = refined("a castle", steps=5, guidance_scale=5.0, seed=21, refiner_switch=switch)
    assert _pixels(want).std() > 0
    np.testing.assert_array_equal(_pixels(got.image.image), _pixels(want))
    (record,) = got.image.recipe.addons
    assert (record.kind, record.name, dict(record.settings)) == (
        "refiner", str(refiner_path), {"switch": at})  # fmt: skip
    assert len(record.sha256) == 64
    text = got.image.recipe.to_infotext()
    assert f"Refiner switch at: {at}" in text and f"[{record.sha256[:10]}]" in text
    assert Recipe.from_infotext(text) == got.image.recipe
    assert got.image.recipe.to_options().refiner_switch == at
    if switch is None:
        return
    # the base alone makes another picture
    alone = Generator(tiny_sdxl_path, device="cpu", progress=False)
    plain = alone("a castle", steps=5, guidance_scale=5.0, seed=21)
    assert not np.array_equal(_pixels(plain.image.image), _pixels(want))


def test_typed_errors(refined: Generator, tiny_sd_path: Path, tiny_sdxl_path: Path,
                      refiner_path: Path) -> None:  # fmt: skip
    with pytest.raises(InvalidOptionError, match="only with an SDXL base model") as sd_base:
        Generator(tiny_sd_path, device="cpu", progress=False, refiner=refiner_path)
    assert sd_base.value.option == "refiner"
    with pytest.raises(ModelLoadError, match="not SDXL"):
        Generator(tiny_sdxl_path, device="cpu", progress=False, refiner=tiny_sd_path)
    for bad in (0, 1, 1.5, "0.8"):
        with pytest.raises(InvalidOptionError) as info:
            refined("x", steps=2, refiner_switch=bad)  # type: ignore[arg-type]
        assert info.value.option == "refiner_switch"
    init = Image.new("RGB", (64, 64))
    with pytest.raises(InvalidOptionError, match="plain txt2img") as img2img:
        refined("x", steps=2, init_image=init)
    assert img2img.value.option == "refiner"
    with pytest.raises(InvalidOptionError, match="plain txt2img"):
        refined("x", steps=2, hires_scale=2)
    alone = Generator(tiny_sdxl_path, device="cpu", progress=False)
    with pytest.raises(InvalidOptionError, match="only with a refiner"):
        alone("x", steps=2, refiner_switch=0.7)
