"""The sampler names users know, mapped to diffusers schedulers.

Two tables. :data:`SAMPLERS` maps AUTOMATIC1111's display names ("DPM++ 2M") and ComfyUI's
sampler ids ("dpmpp_2m") to a diffusers scheduler class plus the config that makes it that
sampler. :data:`SCHEDULES` maps schedule types ("karras", "trailing") to config overrides.
Names match case-insensitively and ignore spaces, ``_`` and ``-`` (and ``++`` reads as ``pp``),
so "dpm++ 2m", "DPM++_2M" and "dpmpp_2m" are one sampler. A1111's legacy names with a schedule
suffix ("DPM++ 2M Karras", "DPM++ 2M SDE Exponential") resolve to sampler + schedule.

Sources: diffusers' A1111/k-diffusion table (docs/source/en/api/schedulers/overview.md),
read next to k-diffusion's ``k_diffusion/sampling.py`` and ComfyUI's ``comfy/samplers.py``.
Where they disagree the table follows what the code does; each such row says why.

Left out, because diffusers 0.42 has no faithful equivalent:

- "DPM++ 2S a" (``sample_dpmpp_2s_ancestral``): N/A in diffusers' table, whose nearest
  scheduler, DPMSolverSinglestepScheduler, is deterministic, not ancestral.
- "DPM++ 3M SDE": ``DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++",
  solver_order=3)`` is not ``sample_dpmpp_3m_sde``: its second-difference term has the
  opposite sign on the 0.5 in phi_3, a coefficient of -1 + O(h) where k-diffusion's is h/3.
- "DPM fast", "DPM adaptive", "Restart", the CFG++ variants, ComfyUI's ipndm, heunpp2, res_*.

Example:
    >>> resolved = resolve_sampler("DPM++ 2M Karras")
    >>> resolved.spec.name, resolved.schedule, resolved.config["use_karras_sigmas"]
    ('DPM++ 2M', 'karras', True)
    >>> scheduler = make_scheduler("euler_ancestral", {"prediction_type": "v_prediction"})
    >>> type(scheduler).__name__, scheduler.config.prediction_type
    ('EulerAncestralDiscreteScheduler', 'v_prediction')
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    SchedulerMixin,
    TCDScheduler,
    UniPCMultistepScheduler,
)

from sdkit.errors import InvalidOptionError

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "ResolvedSampler",
    "SamplerSpec",
    "check_steps",
    "fresh_scheduler",
    "make_scheduler",
    "resolve_sampler",
    "sampler_names",
]


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: the diffusers class and the config that make it the sampler users know.

    Attributes:
        name: canonical display name, A1111's where it has one ("DPM++ 2M").
        scheduler_class: the diffusers scheduler class.
        config: overrides applied on top of the model's scheduler config.
        aliases: ComfyUI ids and A1111's internal names ("dpmpp_2m", "k_dpmpp_2m").
        schedules: the schedule types (keys of :data:`SCHEDULES`) this sampler accepts.
        description: one line for ``sdkit samplers``.
    """

    name: str
    scheduler_class: type
    config: Mapping[str, Any]
    aliases: tuple[str, ...]
    schedules: tuple[str, ...]
    description: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


