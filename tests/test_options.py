"""sdkit.options: the call options declared once, validated without a pipeline.

* Validation runs on :class:`ModelFacts` alone: every refusal the Generator's tests check,
  with the option and value it names, and no pipeline built.
* The dataclass, the ``CallOptions`` TypedDict and ``Generator.__call__``'s keywords name the
  same options with the same defaults: adding one in one place only fails here.
* A misspelt option forwarded through ``generate_many`` is a mypy error.
* The options a Recipe gives back make the same pixels.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diffusers import PNDMScheduler
from PIL import Image
from tiny_models import SD15_SCHEDULER

from provenance.watermark import Payload
from sdkit import GenerationOptions, Generator, InvalidOptionError
from sdkit.options import MAX_SEED, BatchOptions, CallOptions, ModelFacts, first_seed

ROOT = Path(__file__).resolve().parents[1]


def facts(**changes: Any) -> ModelFacts:
    """Facts of an SD 1.x-like model: 64x64, PNDM with SD's config, 4-channel UNet."""
    base = ModelFacts(
        native_size=(64, 64),
        family="sd1",
        default_steps=25,
        default_guidance_scale=7.0,
        text_layers=5,
        unet_in_channels=4,
        scheduler_class=PNDMScheduler,
        scheduler_config=SD15_SCHEDULER,
    )
    return dataclasses.replace(base, **changes)


INIT = Image.new("RGB", (64, 64), (200, 30, 30))


@pytest.mark.parametrize(
    ("options", "option", "value"),
    [
        ({"width": 100}, "width", 100),
        ({"height": 63}, "height", 63),
        ({"steps": 0}, "steps", 0),
        ({"steps": 2.5}, "steps", 2.5),
        ({"sampler": "Euler z"}, "sampler", "Euler z"),
        ({"sampler": "DDIM", "schedule": "karras"}, "schedule", "karras"),
        ({"schedule": "karras"}, "schedule", "karras"),  # a schedule without a sampler
        ({"guidance_scale": -1}, "guidance_scale", -1),
        ({"guidance_rescale": 1.5}, "guidance_rescale", 1.5),
        ({"num_images": 0}, "num_images", 0),
        ({"seed": -1}, "seed", -1),
        ({"seed": MAX_SEED, "num_images": 2}, "seed", MAX_SEED),  # seed + 1 past the range
        ({"seed": True}, "seed", True),
        ({"clip_skip": 0}, "clip_skip", 0),
        ({"clip_skip": 6}, "clip_skip", 6),  # past the text encoder's 5 layers
        ({"strength": 0.5}, "strength", 0.5),  # strength without an init image
        ({"mask": Image.new("L", (64, 64))}, "mask", "given"),  # mask without an init image
        ({"init_image": INIT, "strength": 1.5}, "strength", 1.5),
        ({"init_image": INIT, "mask": Image.new("L", (32, 32), 255)}, "mask", "32x32"),
        ({"init_image": INIT, "steps": 4, "strength": 0.1}, "strength", 0.1),  # 0 steps
        ({"init_image": INIT, "guidance_rescale": 0.5}, "guidance_rescale", 0.5),  # SD img2img
        ({"init_image": Image.new("RGB", (70, 64))}, "width", 70),
        ({"init_image": 3}, "init_image", "int"),
        ({"init_image": "/nonexistent/x.png"}, "init_image", "/nonexistent/x.png"),
        ({"negative_prompt": 3}, "negative_prompt", 3),
        ({"feature_cache": 0}, "feature_cache", 0),
        ({"feature_cache": 1}, "feature_cache", 1),
        ({"watermark_payloads": [Payload(content_id=1)]}, "watermark_payloads", 1),
        ({"steps": 1000}, "steps", 1000),  # PNDM with SD's config schedules at most 999
    ],
)
def test_each_invalid_option_is_named_without_a_pipeline(
    options: dict[str, Any], option: str, value: Any
) -> None:
    kwargs = {"num_images": 2, **options} if option == "watermark_payloads" else options
    with pytest.raises(InvalidOptionError) as info:
        GenerationOptions(**kwargs).check(facts())
    assert (info.value.option, info.value.value) == (option, value)
    assert info.value.allowed  # names what is allowed


