"""Generator: parity with plain diffusers, seeds, validation, callbacks, img2img/inpaint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UniPCMultistepScheduler,
)
from PIL import Image
from tiny_models import build_tiny_sd

from sdkit import GenerationCancelled, Generator, InvalidOptionError, Recipe

# Sampler name -> the scheduler a diffusers user would set by hand (from diffusers' docs table
# of A1111 equivalents), written out here independently of sdkit's own table. A sampler named
# without a schedule means A1111's "Automatic": for Euler, Euler a and UniPC that is "Uniform",
# k-diffusion's get_sigmas(n) over the model's 1000 steps, i.e. diffusers' linspace spacing
# (AUTOMATIC1111/stable-diffusion-webui modules/sd_schedulers.py `uniform`); A1111's UniPC is
# the bh1 variant at order 3 (its uni_pc_variant / uni_pc_order defaults), stopping at the
# model's smallest sigma as UniPC's time-uniform steps do.
_UNIFORM = {"timestep_spacing": "linspace", "use_karras_sigmas": False}
HAND_SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "Euler": (EulerDiscreteScheduler, _UNIFORM),
    "Euler a": (EulerAncestralDiscreteScheduler, {"timestep_spacing": "linspace"}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    # SD's own DDIM config has clip_sample=False (latents are not in [-1, 1]); SDXL's Euler
    # config lacks the key, and DDIM's class default (True) would clip.
    "DDIM": (DDIMScheduler, {"clip_sample": False}),
    "UniPC": (
        UniPCMultistepScheduler,
        {**_UNIFORM, "solver_type": "bh1", "solver_order": 3, "final_sigmas_type": "sigma_min"},
    ),
}


@pytest.fixture(scope="module")
def sd(tiny_sd_path: Path) -> Generator:
    return Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False)


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_path: Path) -> Generator:
    return Generator.from_pretrained(tiny_sdxl_path, device="cpu", progress=False)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _plain(pipe: Any, name: str, **kwargs: Any) -> np.ndarray:
    cls, overrides = HAND_SCHEDULERS[name]
    pipe.scheduler = cls.from_config({**pipe.scheduler.config, **overrides})
    seed = kwargs.pop("seed")
    out = pipe(generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images[0]
    return _pixels(out)


@pytest.mark.parametrize("sampler", list(HAND_SCHEDULERS))
def test_sd_pixels_equal_plain_diffusers(sd: Generator, tiny_sd_path: Path, sampler: str) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
    pipe.set_progress_bar_config(disable=True)
    args = dict(prompt="a red circle", negative_prompt="blurry", num_inference_steps=4)
    expected = _plain(pipe, sampler, guidance_scale=7.5, height=64, width=64, seed=123, **args)
    got = sd(
        "a red circle",
        negative_prompt="blurry",
        sampler=sampler,
        steps=4,
        guidance_scale=7.5,
        seed=123,
        width=64,
        height=64,
    )
    assert expected.std() > 0  # not a blank image: the comparison means something
    np.testing.assert_array_equal(_pixels(got.image.image), expected)


@pytest.mark.parametrize("sampler", list(HAND_SCHEDULERS))
def test_sdxl_pixels_equal_plain_diffusers(
    sdxl: Generator, tiny_sdxl_path: Path, sampler: str
) -> None:
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path)
    pipe.set_progress_bar_config(disable=True)
    # No negative prompt: SDXL then uses zero negative embeddings (diffusers' default).
    args = dict(prompt="a blue square", num_inference_steps=4)
    expected = _plain(pipe, sampler, guidance_scale=5.0, height=64, width=64, seed=7, **args)
    got = sdxl("a blue square", sampler=sampler, steps=4, guidance_scale=5.0, seed=7)
    assert expected.std() > 0
    np.testing.assert_array_equal(_pixels(got.image.image), expected)


def test_batch_seeds_follow_and_reproduce_singly(sd: Generator) -> None:
    batch = sd("a cat", sampler="Euler a", steps=3, seed=40, num_images=3)
    assert batch.seeds == [40, 41, 42]
    assert [im.recipe.seed for im in batch] == [40, 41, 42]
    assert [r.seed for r in batch.recipes] == [im.seed for im in batch] == [40, 41, 42]
    assert batch[2] is batch.images[2] and len(batch) == 3
    single = sd("a cat", sampler="Euler a", steps=3, seed=41)
    # Same starting noise; batched matmuls may round differently, so allow one level of noise.
    diff = np.abs(_pixels(batch.images[1].image).astype(int) - _pixels(single.image.image))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert not np.array_equal(_pixels(batch.images[0].image), _pixels(batch.images[1].image))
    streamed = list(sd.stream("a cat", sampler="Euler a", steps=3, seed=40, num_images=2))
    assert [im.recipe.seed for im in streamed] == [40, 41]
    np.testing.assert_array_equal(_pixels(streamed[1].image), _pixels(single.image.image))


def test_sde_sampler_noise_follows_the_seed(sd: Generator) -> None:
    # DPM++ SDE draws noise from a Brownian tree that ignores torch generators.
    a = sd("a cat", sampler="DPM++ SDE", steps=3, seed=21).image
    b = sd("a cat", sampler="DPM++ SDE", steps=3, seed=21).image
    c = sd("a cat", sampler="DPM++ SDE", steps=3, seed=22).image
    np.testing.assert_array_equal(_pixels(a.image), _pixels(b.image))
    assert not np.array_equal(_pixels(a.image), _pixels(c.image))
    assert a.recipe.scheduler_config["noise_sampler_seed"] == 21
    batch = sd("a cat", sampler="DPM++ SDE", steps=3, seed=21, num_images=2)
    configs = [im.recipe.scheduler_config["noise_sampler_seed"] for im in batch]
    assert configs == [21, 22]  # each Recipe remakes its own image alone
    diff = np.abs(_pixels(batch.images[0].image).astype(int) - _pixels(a.image))
    assert diff.max() <= 1


def test_same_seed_same_pixels_and_random_seed_recorded(sd: Generator) -> None:
    a = sd("a dog", steps=2, seed=5)
    b = sd("a dog", steps=2, seed=5)
    np.testing.assert_array_equal(_pixels(a.image.image), _pixels(b.image.image))
    c = sd("a dog", steps=2)
    assert 0 <= c.image.recipe.seed < 2**32
    again = sd("a dog", steps=2, seed=c.image.recipe.seed)
    np.testing.assert_array_equal(_pixels(c.image.image), _pixels(again.image.image))


def test_recipe_records_every_parameter(sd: Generator) -> None:
    r = sd(
        "a (red:1.2) cube",
        negative_prompt="fog",
        sampler="DPM++ 2M",
        schedule="karras",
        steps=3,
        guidance_scale=6.5,
        guidance_rescale=0.3,
        clip_skip=2,
        seed=9,
        width=72,
        height=64,
    ).image.recipe
    assert isinstance(r, Recipe)
    assert (r.prompt, r.negative_prompt, r.seed, r.width, r.height) == (
        "a (red:1.2) cube",
        "fog",
        9,
        72,
        64,
    )
    assert (r.sampler, r.schedule, r.scheduler) == (
        "DPM++ 2M",
        "karras",
        "DPMSolverMultistepScheduler",
    )
    assert r.scheduler_config["use_karras_sigmas"] is True
    assert (r.steps, r.guidance_scale, r.guidance_rescale, r.clip_skip) == (3, 6.5, 0.3, 2)
    assert r.pipeline == "StableDiffusionPipeline" and r.mode == "txt2img"
    assert len(r.model_sha256) == 64 and r.model_hash == r.model_sha256[:10]
    assert {"sdkit", "diffusers", "transformers", "torch"} <= set(r.versions)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"width": 100}, "width"),
        ({"height": 63}, "height"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"sampler": "Euler z"}, "sampler"),
        ({"sampler": "DDIM", "schedule": "karras"}, "schedule"),
        ({"guidance_scale": -1}, "guidance_scale"),
        ({"guidance_rescale": 1.5}, "guidance_rescale"),
        ({"num_images": 0}, "num_images"),
        ({"seed": -1}, "seed"),
        ({"clip_skip": 0}, "clip_skip"),
        ({"strength": 0.5}, "strength"),  # strength without an init image
    ],
)
def test_invalid_options_fail_before_any_work(
    sd: Generator, options: dict[str, Any], option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_work(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the pipeline ran")

    monkeypatch.setattr(type(sd.pipe), "__call__", no_work)
    with pytest.raises(InvalidOptionError) as info:
        sd("x", **options)
    assert info.value.option == option
    assert info.value.allowed  # names what is allowed


def test_numpy_numbers_are_accepted_and_stored_as_python_numbers(sd: Generator) -> None:
    r = sd("x", steps=np.int64(2), seed=np.int64(3), guidance_scale=np.float32(6.0)).image.recipe
    assert (r.steps, r.seed, r.guidance_scale) == (2, 3, 6.0)
    assert type(r.seed) is int and type(r.steps) is int and type(r.guidance_scale) is float
    assert Recipe.from_json(r.to_json()) == r


def test_clip_skip_bound_follows_the_text_encoder(sd: Generator) -> None:
    layers = sd.pipe.text_encoder.config.num_hidden_layers
    sd("x", steps=1, clip_skip=layers)  # the first layer's output: allowed
    with pytest.raises(InvalidOptionError) as info:
        sd("x", steps=1, clip_skip=layers + 1)
    assert info.value.option == "clip_skip" and str(layers) in str(info.value.allowed)


def test_img2img_bad_strength_and_mask_size(sd: Generator) -> None:
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    with pytest.raises(InvalidOptionError) as info:
        sd("x", init_image=init, strength=1.5)
    assert info.value.option == "strength"
    with pytest.raises(InvalidOptionError) as info:
        sd("x", init_image=init, mask=Image.new("L", (32, 32), 255))
    assert info.value.option == "mask"
    with pytest.raises(InvalidOptionError) as info:
        sd("x", init_image=init, steps=4, strength=0.1)  # 0 denoising steps
    assert info.value.option == "strength"


def test_callback_sees_each_step_and_can_cancel(sd: Generator) -> None:
    seen: list[tuple[int, int, tuple[int, ...]]] = []

    def watch(step: int, timestep: int, latents: torch.Tensor) -> None:
        seen.append((step, timestep, tuple(latents.shape)))

    sd("x", sampler="Euler", steps=4, seed=1, callback=watch)
    assert [s for s, _, _ in seen] == [1, 2, 3, 4]
    assert all(shape == (1, 4, 8, 8) for _, _, shape in seen)
    assert seen[0][1] > seen[-1][1]  # timesteps decrease

    calls: list[int] = []

    def stop_after_two(step: int, timestep: int, latents: torch.Tensor) -> bool:
        calls.append(step)
        return step < 2

    with pytest.raises(GenerationCancelled) as info:
        sd("x", steps=6, seed=1, callback=stop_after_two)
    assert info.value.step == 2 and calls == [1, 2]


def test_img2img_and_inpaint_share_weights_and_change_pixels(sd: Generator) -> None:
    init = Image.new("RGB", (64, 64), (10, 200, 10))
    out = sd("x", init_image=init, strength=0.5, steps=4, seed=3)
    assert out.image.recipe.mode == "img2img"
    assert out.image.recipe.pipeline == "StableDiffusionImg2ImgPipeline"
    assert out.image.recipe.strength == 0.5
    img2img = sd._derived["img2img"]
    assert img2img.unet is sd.pipe.unet and img2img.vae is sd.pipe.vae
    assert img2img.text_encoder is sd.pipe.text_encoder

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # repaint the left half only
    inpainted = sd("x", init_image=init, mask=mask, strength=1.0, steps=4, seed=3)
    r = inpainted.image.recipe
    assert r.mode == "inpaint" and r.pipeline == "StableDiffusionInpaintPipeline"
    assert r.mask_sha256 is not None and r.init_image_sha256 is not None
    assert sd._derived["inpaint"].unet is sd.pipe.unet


def test_inpaint_needs_a_unet_that_diffusers_can_inpaint_with(tmp_path: Path) -> None:
    # diffusers' inpaint pipeline takes UNets with 4 or 9 input channels; another count failed
    # deep inside it with a bare ValueError
    path = build_tiny_sd(tmp_path, latent_channels=3, name="three-channels")
    generator = Generator(path, progress=False)
    init = Image.new("RGB", (64, 64), (10, 200, 10))
    mask = Image.new("L", (64, 64), 255)
    with pytest.raises(InvalidOptionError) as info:
        generator("x", init_image=init, mask=mask, steps=2, seed=0)
    assert info.value.option == "mask" and "takes 3" in str(info.value)
    assert "inpaint" not in generator._derived  # nothing was built
    # the same model still does text-to-image and img2img
    out = generator("x", init_image=init, strength=0.5, steps=2, seed=0)
    assert out.image.recipe.mode == "img2img" and out.image.image.size == (64, 64)


def test_sdxl_img2img_uses_the_sdxl_sibling(sdxl: Generator) -> None:
    init = Image.new("RGB", (64, 64), (100, 100, 200))
    out = sdxl("x", init_image=init, strength=0.6, steps=3, seed=2)
    assert out.image.recipe.pipeline == "StableDiffusionXLImg2ImgPipeline"
    assert sdxl._derived["img2img"].text_encoder_2 is sdxl.pipe.text_encoder_2


def test_init_image_size_sets_output_size(sd: Generator, tmp_path: Path) -> None:
    path = tmp_path / "init.png"
    Image.new("RGB", (80, 64), (1, 2, 3)).save(path)
    out = sd("x", init_image=str(path), steps=2, seed=1)
    assert out.image.image.size == (80, 64)
    with pytest.raises(InvalidOptionError) as info:
        sd("x", init_image=Image.new("RGB", (70, 64)), steps=2)
    assert info.value.option == "width"


def test_steps_past_the_schedulers_table_are_refused_before_denoising(sd: Generator) -> None:
    # Issue 18: the tiny model's own scheduler (PNDM, "leading" spacing, steps_offset=1) put
    # timestep 1000 in a 1000-entry table at steps=1000: an IndexError from inside diffusers.
    calls: list[int] = []
    with pytest.raises(InvalidOptionError) as caught:
        sd("a cat", steps=1000, seed=1, callback=lambda step, t, state: calls.append(step))
    assert caught.value.option == "steps"
    assert "at most 999" in str(caught.value)
    assert calls == []  # refused before the first step
