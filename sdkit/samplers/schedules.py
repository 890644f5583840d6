"""Schedule types: how the steps' noise levels are spaced, as diffusers config overrides.

:data:`SCHEDULES` maps sdkit's schedule names to the overrides that make a diffusers scheduler
space its steps that way, with a line for ``sdkit samplers``. :data:`A1111_LABELS` gives the
label AUTOMATIC1111 writes in infotext ("Schedule type: Karras"), where it has one.

k-diffusion builds Karras/exponential sigmas over the model's full range (sigma_max =
sigma(t=999)). diffusers' Euler, Heun, DPM2, LMS and DPM++ SDE take the range from the spaced
timesteps instead, so under "leading" spacing (SDXL's config) sigma_max drops from 14.6 to 5.9
at 6 steps; hence "linspace" with every sigma schedule, as diffusers' table already says for
exponential and beta.

Sources (names and labels): AUTOMATIC1111/stable-diffusion-webui ``modules/sd_schedulers.py``
(v1.10.1) and comfyanonymous/ComfyUI ``comfy/samplers.py`` (``SCHEDULER_NAMES``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "A1111_LABELS",
    "REFUSED_SCHEDULES",
    "SCHEDULES",
    "SCHEDULE_ALIASES",
    "SIGMA_FLAGS",
    "SUFFIX_ALIASES",
]

SCHEDULES: Mapping[str, tuple[Mapping[str, Any], str]] = MappingProxyType(
    {
        "default": ({}, "the model's own spacing and sigmas, from its scheduler config"),
        "karras": (
            {"use_karras_sigmas": True, "timestep_spacing": "linspace"},
            "Karras et al. (2022) sigmas (rho 7) over the model's full sigma range",
        ),
        # k-diffusion's get_sigmas_polyexponential with A1111's default rho=1 is this schedule.
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
        # A1111's ddim_scheduler and ComfyUI's ddim_uniform take timesteps 1, 1+s, 1+2s, ...
        # (s = 1000 // steps), as A1111's DDIM and PLMS samplers do: diffusers' "leading" with
        # steps_offset=1. Theirs has one step more where 1 + steps*s < 1000 (e.g. 7 steps).
        "ddim": (
            {"timestep_spacing": "leading", "steps_offset": 1},
            "A1111's DDIM / ComfyUI's ddim_uniform: timesteps 1 + k*(1000//n)",
        ),
        # Explicit sigma lists (sigmas.py), for samplers whose scheduler takes ``sigmas=``.
        "kl_optimal": ({}, "KL-optimal: evenly spaced in arctan(sigma) (arXiv:2404.14507)"),
        "align_your_steps": ({}, "NVIDIA's Align Your Steps (SD 1.5 / SDXL tables)"),
        "linear_quadratic": ({}, "ComfyUI's linear_quadratic (Mochi): linear, then quadratic"),
    }
)
#: Other spellings of a schedule: A1111's labels and names, ComfyUI's ids.
SCHEDULE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "uniform": "linspace",
        "polyexponential": "exponential",  # rho = 1, A1111's default_rho for it
        "ddim_uniform": "ddim",
    }
)
#: Suffixes of A1111's old internal sampler names (``k_dpmpp_2m_ka``, ``k_dpmpp_2m_sde_exp``).
SUFFIX_ALIASES: Mapping[str, str] = MappingProxyType({"ka": "karras", "exp": "exponential"})

#: The label A1111 writes as "Schedule type" for each schedule (A1111's ``Scheduler.label``).
#: "leading" has none: A1111 reads an unknown label as "Automatic", its sampler's default.
A1111_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "karras": "Karras",
        "exponential": "Exponential",
        "beta": "Beta",
        "linspace": "Uniform",
        "trailing": "SGM Uniform",
        "normal": "Normal",
        "simple": "Simple",
        "sgm_uniform": "SGM Uniform",
        "ddim": "DDIM",
        "kl_optimal": "KL Optimal",
        "align_your_steps": "Align Your Steps",
    }
)

#: Schedules users name that sdkit does not build, with the nearest one it does.
REFUSED_SCHEDULES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "karras_exponential": ("karras", "a blend of Karras and exponential sigmas"),
    }
)

#: The config flag behind each sigma schedule; a chosen schedule turns the others off.
SIGMA_FLAGS: Mapping[str, str] = MappingProxyType(
    {
        "karras": "use_karras_sigmas",
        "exponential": "use_exponential_sigmas",
        "beta": "use_beta_sigmas",
    }
)
