"""A1111's own reading of sdkit's infotext, and A1111's "Automatic" schedule per sampler.

A1111's reader is recorded here as data, not run: AUTOMATIC1111/stable-diffusion-webui v1.10.1
(commit 82a973c04367123ae98bd9abdf80d9eda9b910e2), ``modules/sd_samplers.py``
``get_sampler_and_scheduler``: the "Schedule type" value is looked up among the schedulers'
names and labels (unknown: "Automatic"); a sampler name ending in " <label>" or " <name>"
selects that schedule; an unknown sampler name becomes the first sampler, "DPM++ 2M";
"Automatic" means the sampler's ``'scheduler'`` option, else k-diffusion's uniform sigmas.
The per-sampler options are ``samplers_k_diffusion`` in ``modules/sd_samplers_kdiffusion.py``;
the schedulers are ``schedulers`` in ``modules/sd_schedulers.py``. (The search index holds
only older upstream copies of these files; these values are those of v1.10.1.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sdkit.recipe import Recipe
from sdkit.samplers import SAMPLERS, a1111_names, resolve_sampler

# modules/sd_samplers_kdiffusion.py, samplers_k_diffusion: label -> options['scheduler'].
A1111_AUTOMATIC: dict[str, str | None] = {
    "DPM++ 2M": "karras",
    "DPM++ SDE": "karras",
    "DPM++ 2M SDE": "exponential",
    "DPM++ 2M SDE Heun": "exponential",
    "DPM++ 2S a": "karras",
    "DPM++ 3M SDE": "exponential",
    "Euler a": None,
    "Euler": None,
    "LMS": None,
    "Heun": None,
    "DPM2": "karras",
    "DPM2 a": "karras",
    "DPM fast": None,
    "DPM adaptive": None,
    "Restart": "karras",
}
# modules/sd_samplers_timesteps.py: DDIM and PLMS step at range(0, 1000, 1000 // steps) + 1;
# UniPC uses uni_pc's time_uniform steps (its own skip_type option, default).
A1111_TIMESTEP_SAMPLERS = {"DDIM", "PLMS", "UniPC"}
# modules/sd_schedulers.py, schedulers: (name, label, aliases).
A1111_SCHEDULERS = [
    ("automatic", "Automatic", []),
    ("uniform", "Uniform", []),
    ("karras", "Karras", []),
    ("exponential", "Exponential", []),
    ("polyexponential", "Polyexponential", []),
    ("sgm_uniform", "SGM Uniform", ["SGMUniform"]),
    ("kl_optimal", "KL Optimal", []),
    ("align_your_steps", "Align Your Steps", []),
    ("simple", "Simple", []),
    ("normal", "Normal", []),
    ("ddim", "DDIM", []),
    ("beta", "Beta", []),
]
A1111_DEFAULT_SAMPLER = "DPM++ 2M"
# What each A1111 schedule name is in diffusers' config (sdkit's schedule for it).
A1111_TO_SDKIT = {
    "uniform": "linspace",
    "karras": "karras",
    "exponential": "exponential",
    "sgm_uniform": "sgm_uniform",
    "simple": "simple",
    "normal": "normal",
    "ddim": "ddim",
    "beta": "beta",
    "kl_optimal": "kl_optimal",
    "align_your_steps": "align_your_steps",
}


def a1111_reads(sampler: str | None, schedule: str | None) -> tuple[str, str]:
    """A1111's (sampler, schedule name) for infotext values, by the rule in the docstring."""
    by_key = {key: name for name, label, aliases in A1111_SCHEDULERS for key in (name, label)}
    found = by_key.get(schedule or "", "automatic")
    name = sampler or A1111_DEFAULT_SAMPLER
    for sched_name, label, aliases in A1111_SCHEDULERS:
        for option in (label, sched_name, *aliases):
            if name.endswith(" " + option):
                found, name = sched_name, name[: -len(option) - 1]
                break
    known = set(A1111_AUTOMATIC) | A1111_TIMESTEP_SAMPLERS | {"LCM"}
    if name not in known:
        name = A1111_DEFAULT_SAMPLER
    if found == "automatic":
        found = A1111_AUTOMATIC.get(name) or "uniform"
    return name, found