def test_refusals_that_depend_on_the_model() -> None:
    # 999 steps is PNDM's limit, and the message says so
    with pytest.raises(InvalidOptionError, match="at most 999"):
        GenerationOptions(steps=1000).check(facts())
    assert GenerationOptions(steps=999).check(facts()).steps == 999
    # inpainting needs a UNet with 4 or 9 input channels
    mask = Image.new("L", (64, 64), 255)
    with pytest.raises(InvalidOptionError, match="takes 3") as info:
        GenerationOptions(init_image=INIT, mask=mask).check(facts(unet_in_channels=3))
    assert info.value.option == "mask"
    assert GenerationOptions(init_image=INIT).check(facts(unet_in_channels=3)).mode == "img2img"
    # SDXL's img2img pipeline has guidance rescale; SD's has not
    sdxl = GenerationOptions(init_image=INIT, guidance_rescale=0.5).check(facts(family="sdxl"))
    assert sdxl.guidance_rescale == 0.5
    # feature caching is refused under optimize="max"
    with pytest.raises(InvalidOptionError, match="optimize='max'") as info:
        GenerationOptions(feature_cache=3).check(facts(optimize="max"))
    assert (info.value.option, info.value.value) == ("feature_cache", 3)


def test_a_plan_holds_the_resolved_options() -> None:
    plan = GenerationOptions(
        sampler="DPM++ 2M", schedule="karras", seed=np.int64(5), num_images=3,
        guidance_scale=np.float32(6.0), steps=np.int64(4), feature_cache=2,
    ).check(facts())  # fmt: skip
    assert plan.seeds == [5, 6, 7] and all(type(s) is int for s in plan.seeds)
    assert type(plan.steps) is int and type(plan.guidance_scale) is float
    assert (plan.mode, plan.width, plan.height, plan.strength) == ("txt2img", 64, 64, None)
    assert plan.sampler is not None and plan.sampler.spec.name == "DPM++ 2M"
    assert type(plan.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert plan.scheduler.config.use_karras_sigmas is True
    # the model's defaults where the caller said nothing; the init image sets the size
    plan = GenerationOptions(init_image=Image.new("RGB", (80, 64))).check(facts())
    assert (plan.steps, plan.guidance_scale, plan.strength) == (25, 7.0, 0.75)
    assert (plan.mode, plan.width, plan.height) == ("img2img", 80, 64)
    plan = GenerationOptions(init_image=INIT, width=32, height=48).check(facts())
    assert plan.init_image is not None and plan.init_image.size == (32, 48)


def test_one_seed_drawing_function() -> None:
    assert first_seed(7, 3) == 7
    drawn = {first_seed(None, 10) for _ in range(20)}
    assert len(drawn) > 1 and all(0 <= s <= MAX_SEED - 9 for s in drawn)
    assert first_seed(None, 2**32) == 0  # only one run of 2**32 seeds fits
    with pytest.raises(InvalidOptionError) as info:
        first_seed(MAX_SEED - 1, 3)
    assert (info.value.option, info.value.value) == ("seed", MAX_SEED - 1)


def test_unknown_and_doubled_names_are_refused() -> None:
    with pytest.raises(InvalidOptionError) as info:
        GenerationOptions.from_kwargs({"stepz": 3})
    assert (info.value.option, info.value.value) == ("stepz", 3)
    with pytest.raises(InvalidOptionError) as info:
        GenerationOptions.from_kwargs({"seed": 3}, seed=4)
    assert info.value.option == "seed"
    assert GenerationOptions.from_kwargs({"steps": 3}, seed=4) == GenerationOptions(steps=3, seed=4)


def test_dataclass_typeddict_and_call_keywords_agree() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(GenerationOptions)}
    hints = typing.get_type_hints(GenerationOptions)
    keys = set(typing.get_type_hints(CallOptions))
    assert keys == set(fields) == set(CallOptions.__optional_keys__)
    assert set(BatchOptions.__optional_keys__) == set(fields) - {"seed", "num_images"}
    assert typing.get_type_hints(CallOptions) == hints  # the same types too
    call = inspect.signature(Generator.__call__).parameters
    keywords = {n: p for n, p in call.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert {n: p.default for n, p in keywords.items()} == fields  # names and defaults
    assert list(keywords) == list(fields)  # and the order, for help() readers
    call_hints = typing.get_type_hints(Generator.__call__)
    assert {n: call_hints[n] for n in keywords} == hints
    # a Recipe gives back every option it records
    assert set(GenerationOptions(seed=1).as_kwargs()) == set(fields)


def _mypy(*files: Path) -> tuple[str, int]:
    from mypy import api

    old = os.getcwd()
    os.chdir(ROOT)  # the project's config, as `.venv/bin/mypy` reads it
    try:
        out, err, status = api.run(
            [
                "--config-file", str(ROOT / "pyproject.toml"), "--strict",
                "--no-warn-unused-ignores", "--no-incremental", *map(str, files),
            ]
        )  # fmt: skip
    finally:
        os.chdir(old)
    return out + err, status


@pytest.mark.slow
def test_a_misspelt_option_is_a_type_error(tmp_path: Path) -> None:
    snippet = (
        "from sdkit import Generator\n\n"
        "def run(gen: Generator) -> None:\n"
        '    gen.generate_many(["a", "b"], "out", {}=3)\n'
        '    list(gen.stream("a", num_images=2, {}=3))\n'
        "    gen.warmup({}=3)\n"
    )
    bad, good = tmp_path / "bad.py", tmp_path / "good.py"
    bad.write_text(snippet.format("stepz", "stepz", "stepz"))
    good.write_text(snippet.format("steps", "steps", "steps"))
    out, status = _mypy(bad, good)
    assert status == 1, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 3 and all(line.startswith(str(bad)) for line in errors), out
    assert all('"stepz"' in line for line in errors), out


def test_a_recipes_options_make_the_same_pixels(tiny_sd_path: Path) -> None:
    gen = Generator(tiny_sd_path, progress=False, watermark=False)
    init = Image.new("RGB", (64, 64), (10, 200, 10))
    for first in (
        gen("a cat", sampler="DPM++ SDE", schedule="karras", steps=3, seed=11, clip_skip=2),
        gen("a dog", steps=4, seed=5, negative_prompt="fog", feature_cache=2),
        gen("x", init_image=init, strength=0.5, steps=4, seed=3, guidance_scale=5.0),
    ):
        recipe = first.image.recipe
        options = recipe.to_options(init_image=None if recipe.mode == "txt2img" else init)
        assert options == GenerationOptions.from_recipe(
            recipe, init_image=None if recipe.mode == "txt2img" else init
        )
        again = gen(recipe.prompt, **options.as_kwargs()).image
        assert again.recipe == recipe
        assert np.array_equal(np.asarray(again.image), np.asarray(first.image.image))


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"width": 100}, "width"),
        ({"steps": 0}, "steps"),
        ({"sampler": "Nope"}, "sampler"),
        ({"schedule": "karras"}, "schedule"),
        ({"mask": "m.png"}, "mask"),
        ({"seed": 2**32 - 1, "num_images": 2}, "seed"),
        ({"feature_cache": 1}, "feature_cache"),
        ({"strength": 1.5}, "strength"),
    ],
)
def test_the_checks_that_need_no_model_run_alone(options: dict[str, Any], option: str) -> None:
    with pytest.raises(InvalidOptionError) as caught:
        GenerationOptions(**options).check_alone()
    assert caught.value.option == option
    GenerationOptions(steps=4, width=64, sampler="Euler", schedule="karras").check_alone()


def test_a_prompts_file_takes_exactly_the_options_a_call_takes() -> None:
    # the CLI's prompts file follows the dataclass: a new option needs no second list
    from sdkit.cli.batch import JSON_KEYS

    fields = {f.name for f in dataclasses.fields(GenerationOptions)}
    assert set(JSON_KEYS) == {"prompt"} | fields - {"callback", "watermark_payloads"}
