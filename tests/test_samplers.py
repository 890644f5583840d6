"""samplers: every name builds the right scheduler, schedules reach its config, errors help."""

from __future__ import annotations

import doctest
import importlib.util
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from tiny_models import SD15_SCHEDULER, SDXL_SCHEDULER

from sdkit import samplers
from sdkit.errors import InvalidOptionError
from sdkit.samplers import SAMPLERS, SCHEDULES, make_scheduler, resolve_sampler, sampler_names

# What each name must build, written out independently of the module's table.
EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    # A1111's Automatic for DPM2 is Karras, with the next-to-last sigma discarded (discard.py)
    "DPM2": ("DiscardingKDPM2Scheduler", {}),
    "DPM2 a": ("DiscardingKDPM2AncestralScheduler", {}),
    "DPM++ 2S a": ("DPMPP2SAncestralScheduler", {"sigma_schedule": "karras"}),
    "DPM++ 3M SDE": ("DPMPP3MSDEScheduler", {"sigma_schedule": "exponential"}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Heun": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
    ),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "DDIM": ("DDIMScheduler", {"clip_sample": False}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "UniPC": (
        "UniPCMultistepScheduler",
        {"solver_type": "bh1", "solver_order": 3, "final_sigmas_type": "sigma_min"},
    ),
    "UniPC bh2": ("UniPCMultistepScheduler", {"solver_type": "bh2", "solver_order": 2}),
    "LCM": ("LCMScheduler", {}),
    "DDPM": ("DDPMScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
    "TCD": ("TCDScheduler", {}),
}
# Optional packages diffusers needs for some entries (sampler or schedule name -> package).
NEEDS = {"DPM++ SDE": "torchsde", "LMS": "scipy", "beta": "scipy"}
SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def _skip_unless_installed(*names: str) -> None:
    for name in names:
        package = NEEDS.get(name)
        if package is not None and importlib.util.find_spec(package) is None:
            pytest.skip(f"{name} needs {package}")


# diffusers 0.42's DPM2 schedulers call np.cumsum on a torch tensor in set_timesteps, a fallback
# numpy 2 deprecates. numpy raises the warning, so pyproject's diffusers filter misses it.
KDPM2_NUMPY_WARNING = pytest.mark.filterwarnings(
    "ignore:__array_wrap__ must accept context:DeprecationWarning"
)


def _params(cases: Any) -> list[Any]:
    """Parameters for pytest, with the DPM2 warning filter on the cases that build DPM2."""
    out = []
    for case in cases:
        names = case if isinstance(case, tuple) else (case,)
        marks = [KDPM2_NUMPY_WARNING] if any(n.startswith("DPM2") for n in names) else []
        out.append(pytest.param(*names, marks=marks))
    return out


def _sd15_config() -> dict[str, Any]:
    # Built in-process, so it lists the keys it left at their defaults in _use_default_values.
    return dict(PNDMScheduler.from_config(SD15_SCHEDULER).config)


# --- the table ---------------------------------------------------------------------------


def test_table_lists_the_expected_samplers_in_order() -> None:
    assert list(SAMPLERS) == list(EXPECTED)
    assert "Restart" not in SAMPLERS  # refused (DPM++ 2S a and 3M SDE are sdkit's own)
    for name, spec in SAMPLERS.items():
        # sdkit's own k-diffusion schedulers have no model config spacing to keep: no "default"
        own = spec.scheduler_class.__module__.startswith("sdkit.")
        assert spec.name == name and (spec.schedules[0] == "default") != own
        assert set(spec.schedules) <= set(SCHEDULES) and "\n" not in spec.description
    assert next(iter(SCHEDULES)) == "default" and SCHEDULES["default"][0] == {}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_override_is_an_init_argument_of_the_class(name: str) -> None:
    spec = SAMPLERS[name]
    _skip_unless_installed(name)
    cls: Any = spec.scheduler_class
    accepted = set(inspect.signature(cls.__init__).parameters)
    keys = set(spec.config).union(*(SCHEDULES[schedule][0] for schedule in spec.schedules))
    if spec.scheduler_class.__module__.startswith("sdkit."):  # takes what resolve passes on
        keys = set().union(*(resolve_sampler(name, s).config for s in spec.schedules))
    assert keys <= accepted


def test_no_spelling_names_two_samplers() -> None:
    names = sampler_names()
    assert names[: len(SAMPLERS)] == list(SAMPLERS) and len(names) == len(set(names))
    # Folded as the module folds them, the spellings still point at one sampler each.
    owners: dict[str, str] = {}
    for spec in SAMPLERS.values():
        for spelling in (spec.name, *spec.aliases):
            key = spelling.lower().replace("++", "pp").replace("_", "").replace(" ", "")
            assert owners.setdefault(key, spec.name) == spec.name


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", sampler_names())
def test_every_spelling_resolves(spelling: str) -> None:
    owner = next(s for s in SAMPLERS.values() if spelling in (s.name, *s.aliases))
    _skip_unless_installed(owner.name)
    for variant in (
        spelling,
        spelling.upper(),
        spelling.replace(" ", "_"),
        spelling.replace("_", "-"),
    ):
        assert resolve_sampler(variant).spec is owner


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("dpm++ 2m", "DPM++ 2M"),
        ("DPMPP-2M-SDE", "DPM++ 2M SDE"),
        ("euler_a", "Euler a"),
        ("Euler A", "Euler a"),
        ("k_dpm_2_a", "DPM2 a"),
        ("uni_pc_bh2", "UniPC bh2"),
        ("uni_pc", "UniPC"),
        ("k_lcm", "LCM"),
        ("k_dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun"),
        ("dpmpp_2m_sde_heun_gpu", "DPM++ 2M SDE Heun"),
    ],
)
def test_other_spellings(spelling: str, name: str) -> None:
    assert resolve_sampler(spelling).spec.name == name