# --- Automatic ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in A1111_AUTOMATIC if n in SAMPLERS])
def test_a_sampler_without_a_schedule_is_a1111s_automatic(name: str) -> None:
    want = A1111_TO_SDKIT[A1111_AUTOMATIC[name] or "uniform"]
    resolved = resolve_sampler(name)
    assert resolved.schedule == want
    assert resolved.config == resolve_sampler(name, want).config
    assert resolve_sampler(name, "Automatic").config == resolved.config


def test_timestep_samplers_follow_a1111() -> None:
    # range(0, 1000, 1000 // steps) + 1 == diffusers' leading spacing with steps_offset=1
    for name in ("DDIM", "PLMS"):
        config = resolve_sampler(name).config
        assert (config["timestep_spacing"], config["steps_offset"]) == ("leading", 1)
    unipc = resolve_sampler("UniPC").config
    assert (unipc["solver_type"], unipc["solver_order"]) == ("bh1", 3)  # uni_pc_variant/order
    assert unipc["timestep_spacing"] == "linspace"  # time_uniform


def test_ddim_schedule_gives_a1111s_timesteps() -> None:
    from diffusers import DDIMScheduler

    for steps in (4, 10, 20, 50):
        scheduler = DDIMScheduler.from_config({}, **resolve_sampler("DDIM").config)
        scheduler.set_timesteps(steps)
        want = sorted((t + 1 for t in range(0, 1000, 1000 // steps)), reverse=True)
        assert scheduler.timesteps.tolist() == want


# --- what sdkit writes, as A1111 reads it ------------------------------------------------

BASE = dict(
    prompt="a cat", model="m", model_sha256="0" * 64, pipeline="P", steps=20,
    guidance_scale=7.0, seed=1, width=512, height=512,
)  # fmt: skip
SD15 = {"timestep_spacing": "leading", "steps_offset": 1}


def _recipe(sampler: str | None, schedule: str, scheduler: str, config: dict[str, Any]) -> Recipe:
    return Recipe(
        **BASE, sampler=sampler, schedule=schedule, scheduler=scheduler, scheduler_config=config
    )


def _ran(sampler: str, schedule: str | None) -> Recipe:
    resolved = resolve_sampler(sampler, schedule)
    config = {**SD15, **resolved.config}
    return _recipe(
        resolved.spec.name, resolved.schedule, resolved.spec.scheduler_class.__name__, config
    )


A1111_RUNS = [
    (name, schedule)
    for name, spec in SAMPLERS.items()
    if spec.in_a1111 and name != "LCM"
    for schedule in (None, *spec.schedules)
    # linear_quadratic is ComfyUI's only: A1111 has no name for it
    if schedule
    not in ("default", "leading", "linspace", "trailing", "normal", "simple", "linear_quadratic")
    or schedule is None
]


@pytest.mark.parametrize(("name", "schedule"), A1111_RUNS)
def test_a1111_restores_the_sampler_and_schedule_that_ran(name: str, schedule: str | None) -> None:
    recipe = _ran(name, schedule)
    params = _params(recipe.to_infotext())
    sampler, a1111_schedule = a1111_reads(params["Sampler"], params.get("Schedule type"))
    assert sampler == name
    if name in A1111_TIMESTEP_SAMPLERS:
        return  # A1111's DDIM, PLMS and UniPC take no schedule
    assert A1111_TO_SDKIT[a1111_schedule] in (recipe.schedule, _same_as(recipe.schedule))


def _same_as(schedule: str) -> str:
    return {"sgm_uniform": "sgm_uniform", "linspace": "linspace"}.get(schedule, schedule)


def _params(text: str) -> dict[str, str]:
    from provenance.infotext import parse_infotext

    return parse_infotext(text).parameters


def test_default_run_names_what_ran_not_a_class() -> None:
    # the model sdkit ships: EulerDiscreteScheduler with Karras sigmas
    config = json.loads(
        (
            Path(__file__).parents[1] / "sdkit/default_model/scheduler/scheduler_config.json"
        ).read_text()
    )
    recipe = _recipe(None, "default", "EulerDiscreteScheduler", config)
    params = _params(recipe.to_infotext())
    assert (params["Sampler"], params["Schedule type"]) == ("Euler", "Karras")
    assert a1111_reads(params["Sampler"], params["Schedule type"]) == ("Euler", "karras")
    assert Recipe.from_infotext(recipe.to_infotext()) == recipe


@pytest.mark.parametrize(
    ("config", "label"),
    [
        ({"use_karras_sigmas": True}, "Karras"),
        ({"use_exponential_sigmas": True}, "Exponential"),
        ({"timestep_spacing": "trailing"}, "SGM Uniform"),
        ({"timestep_spacing": "linspace"}, "Uniform"),
        ({"timestep_spacing": "leading", "steps_offset": 1}, "DDIM"),
        ({"timestep_spacing": "leading", "steps_offset": 0}, None),
    ],
)
def test_euler_with_a_models_config_writes_its_schedule(
    config: dict[str, Any], label: str | None
) -> None:
    assert a1111_names("Euler", "default", "EulerDiscreteScheduler", config) == ("Euler", label)
    recipe = _recipe("Euler", "default", "EulerDiscreteScheduler", config)
    params = _params(recipe.to_infotext())
    assert params.get("Schedule type") == label
    assert Recipe.from_infotext(recipe.to_infotext()) == recipe


def test_trailing_is_written_as_sgm_uniform_and_reads_back() -> None:
    recipe = _ran("Euler", "trailing")
    text = recipe.to_infotext()
    assert "Schedule type: SGM Uniform" in text
    assert Recipe.from_infotext(text) == recipe


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_and_schedule_round_trips_through_sdkit(name: str) -> None:
    for schedule in (None, *SAMPLERS[name].schedules):
        recipe = _ran(name, schedule)
        assert Recipe.from_infotext(recipe.to_infotext()) == recipe


def test_negative_prompt_keeps_its_leading_spaces() -> None:
    recipe = Recipe(**BASE, scheduler="EulerDiscreteScheduler", negative_prompt="  blurry, dark")
    assert Recipe.from_infotext(recipe.to_infotext()).negative_prompt == "  blurry, dark"


def test_infotext_from_sdkit_0_1_still_reads() -> None:
    old = (
        "a cat\nSteps: 20, Sampler: EulerDiscreteScheduler, Schedule type: default, CFG scale: 7.0,"
        " Seed: 1, Size: 512x512, Model hash: 0000000000, Model: m, Mode: txt2img, Pipeline: P,"
        ' Scheduler: EulerDiscreteScheduler, Scheduler config: "{}", Model sha256: ' + "0" * 64
        + ', Dtype: float32, Sampler name: none, Versions: "{}", Version: sdkit 0.1.0'
    )  # fmt: skip
    recipe = Recipe.from_infotext(old)
    assert (recipe.sampler, recipe.schedule) == (None, "default")


# --- sd-parsers, on the PNGs sdkit writes ------------------------------------------------


@pytest.mark.parametrize(
    ("sampler", "schedule"),
    [(None, None), ("Euler", None), ("DPM++ 2M", None), ("DDIM", "trailing")],
)
def test_sd_parsers_reads_what_made_the_picture(
    tiny_sd_path: Path, tmp_path: Path, sampler: str | None, schedule: str | None
) -> None:
    import sd_parsers  # a dev dependency: this test must run, not skip
    from PIL import Image

    from sdkit import Generator

    gen = Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False)
    image = gen(
        "a cube", negative_prompt="  blurry", sampler=sampler, schedule=schedule, steps=2, seed=5
    ).image
    path = image.save(tmp_path / "out.png")
    with Image.open(path) as opened:
        info = sd_parsers.ParserManager().parse(opened)
    recipe = image.recipe
    name, label = a1111_names(
        recipe.sampler, recipe.schedule, recipe.scheduler, recipe.scheduler_config
    )
    found = info.samplers[0]
    assert found.name == name and found.parameters.get("scheduler") == label
    assert found.parameters["steps"] == str(recipe.steps)
    assert float(found.parameters["cfg_scale"]) == recipe.guidance_scale
    assert int(found.parameters["seed"]) == recipe.seed
    assert info.metadata["Size"] == f"{recipe.width}x{recipe.height}"
    assert a1111_reads(name, label)[0] == (name if name in SAMPLERS else "DPM++ 2M")
