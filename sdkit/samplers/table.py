"""The sampler table: AUTOMATIC1111 / ComfyUI names -> diffusers scheduler + config.

One row per sampler, each with its source. :data:`SAMPLERS` maps A1111's display names
("DPM++ 2M") and ComfyUI's sampler ids ("dpmpp_2m") to a diffusers scheduler class, the config
that makes it that sampler, and its *automatic* schedule: the one A1111's "Automatic" gives
when no schedule is named (the ``'scheduler'`` option of each entry of ``samplers_k_diffusion``
in A1111's ``modules/sd_samplers_kdiffusion.py``; entries without one use k-diffusion's
uniform ``get_sigmas``, diffusers' "linspace").

Sources: diffusers' A1111/k-diffusion table (docs/source/en/api/schedulers/overview.md),
read next to k-diffusion's ``k_diffusion/sampling.py``, ComfyUI's ``comfy/samplers.py`` and
A1111 v1.10.1's ``modules/sd_samplers_kdiffusion.py`` / ``sd_samplers_timesteps.py``. Where
they disagree the table follows what the code does; each such row says why.

:data:`REFUSED` lists the names users type that have no faithful equivalent here, each with
the nearest sampler sdkit does have:

- "DPM++ 2S a" is sdkit's own scheduler (``k_samplers.py``): diffusers' table has none, and
  its nearest, DPMSolverSinglestepScheduler, is deterministic, not ancestral.
- "DPM++ 3M SDE" is sdkit's own scheduler too: ``DPMSolverMultistepScheduler(algorithm_type=
  "sde-dpmsolver++", solver_order=3)`` is not ``sample_dpmpp_3m_sde`` (its second-difference
  term has the opposite sign on the 0.5 in phi_3).
- "DPM fast", "DPM adaptive", "Restart", the CFG++ variants, ComfyUI's ipndm, heunpp2, res_*.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    TCDScheduler,
    UniPCMultistepScheduler,
)

from .k_samplers import DPMPP2SAncestralScheduler, DPMPP3MSDEScheduler
from .sigmas import EXPLICIT_SCHEDULES

__all__ = ["NEEDS", "REFUSED", "SAMPLERS", "SamplerSpec"]


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
        automatic: the schedule used when none is named: A1111's "Automatic" for it.
        in_a1111: whether A1111 knows the sampler by ``name`` (its infotext reader maps any
            other name to its default sampler, DPM++ 2M).
    """

    name: str
    scheduler_class: type
    config: Mapping[str, Any]
    aliases: tuple[str, ...]
    schedules: tuple[str, ...]
    description: str
    automatic: str = "default"
    in_a1111: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


_SPACED = ("default", "linspace", "leading", "trailing", "normal", "simple", "sgm_uniform", "ddim")
_ALL = ("default", "karras", "exponential", "beta", *_SPACED[1:])
# Samplers whose scheduler takes explicit sigmas (k_samplers.py) also run sigmas.py's lists.
_EULER = (*_ALL, *EXPLICIT_SCHEDULES)
_K = ("karras", "exponential", "linspace", *EXPLICIT_SCHEDULES)

_DPMPP = DPMSolverMultistepScheduler
_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint"}
_2M_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "midpoint"}
_2M_SDE_HEUN = {**_2M_SDE, "solver_type": "heun"}