@pytest.mark.parametrize("name", _params(EXPECTED))
def test_each_sampler_builds_its_scheduler(name: str) -> None:
    _skip_unless_installed(name)
    class_name, values = EXPECTED[name]
    scheduler = make_scheduler(name, _sd15_config())
    assert type(scheduler).__name__ == class_name
    assert {k: scheduler.config[k] for k in values} == values


# --- schedules ---------------------------------------------------------------------------

# Legacy name -> the sampler it names.
LEGACY_KARRAS = {
    "DPM++ 2M Karras": "DPM++ 2M",
    "DPM++ SDE Karras": "DPM++ SDE",
    "LMS Karras": "LMS",
    "DPM2 Karras": "DPM2",
    "DPM2 a Karras": "DPM2 a",
    "DPM++ 2M SDE Karras": "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun Karras": "DPM++ 2M SDE Heun",
    "Euler Karras": "Euler",
    "dpmpp_2m_karras": "DPM++ 2M",
    "k_dpmpp_2m karras": "DPM++ 2M",
}


@pytest.mark.parametrize(("legacy", "name"), _params(LEGACY_KARRAS.items()))
def test_legacy_karras_names_set_karras_sigmas(legacy: str, name: str) -> None:
    _skip_unless_installed(name)
    resolved = resolve_sampler(legacy)
    assert (resolved.spec.name, resolved.schedule) == (name, "karras")
    config = make_scheduler(legacy, dict(SDXL_SCHEDULER)).config
    assert config.use_karras_sigmas is True and config.timestep_spacing == "linspace"
    assert config.use_exponential_sigmas is False


@pytest.mark.parametrize(
    ("name", "schedule", "flag"),
    [
        ("DPM++ 2M SDE Exponential", None, "use_exponential_sigmas"),
        ("Heun", "Exponential", "use_exponential_sigmas"),
        ("DPM++ 2M Beta", None, "use_beta_sigmas"),
        ("Euler", "beta", "use_beta_sigmas"),
    ],
)
def test_exponential_and_beta_reach_the_config(name: str, schedule: str | None, flag: str) -> None:
    _skip_unless_installed("beta" if flag == "use_beta_sigmas" else name)
    config = make_scheduler(name, _sd15_config(), schedule).config
    assert config[flag] is True
    assert [config[f] for f in SIGMA_FLAGS].count(True) == 1


@pytest.mark.parametrize(
    ("name", "schedule", "spacing"),
    [
        ("Euler", "trailing", "trailing"),
        ("DDIM", "simple", "trailing"),
        ("DDIM", "SGM Uniform", "trailing"),
        ("PLMS", "normal", "linspace"),
        ("DPM++ 2M", "leading", "leading"),
        ("Euler a", "Uniform", "linspace"),
        ("DDPM", "trailing", "trailing"),
    ],
)
def test_spacing_schedules_set_timestep_spacing(name: str, schedule: str, spacing: str) -> None:
    base = _sd15_config()
    assert "timestep_spacing" in base["_use_default_values"]  # the trap make_scheduler avoids
    assert make_scheduler(name, base, schedule).config.timestep_spacing == spacing


