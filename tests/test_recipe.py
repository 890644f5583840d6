"""Recipe: JSON and A1111 infotext round trips, through real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from sdkit import Generator, Recipe
from sdkit.images import read_infotext
from sdkit.recipe import RecipeParseError, parse_infotext


def _recipe(**overrides: object) -> Recipe:
    base: dict[str, object] = dict(
        prompt="a (red:1.3) circle, on blue\nsecond line",
        negative_prompt="blurry, low quality",
        model="C:\\models\\my model, v2.safetensors",
        model_sha256="ab" * 32,
        pipeline="StableDiffusionXLPipeline",
        sampler="DPM++ 2M",
        schedule="karras",
        scheduler="DPMSolverMultistepScheduler",
        scheduler_config={"use_karras_sigmas": True, "beta_start": 0.00085, "steps_offset": 1},
        steps=30,
        guidance_scale=7.25,
        guidance_rescale=0.7,
        clip_skip=2,
        seed=4294967295,
        width=1024,
        height=768,
        versions={"sdkit": "0.1.0", "diffusers": "0.42.1"},
    )
    base.update(overrides)
    return Recipe(**base)  # type: ignore[arg-type]


def test_json_round_trip() -> None:
    r = _recipe()
    assert Recipe.from_json(r.to_json()) == r
    assert r.to_dict()["recipe_version"] == 1


def test_infotext_round_trip_and_a1111_fields() -> None:
    r = _recipe(mode="img2img", strength=0.55, init_image_sha256="cd" * 32)
    text = r.to_infotext()
    prompt, negative, params = parse_infotext(text)
    assert prompt == r.prompt and negative == r.negative_prompt
    # The fields A1111's PNG Info shows, with A1111's spelling and formats.
    assert params["Steps"] == "30"
    assert params["Sampler"] == "DPM++ 2M"
    assert params["Schedule type"] == "Karras"  # A1111's label
    assert params["CFG scale"] == "7.25"
    assert params["Seed"] == "4294967295"
    assert params["Size"] == "1024x768"
    assert params["Model hash"] == "ab" * 5
    assert params["Clip skip"] == "2"
    assert params["Denoising strength"] == "0.55"
    assert Recipe.from_infotext(text) == r


def test_model_default_scheduler_round_trips() -> None:
    r = _recipe(sampler=None, schedule="default", scheduler="PNDMScheduler", clip_skip=None)
    assert Recipe.from_infotext(r.to_infotext()) == r
    assert parse_infotext(r.to_infotext())[2]["Sampler"] == "PNDMScheduler"


def test_foreign_infotext_is_parsed_but_not_taken_for_a_recipe() -> None:
    a1111 = (
        "masterpiece, 1girl\nNegative prompt: lowres\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, "
        'Size: 512x512, Model hash: 6ce0161689, Model: v1-5, Lora hashes: "a: 1, b: 2", '
        "Version: v1.10.1"
    )
    prompt, negative, params = parse_infotext(a1111)
    assert (prompt, negative) == ("masterpiece, 1girl", "lowres")
    assert params["Lora hashes"] == "a: 1, b: 2"
    with pytest.raises(RecipeParseError):
        Recipe.from_infotext(a1111)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_saved_file_infotext_parses_back_into_the_same_recipe(
    tiny_sd_path: Path, tmp_path: Path, suffix: str
) -> None:
    gen = Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False)
    image = gen(
        "a (red:1.2) circle, glossy", negative_prompt="noise", sampler="Euler a", steps=2, seed=11
    ).image
    path = image.save(tmp_path / f"out{suffix}")
    text = read_infotext(path)
    assert text is not None
    assert Recipe.from_infotext(text) == image.recipe
    with Image.open(path) as im:
        assert im.size == (64, 64)


# Recipes made before samplers followed A1111's Automatic (sdkit commit c19d7e2, the model sdkit
# ships, 64x64, 3 steps, no watermark), with the SHA-256 of their pixels.
BEFORE_AUTOMATIC = Path(__file__).parent / "fixtures" / "recipes_before_automatic.json"


@pytest.mark.parametrize("case", ["default", "unipc", "dpmpp_2m", "dpm2"])
def test_old_recipes_replay_to_their_pixels(case: str) -> None:
    import hashlib
    import json

    import numpy as np

    entry = next(e for e in json.loads(BEFORE_AUTOMATIC.read_text()) if e["case"] == case)
    recipe = Recipe.from_dict(entry["recipe"])
    gen = Generator(device="cpu", progress=False, watermark=False)
    image = gen(recipe.prompt, **recipe.to_options().as_kwargs()).image
    assert image.recipe.scheduler_config == recipe.scheduler_config
    pixels = np.asarray(image.image.convert("RGB")).tobytes()
    assert hashlib.sha256(pixels).hexdigest() == entry["pixels_sha256"]