# Columns: name, class, config overrides, aliases (ComfyUI ids, then A1111's internal names),
# schedules, description, automatic schedule (A1111 v1.10.1's 'scheduler' option). In display
# order.
# fmt: off
_TABLE = (
    SamplerSpec("Euler", EulerDiscreteScheduler, {}, ("euler", "k_euler"), _EULER,
                "Euler's method (Karras et al. 2022, Algorithm 2); deterministic", "linspace"),
    SamplerSpec("Euler a", EulerAncestralDiscreteScheduler, {},
                ("euler_ancestral", "k_euler_a", "k_euler_ancestral"), _SPACED,
                "Euler with ancestral noise; the image changes with the step count", "linspace"),
    SamplerSpec("Heun", HeunDiscreteScheduler, {}, ("heun", "k_heun"), _ALL,
                "Heun's 2nd-order method; two model calls a step", "linspace"),
    # A1111 also drops the next-to-last sigma for DPM2 and DPM2 a; diffusers has no such option.
    SamplerSpec("DPM2", KDPM2DiscreteScheduler, {}, ("dpm_2", "k_dpm_2"), _ALL,
                "DPM-Solver-2 (Karras et al. form); two model calls a step", "karras"),
    SamplerSpec("DPM2 a", KDPM2AncestralDiscreteScheduler, {}, ("dpm_2_ancestral", "k_dpm_2_a"),
                _ALL, "DPM-Solver-2 with ancestral noise", "karras"),
    # k-diffusion's sample_dpmpp_2s_ancestral (Lu et al. 2022, arXiv:2211.01095), written out
    # in k_samplers.py; its schedules are k-diffusion's sigma lists ("linspace": A1111's Uniform).
    SamplerSpec("DPM++ 2S a", DPMPP2SAncestralScheduler, {},
                ("dpmpp_2s_ancestral", "k_dpmpp_2s_a"), _K,
                "DPM-Solver++(2S) with ancestral noise; two model calls a step", "karras"),
    # k-diffusion's sample_dpmpp_3m_sde, written out in k_samplers.py; A1111 discards the
    # next-to-last sigma and gives it Exponential.
    SamplerSpec("DPM++ 3M SDE", DPMPP3MSDEScheduler, {},
                ("dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "k_dpmpp_3m_sde"), _K,
                "DPM-Solver++(3M) SDE; stochastic, one model call a step", "exponential"),
    # Set in full, so that a model shipping a 2M SDE or order-3 config still gets plain 2M.
    SamplerSpec("DPM++ 2M", _DPMPP, _2M, ("dpmpp_2m", "k_dpmpp_2m"), _ALL,
                "DPM-Solver++(2M), multistep; a good default", "karras"),
    # diffusers#3344: the reverse-SDE solver that k-diffusion adopted as sample_dpmpp_2m_sde.
    SamplerSpec("DPM++ 2M SDE", _DPMPP, _2M_SDE,
                ("dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "k_dpmpp_2m_sde"), _ALL,
                "DPM-Solver++(2M) SDE; stochastic", "exponential"),
    SamplerSpec("DPM++ 2M SDE Heun", _DPMPP, _2M_SDE_HEUN,
                ("dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "k_dpmpp_2m_sde_heun"), _ALL,
                "DPM-Solver++(2M) SDE with the Heun-type second-order term", "exponential"),
    # diffusers' table says DPMSolverSinglestepScheduler, a deterministic solver. A1111's DPM++
    # SDE is k-diffusion's sample_dpmpp_sde, which DPMSolverSDEScheduler ports step for step.
    SamplerSpec("DPM++ SDE", DPMSolverSDEScheduler, {},
                ("dpmpp_sde", "dpmpp_sde_gpu", "k_dpmpp_sde"), _ALL,
                "DPM-Solver++ SDE; stochastic, two model calls a step; needs torchsde", "karras"),
    SamplerSpec("LMS", LMSDiscreteScheduler, {}, ("lms", "k_lms"), _ALL,
                "linear multistep, order 4; needs scipy", "linspace"),
    # Latent models never clip x0 (CompVis DDIM, k-diffusion); diffusers' default clips.
    # A1111's DDIM and PLMS (sd_samplers_timesteps.py) step at 1 + k*(1000 // steps).
    SamplerSpec("DDIM", DDIMScheduler, {"clip_sample": False}, ("ddim",), _SPACED,
                "DDIM; deterministic at the pipeline's default eta=0", "ddim"),
    SamplerSpec("PLMS", PNDMScheduler, {"skip_prk_steps": True}, ("plms",), _SPACED,
                "pseudo linear multistep (PNDM without its Runge-Kutta warm-up)", "ddim"),
    # A1111 (uni_pc_variant, uni_pc_order defaults) and ComfyUI's uni_pc: bh1 at order 3, time
    # uniform steps (skip_type "time_uniform": diffusers' linspace), ending at t_0 = 1/N, the
    # model's smallest sigma (bh1's step to sigma 0 is inf/inf in diffusers: NaN).
    SamplerSpec("UniPC", UniPCMultistepScheduler,
                {"solver_type": "bh1", "solver_order": 3, "final_sigmas_type": "sigma_min"},
                ("uni_pc", "unipc"), _ALL, "UniPC predictor-corrector (bh1, order 3)",
                "linspace"),
    # ComfyUI's uni_pc_bh2; diffusers' defaults (its docs' advice for guided sampling).
    SamplerSpec("UniPC bh2", UniPCMultistepScheduler, {"solver_type": "bh2", "solver_order": 2},
                ("uni_pc_bh2",), _ALL, "UniPC predictor-corrector (bh2, order 2)", "linspace",
                in_a1111=False),
    # LCM and TCD accept timestep_spacing but ignore it: they keep their own skipping schedule.
    SamplerSpec("LCM", LCMScheduler, {}, ("lcm", "k_lcm"), ("default",),
                "latent consistency sampling, 2-8 steps; for LCM-distilled models or LoRAs"),
    SamplerSpec("DDPM", DDPMScheduler, {"clip_sample": False}, ("ddpm",), _SPACED,
                "ancestral DDPM sampling; needs many steps", in_a1111=False),
    # diffusers' DEIS is the log-rho form at order 2; ComfyUI's deis is tAB at order 3.
    SamplerSpec("DEIS", DEISMultistepScheduler, {}, ("deis",), _ALL,
                "DEIS multistep exponential integrator (log-rho, order 2)", in_a1111=False),
    # The pipeline's eta is TCD's gamma; the TCD paper's default is eta=0.3.
    SamplerSpec("TCD", TCDScheduler, {}, ("tcd",), ("default",),
                "trajectory consistency distillation; for TCD-distilled models or LoRAs",
                in_a1111=False),
)
# fmt: on
SAMPLERS: Mapping[str, SamplerSpec] = MappingProxyType({spec.name: spec for spec in _TABLE})

#: Packages that diffusers imports lazily: without them it swaps in a placeholder class (LMS,
#: DPM++ SDE) or raises at construction (beta sigmas). Keys are sampler or schedule names.
NEEDS: Mapping[str, str] = MappingProxyType(
    {"DPM++ SDE": "torchsde", "LMS": "scipy", "beta": "scipy"}
)

#: Sampler names users type that sdkit does not run: name -> (nearest sampler here, why).
#: Spellings fold as sampler names do; a ``_gpu`` or ``_cfg_pp`` suffix folds onto its base.
REFUSED: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "DPM fast": ("DPM++ 2M", "DPM-Solver fast is not in diffusers"),
        "DPM adaptive": ("DPM++ 2M", "adaptive step size does not fit a fixed step count"),
        "k_dpm_ad": ("DPM++ 2M", "adaptive step size does not fit a fixed step count"),
        "Restart": ("Heun", "Restart sampling (arXiv:2306.14878) is not in diffusers"),
        "DDIM CFG++": ("DDIM", "CFG++ (arXiv:2406.08070) changes guidance, not the sampler"),
        "ipndm": ("PLMS", "iPNDM (arXiv:2204.13902) is not in diffusers"),
        "ipndm_v": ("PLMS", "iPNDM with variable steps is not in diffusers"),
        "res_multistep": ("DPM++ 2M", "RES multistep (arXiv:2308.02157) is not in diffusers"),
        "heunpp2": ("Heun", "Heun++ is not in diffusers"),
        "euler_cfg_pp": ("Euler", "CFG++ (arXiv:2406.08070) changes guidance, not the sampler"),
        "euler_ancestral_cfg_pp": ("Euler a", "CFG++ changes guidance, not the sampler"),
        "dpmpp_2m_cfg_pp": ("DPM++ 2M", "CFG++ changes guidance, not the sampler"),
        "dpmpp_2s_ancestral_cfg_pp": ("DPM++ 2S a", "CFG++ changes guidance, not the sampler"),
        "res_multistep_cfg_pp": ("DPM++ 2M", "CFG++ changes guidance, not the sampler"),
        "gradient_estimation": ("Euler", "gradient estimation is not in diffusers"),
    }
)