def test_karras_spans_the_models_full_sigma_range_under_leading_spacing() -> None:
    # As k-diffusion's get_sigmas_karras(n, sigma_min, sigma_max) with the model's own range.
    scheduler = make_scheduler("Euler Karras", dict(SDXL_SCHEDULER))
    scheduler.set_timesteps(6)
    ac = scheduler.alphas_cumprod.double()
    train_sigmas = ((1 - ac) / ac).sqrt()
    lo, hi = train_sigmas.min() ** (1 / 7), train_sigmas.max() ** (1 / 7)
    want = (hi + torch.linspace(0, 1, 6, dtype=torch.float64) * (lo - hi)) ** 7
    np.testing.assert_allclose(scheduler.sigmas[:-1].numpy(), want.numpy(), rtol=1e-4)
    assert float(scheduler.sigmas[-1]) == 0.0


@pytest.mark.parametrize("name", _params(SAMPLERS))
def test_model_config_survives(name: str) -> None:
    _skip_unless_installed(name)
    base = {**SD15_SCHEDULER, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
    base["beta_schedule"] = "linear"
    if SAMPLERS[name].schedules[0] != "default":  # sdkit's own: k-diffusion sigma lists only
        config = make_scheduler(name, base, "karras").config
        assert (config.prediction_type, config.beta_schedule) == ("v_prediction", "linear")
        assert config.sigma_schedule == "karras" and config.beta_end == 0.012
        return
    config = make_scheduler(name, base, "default").config  # the model's own spacing
    assert (config.prediction_type, config.beta_schedule) == ("v_prediction", "linear")
    assert config.beta_end == 0.012 and config.timestep_spacing == "trailing"
    if "karras" in SAMPLERS[name].schedules:
        karras = make_scheduler(name, base, "karras").config
        assert (karras.prediction_type, karras.timestep_spacing) == ("v_prediction", "linspace")


def test_a_sampler_sets_its_algorithm_over_another_samplers_config() -> None:
    sde = make_scheduler("DPM++ 2M SDE Heun", _sd15_config(), "karras").config
    plain = make_scheduler("DPM++ 2M", sde).config
    assert (plain.algorithm_type, plain.solver_type, plain.use_karras_sigmas) == (
        "dpmsolver++",
        "midpoint",
        True,  # no schedule asked for: the sigmas stay as the config had them
    )


def test_a_chosen_schedule_replaces_the_models_sigma_flags() -> None:
    base = {**SDXL_SCHEDULER, "use_karras_sigmas": True}
    assert make_scheduler("Euler", base, "default").config.use_karras_sigmas is True  # model's
    exponential = make_scheduler("Euler", base, "exponential").config
    assert (exponential.use_karras_sigmas, exponential.use_exponential_sigmas) == (False, True)
    assert make_scheduler("Euler", base, "trailing").config.use_karras_sigmas is False


def test_resolved_sampler_as_data() -> None:
    resolved = resolve_sampler("DPM++ 2M Karras", "karras")
    assert resolved.to_dict() == {
        "sampler": "DPM++ 2M",
        "schedule": "karras",
        "scheduler": "DPMSolverMultistepScheduler",
        "config": dict(resolved.config),
    }
    # Automatic is the sampler's own default (A1111's); "default" keeps the model's config
    assert resolve_sampler("Euler", "Automatic").schedule == "linspace"
    assert resolve_sampler("Euler", "default").config == {}
    with pytest.raises(TypeError):
        resolved.config["use_karras_sigmas"] = False  # type: ignore[index]


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("Eular a", "'Euler a'"),
        ("dpm++ 2m karas", "'DPM++ 2M Karras'"),
        ("dpmpp_2mm", "'DPM++ 2M'"),
    ],
)
def test_unknown_sampler_suggests_the_closest(name: str, suggestion: str) -> None:
    with pytest.raises(InvalidOptionError) as err:
        resolve_sampler(name)
    assert (err.value.option, err.value.value) == ("sampler", name)
    assert err.value.allowed == sampler_names()
    assert err.value.hint is not None and suggestion in err.value.hint


def test_unknown_schedule_suggests_the_closest() -> None:
    with pytest.raises(InvalidOptionError) as err:
        resolve_sampler("Euler", "karas")
    assert err.value.option == "schedule" and err.value.allowed == list(SCHEDULES)
    assert err.value.hint is not None and "'karras'" in err.value.hint