@dataclass(frozen=True)
class ResolvedSampler:
    """A sampler with its schedule, ready to build a scheduler.

    Attributes:
        spec: the sampler's table entry.
        schedule: the effective schedule name (``"default"`` when none was asked for).
        config: every override to apply: ``spec.config`` plus the schedule's.
    """

    spec: SamplerSpec
    schedule: str
    config: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The choice as plain data, e.g. for a manifest or ``--json`` output."""
        return {
            "sampler": self.spec.name,
            "schedule": self.schedule,
            "scheduler": self.spec.scheduler_class.__name__,
            "config": dict(self.config),
        }


# Schedule types. k-diffusion builds Karras/exponential sigmas over the model's full range
# (sigma_max = sigma(t=999)). diffusers' Euler, Heun, DPM2, LMS and DPM++ SDE take the range
# from the spaced timesteps instead, so under "leading" spacing (SDXL's config) sigma_max
# drops from 14.6 to 5.9 at 6 steps; hence "linspace" with every sigma schedule, as diffusers'
# table already says for exponential and beta.
SCHEDULES: Mapping[str, tuple[Mapping[str, Any], str]] = MappingProxyType(
    {
        "default": ({}, "the model's own spacing and sigmas, from its scheduler config"),
        "karras": (
            {"use_karras_sigmas": True, "timestep_spacing": "linspace"},
            "Karras et al. (2022) sigmas (rho 7) over the model's full sigma range",
        ),
        "exponential": (
            {"use_exponential_sigmas": True, "timestep_spacing": "linspace"},
            "sigmas evenly spaced in log sigma over the model's full range",
        ),
        # diffusers spaces the Beta(0.6, 0.6) quantiles in sigma; ComfyUI's and A1111's "beta"
        # spaces them in timesteps, so images differ from theirs.
        "beta": (
            {"use_beta_sigmas": True, "timestep_spacing": "linspace"},
            "diffusers' beta sigmas (arXiv:2407.12173), spaced in sigma, not timesteps",
        ),
        "linspace": ({"timestep_spacing": "linspace"}, "timesteps evenly spaced, 999 down to 0"),
        "leading": ({"timestep_spacing": "leading"}, "timesteps k*1000/n (+ steps_offset)"),
        "trailing": ({"timestep_spacing": "trailing"}, "timesteps evenly spaced down from 999"),
        # comfy/samplers.py: normal_scheduler = linspace(t(sigma_max), t(sigma_min), steps);
        # simple_scheduler and sgm_uniform step down from t=999 by 1000/steps.
        "normal": ({"timestep_spacing": "linspace"}, "ComfyUI's normal, same as linspace"),
        "simple": ({"timestep_spacing": "trailing"}, "ComfyUI's simple, same as trailing"),
        "sgm_uniform": (
            {"timestep_spacing": "trailing"},
            "ComfyUI's/A1111's SGM Uniform, same as trailing",
        ),
    }
)
_SCHEDULE_ALIASES: Mapping[str, str] = {"automatic": "default", "uniform": "linspace"}
# The config flag behind each sigma schedule; a chosen schedule turns the others off.
_SIGMA_FLAGS: Mapping[str, str] = {
    "karras": "use_karras_sigmas",
    "exponential": "use_exponential_sigmas",
    "beta": "use_beta_sigmas",
}
_SPACED = ("default", "linspace", "leading", "trailing", "normal", "simple", "sgm_uniform")
_ALL = ("default", "karras", "exponential", "beta", *_SPACED[1:])


_DPMPP = DPMSolverMultistepScheduler
_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint"}
_2M_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "midpoint"}
_2M_SDE_HEUN = {**_2M_SDE, "solver_type": "heun"}

# Columns: name, class, config overrides, aliases (ComfyUI ids, then A1111's internal names),
# schedules, description. In display order.
# fmt: off
_TABLE = (
    SamplerSpec("Euler", EulerDiscreteScheduler, {}, ("euler", "k_euler"), _ALL,
                "Euler's method (Karras et al. 2022, Algorithm 2); deterministic"),
    SamplerSpec("Euler a", EulerAncestralDiscreteScheduler, {},
                ("euler_ancestral", "k_euler_a", "k_euler_ancestral"), _SPACED,
                "Euler with ancestral noise; the image changes with the step count"),
    SamplerSpec("Heun", HeunDiscreteScheduler, {}, ("heun", "k_heun"), _ALL,
                "Heun's 2nd-order method; two model calls a step"),
    # A1111 also drops the next-to-last sigma for DPM2 and DPM2 a; diffusers has no such option.
    SamplerSpec("DPM2", KDPM2DiscreteScheduler, {}, ("dpm_2", "k_dpm_2"), _ALL,
                "DPM-Solver-2 (Karras et al. form); two model calls a step"),
    SamplerSpec("DPM2 a", KDPM2AncestralDiscreteScheduler, {}, ("dpm_2_ancestral", "k_dpm_2_a"),
                _ALL, "DPM-Solver-2 with ancestral noise"),
    # Set in full, so that a model shipping a 2M SDE or order-3 config still gets plain 2M.
    SamplerSpec("DPM++ 2M", _DPMPP, _2M, ("dpmpp_2m", "k_dpmpp_2m"), _ALL,
                "DPM-Solver++(2M), multistep; a good default"),
    # diffusers#3344: the reverse-SDE solver that k-diffusion adopted as sample_dpmpp_2m_sde.
    SamplerSpec("DPM++ 2M SDE", _DPMPP, _2M_SDE,
                ("dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "k_dpmpp_2m_sde"), _ALL,
                "DPM-Solver++(2M) SDE; stochastic"),
    SamplerSpec("DPM++ 2M SDE Heun", _DPMPP, _2M_SDE_HEUN, ("dpmpp_2m_sde_heun",), _ALL,
                "DPM-Solver++(2M) SDE with the Heun-type second-order term"),
    # diffusers' table says DPMSolverSinglestepScheduler, a deterministic solver. A1111's DPM++
    # SDE is k-diffusion's sample_dpmpp_sde, which DPMSolverSDEScheduler ports step for step.
    SamplerSpec("DPM++ SDE", DPMSolverSDEScheduler, {},
                ("dpmpp_sde", "dpmpp_sde_gpu", "k_dpmpp_sde"), _ALL,
                "DPM-Solver++ SDE; stochastic, two model calls a step; needs torchsde"),
    SamplerSpec("LMS", LMSDiscreteScheduler, {}, ("lms", "k_lms"), _ALL,
                "linear multistep, order 4; needs scipy"),
    # Latent models never clip x0 (CompVis DDIM, k-diffusion); diffusers' default clips.
    SamplerSpec("DDIM", DDIMScheduler, {"clip_sample": False}, ("ddim",), _SPACED,
                "DDIM; deterministic at the pipeline's default eta=0"),
    SamplerSpec("PLMS", PNDMScheduler, {"skip_prk_steps": True}, ("plms",), _SPACED,
                "pseudo linear multistep (PNDM without its Runge-Kutta warm-up)"),
    # diffusers' defaults (bh2, order 2: its docs' advice for guided sampling). A1111 defaults
    # to bh1 at order 3 (uni_pc_variant, uni_pc_order), as does ComfyUI's uni_pc.
    SamplerSpec("UniPC", UniPCMultistepScheduler, {"solver_type": "bh2", "solver_order": 2},
                ("uni_pc", "uni_pc_bh2"), _ALL, "UniPC predictor-corrector (bh2, order 2)"),
    # LCM and TCD accept timestep_spacing but ignore it: they keep their own skipping schedule.
    SamplerSpec("LCM", LCMScheduler, {}, ("lcm",), ("default",),
                "latent consistency sampling, 2-8 steps; for LCM-distilled models or LoRAs"),
    SamplerSpec("DDPM", DDPMScheduler, {"clip_sample": False}, ("ddpm",), _SPACED,
                "ancestral DDPM sampling; needs many steps"),
    # diffusers' DEIS is the log-rho form at order 2; ComfyUI's deis is tAB at order 3.
    SamplerSpec("DEIS", DEISMultistepScheduler, {}, ("deis",), _ALL,
                "DEIS multistep exponential integrator (log-rho, order 2)"),
    # The pipeline's eta is TCD's gamma; the TCD paper's default is eta=0.3.
    SamplerSpec("TCD", TCDScheduler, {}, ("tcd",), ("default",),
                "trajectory consistency distillation; for TCD-distilled models or LoRAs"),
)
# fmt: on
SAMPLERS: Mapping[str, SamplerSpec] = MappingProxyType({spec.name: spec for spec in _TABLE})

# Packages that diffusers imports lazily: without them it swaps in a placeholder class (LMS,
# DPM++ SDE) or raises at construction (beta sigmas). Keys are sampler or schedule names.
_NEEDS: Mapping[str, str] = {"DPM++ SDE": "torchsde", "LMS": "scipy", "beta": "scipy"}


def _key(text: str) -> str:
    """Fold a spelling: case, spaces, ``_``/``-``, and ``++`` vs ``pp`` do not matter."""
    return re.sub(r"[\s_\-]+", "", text.strip().lower().replace("++", "pp"))


def _build_index() -> dict[str, SamplerSpec]:
    index: dict[str, SamplerSpec] = {}
    for spec in SAMPLERS.values():
        for spelling in (spec.name, *spec.aliases):
            other = index.setdefault(_key(spelling), spec)
            if other is not spec:
                raise RuntimeError(f"{spelling!r} names both {other.name!r} and {spec.name!r}")
    return index


_INDEX = _build_index()
_SCHEDULE_INDEX: Mapping[str, str] = {
    **{_key(name): name for name in SCHEDULES},
    **{_key(alias): name for alias, name in _SCHEDULE_ALIASES.items()},
}


def sampler_names() -> list[str]:
    """Every accepted spelling: the canonical names in display order, then the aliases.

    Any of them may also end in a schedule name, A1111's legacy style ("DPM++ 2M Karras").
    """
    names = list(SAMPLERS)
    for spec in SAMPLERS.values():
        names += [alias for alias in spec.aliases if alias not in names]
    return names


def _is_installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _available(names: Iterable[str]) -> list[str]:
    """The names (samplers or schedules) whose extra package, if any, is installed."""
    return [n for n in names if n not in _NEEDS or _is_installed(_NEEDS[n])]


def _suggest(word: str, spellings: Iterable[str]) -> str:
    """A hint naming the spelling nearest to ``word``, compared folded."""
    folded = {_key(s): s for s in reversed(list(spellings))}  # the first spelling wins
    match = difflib.get_close_matches(_key(word), list(folded), n=1, cutoff=0.6)
    return f"did you mean {folded[match[0]]!r}?" if match else "`sdkit samplers` lists them"


def _lookup_sampler(name: str) -> tuple[SamplerSpec, str | None]:
    """The spec, and the schedule a legacy suffix names ("DPM++ 2M Karras" -> "karras")."""
    key = _key(name) if isinstance(name, str) else ""
    if key in _INDEX:
        return _INDEX[key], None
    for suffix, schedule in _SCHEDULE_INDEX.items():
        if key.endswith(suffix) and key[: -len(suffix)] in _INDEX:
            return _INDEX[key[: -len(suffix)]], schedule
    legacy = [  # so that "DPM++ 2M Karas" suggests the legacy name
        f"{spec.name} {schedule.capitalize()}"
        for spec in SAMPLERS.values()
        for schedule in _SIGMA_FLAGS
        if schedule in spec.schedules
    ]
    hint = _suggest(str(name), [*sampler_names(), *legacy])
    raise InvalidOptionError("sampler", name, sampler_names(), hint=hint)


def _lookup_schedule(schedule: str) -> str:
    key = _key(schedule) if isinstance(schedule, str) else ""
    if key in _SCHEDULE_INDEX:
        return _SCHEDULE_INDEX[key]
    raise InvalidOptionError(
        "schedule", schedule, list(SCHEDULES), hint=_suggest(str(schedule), SCHEDULES)
    )


def _require(needer: str, option: str, value: Any, allowed: list[str]) -> None:
    package = _NEEDS.get(needer)
    if package is not None and not _is_installed(package):
        hint = f"{needer} needs the {package} package: pip install {package}"
        raise InvalidOptionError(option, value, allowed, hint=hint)


def resolve_sampler(name: str, schedule: str | None = None) -> ResolvedSampler:
    """Look up a sampler and a schedule, and check that they go together.

    Args:
        name: a canonical name, an alias, or a legacy name with a schedule suffix
            ("DPM++ 2M Karras"); case, spaces, ``_`` and ``-`` do not matter.
        schedule: a key of :data:`SCHEDULES` (or A1111's "Automatic" or "Uniform"), or
            ``None``: the name's suffix if it has one, else ``"default"``.

    Returns:
        The spec, the effective schedule, and the overrides for the model's scheduler config.

    Raises:
        InvalidOptionError: with ``option="sampler"`` for an unknown name, a suffix the sampler
            does not support or a sampler whose package is missing; with
            ``option="schedule"`` for an unknown schedule, one the sampler does not support,
            one that contradicts the name's suffix or one whose package is missing.

    Example:
        >>> resolve_sampler("dpmpp_2m_sde", "Exponential").config["use_exponential_sigmas"]
        True
    """
    spec, suffix = _lookup_sampler(name)
    # Errors about the schedule name the option it came from: the sampler's suffix or its own.
    effective, option, value = suffix or "default", "sampler", name
    if schedule is not None:
        wanted = _lookup_schedule(schedule)
        if suffix is not None and wanted != suffix:
            hint = f"{name!r} already selects {suffix}; pass sampler={spec.name!r} to change it"
            raise InvalidOptionError("schedule", schedule, [suffix], hint=hint)
        effective, option, value = wanted, "schedule", schedule
    if effective not in spec.schedules:
        others = ", ".join(s.name for s in SAMPLERS.values() if effective in s.schedules)
        allowed = list(spec.schedules) if option == "schedule" else sampler_names()
        hint = f"{spec.name} takes {', '.join(spec.schedules)}; {effective} suits {others}"
        raise InvalidOptionError(option, value, allowed, hint=hint)
    _require(spec.name, "sampler", name, _available(SAMPLERS))
    schedules = _available(spec.schedules)
    _require(effective, option, value, schedules if option == "schedule" else sampler_names())
    overrides = {**spec.config, **SCHEDULES[effective][0]}
    if effective != "default":  # the chosen schedule, not the model's config, sets the sigmas
        for sigma_schedule, flag in _SIGMA_FLAGS.items():
            if sigma_schedule in spec.schedules:
                overrides.setdefault(flag, False)
    return ResolvedSampler(spec, effective, MappingProxyType(overrides))


def make_scheduler(
    name: str, base_config: Mapping[str, Any], schedule: str | None = None
) -> SchedulerMixin:
    """Build the scheduler for a sampler on top of the model's scheduler config.

    The model's keys (``prediction_type``, the beta schedule, ``timestep_spacing`` unless the
    schedule sets it) carry over; keys the class does not know are ignored. The overrides go
    in as keyword arguments because ``from_config`` drops config keys that the model's config
    lists in ``_use_default_values``: merged into the dict, ``timestep_spacing="trailing"``
    would be lost on a model whose config never set it.

    Args:
        name: the sampler, as for :func:`resolve_sampler`.
        base_config: the model's ``pipe.scheduler.config``. For reproducible "DPM++ SDE" noise
            include ``noise_sampler_seed``: its Brownian tree ignores the pipeline's generator.
        schedule: the schedule, as for :func:`resolve_sampler`.

    Returns:
        A new scheduler, for ``pipe.scheduler = ...``.

    Raises:
        InvalidOptionError: as :func:`resolve_sampler` does.

    Example:
        >>> scheduler = make_scheduler("DDIM", {"timestep_spacing": "leading"}, "simple")
        >>> scheduler.config.timestep_spacing
        'trailing'
    """
    resolved = resolve_sampler(name, schedule)
    cls: Any = resolved.spec.scheduler_class
    scheduler: SchedulerMixin = cls.from_config(dict(base_config), **resolved.config)
    return scheduler


def fresh_scheduler(
    model_class: type[Any],
    model_config: Mapping[str, Any],
    resolved: ResolvedSampler | None,
    seeds: list[int],
) -> Any:
    """A fresh scheduler for one call: the sampler's on the model's config, else the model's own.

    Args:
        model_class: the model's own scheduler class (used when ``resolved`` is ``None``).
        model_config: the model's scheduler config.
        resolved: the sampler asked for, from :func:`resolve_sampler`, or ``None``.
        seeds: the call's seeds, one per image (DPM++ SDE seeds its noise with them).
    """
    base = {k: v for k, v in model_config.items() if k != "_use_default_values"}
    cls = resolved.spec.scheduler_class if resolved else model_class
    if "noise_sampler_seed" in inspect.signature(cls).parameters:
        # DPM++ SDE draws its noise from a Brownian tree, not from the pipeline's
        # generators: seed it per image so that seeds reproduce.
        base["noise_sampler_seed"] = seeds[0] if len(seeds) == 1 else list(seeds)
    if resolved is None:
        return model_class.from_config(base)
    return make_scheduler(resolved.spec.name, base, resolved.schedule)


def check_steps(scheduler: Any, steps: int, resolved: ResolvedSampler | None) -> None:
    """Refuse a step count the scheduler cannot schedule, before any denoising.

    diffusers' "leading" spacing with ``steps_offset=1`` (PNDM, DDIM, … with SD's own config)
    schedules timestep ``num_train_timesteps`` itself at ``steps == num_train_timesteps`` and
    then indexes past the end of its noise table; LCM and TCD refuse more steps than their
    ``original_inference_steps``. Both become an :class:`InvalidOptionError` here.
    """
    name = resolved.spec.name if resolved else type(scheduler).__name__
    limit = int(scheduler.config.get("num_train_timesteps", 1000))
    try:
        scheduler.set_timesteps(steps)
        top = float(scheduler.timesteps.max())
    except (IndexError, ValueError) as exc:
        raise InvalidOptionError(
            "steps", steps, f"a step count that {name} can schedule ({exc})",
            hint="use fewer steps or another sampler.",
        ) from exc  # fmt: skip
    if not top < limit:
        raise InvalidOptionError(
            "steps", steps, f"at most {steps - 1} with {name} and this model's scheduler config "
            f"(timestep {top:g} would be past its {limit} training timesteps)",
            hint=f"use steps={steps - 1} or another sampler (e.g. sampler='Euler').",
        )  # fmt: skip