@pytest.mark.parametrize(
    ("name", "schedule"),
    [("DDIM", "karras"), ("Euler a", "exponential"), ("LCM", "trailing"), ("PLMS", "beta")],
)
def test_unsupported_combination(name: str, schedule: str) -> None:
    with pytest.raises(InvalidOptionError) as err:
        make_scheduler(name, _sd15_config(), schedule)
    assert (err.value.option, err.value.value) == ("schedule", schedule)
    assert err.value.allowed == list(SAMPLERS[name].schedules)
    assert err.value.hint is not None and "Euler" in err.value.hint


def test_unsupported_suffix_blames_the_sampler_name() -> None:
    with pytest.raises(InvalidOptionError) as err:
        resolve_sampler("Euler a Karras")
    assert (err.value.option, err.value.value) == ("sampler", "Euler a Karras")


def test_suffix_and_schedule_must_agree() -> None:
    assert resolve_sampler("DPM++ 2M Karras", "Karras").schedule == "karras"
    with pytest.raises(InvalidOptionError) as err:
        resolve_sampler("DPM++ 2M Karras", "exponential")
    assert err.value.option == "schedule" and err.value.allowed == ["karras"]


def test_missing_package_is_an_invalid_option_with_a_pip_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(samplers.resolve, "_is_installed", lambda package: False)
    with pytest.raises(InvalidOptionError) as err:
        resolve_sampler("k_lms")
    assert err.value.option == "sampler" and "LMS" not in err.value.allowed
    assert err.value.hint == "LMS needs the scipy package: pip install scipy"
    with pytest.raises(InvalidOptionError) as err:
        resolve_sampler("Euler", "beta")
    assert err.value.option == "schedule" and "beta" not in err.value.allowed
    with pytest.raises(InvalidOptionError, match="pip install torchsde"):
        resolve_sampler("DPM++ SDE Karras")


def test_non_string_name() -> None:
    with pytest.raises(InvalidOptionError):
        resolve_sampler(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("module", [samplers, samplers.resolve, samplers.table, samplers.schedules])
def test_docstring_examples(module: Any) -> None:
    assert doctest.testmod(module).failed == 0


# --- on a pipeline -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd_path: Path) -> tuple[Any, dict[str, Any]]:
    """The tiny SD pipeline and its own scheduler config (each test replaces the scheduler)."""
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe, dict(pipe.scheduler.config)


@pytest.fixture(scope="module")
def sdxl_pipe(tiny_sdxl_path: Path) -> tuple[Any, dict[str, Any]]:
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe, dict(pipe.scheduler.config)


def _run(
    pipe_and_config: tuple[Any, dict[str, Any]],
    name: str,
    schedule: str | None = None,
    steps: int = 3,
) -> np.ndarray:
    pipe, base = pipe_and_config
    if name == "DPM++ SDE":  # its Brownian tree ignores the pipeline's generator
        base = {**base, "noise_sampler_seed": 0}
    pipe.scheduler = make_scheduler(name, base, schedule)
    out = pipe(
        "a red cube",
        num_inference_steps=steps,
        height=64,
        width=64,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="np",
    )
    images: np.ndarray = out.images
    return images


@pytest.mark.parametrize("name", _params(SAMPLERS))
def test_every_sampler_runs_on_sd(sd_pipe: tuple[Any, dict[str, Any]], name: str) -> None:
    _skip_unless_installed(name)
    images = _run(sd_pipe, name)
    assert type(sd_pipe[0].scheduler).__name__ == EXPECTED[name][0]
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


@pytest.mark.parametrize(
    ("name", "schedule"),
    [
        ("Euler a", None),
        ("DPM++ 2M", "karras"),
        ("DPM++ 2M SDE", "exponential"),
        ("Heun", "karras"),
        ("DDIM", "trailing"),
        ("UniPC", None),
        ("LCM", None),
    ],
)
def test_some_samplers_run_on_sdxl(
    sdxl_pipe: tuple[Any, dict[str, Any]], name: str, schedule: str | None
) -> None:
    images = _run(sdxl_pipe, name, schedule, steps=4)
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


def test_dpmpp_sde_is_reproducible_with_a_noise_seed(sd_pipe: tuple[Any, dict[str, Any]]) -> None:
    _skip_unless_installed("DPM++ SDE")
    np.testing.assert_array_equal(_run(sd_pipe, "DPM++ SDE"), _run(sd_pipe, "DPM++ SDE"))
