"""Samplers diffusers lacks, written k-diffusion style and packaged as diffusers schedulers.

:func:`dpmpp_2s_ancestral_step` is one step of DPM-Solver++(2S) with ancestral noise (Lu et
al. 2022, "DPM-Solver++", arXiv:2211.01095, Algorithm 1 at r = 1/2; k-diffusion's
``sample_dpmpp_2s_ancestral``, crowsonkb/k-diffusion ``k_diffusion/sampling.py``).
:class:`DPMPP2SAncestralScheduler` runs it inside the unchanged SD/SDXL pipelines: like
diffusers' HeunDiscreteScheduler it asks for two model calls a step and keeps the state
between them. :class:`ExplicitSigmasEulerScheduler` is diffusers' Euler fed an explicit sigma
schedule (:mod:`sdkit.samplers.sigmas`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from .sigmas import EXPLICIT_SCHEDULES, explicit_sigmas, model_sigmas

__all__ = [
    "DPMPP2SAncestralScheduler",
    "DPMPP3MSDEScheduler",
    "ExplicitSigmasEulerScheduler",
    "KDiffusionScheduler",
    "ancestral_step",
    "dpmpp_2s_ancestral_step",
    "dpmpp_3m_sde_step",
    "k_sigmas",
]


class ExplicitSigmasEulerScheduler(EulerDiscreteScheduler):  # type: ignore[misc]
    """diffusers' Euler on an explicit schedule: ``sigma_schedule`` and ``model_family``."""

    def set_timesteps(  # type: ignore[override]
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
    ) -> None:
        """As Euler's; with only a step count, the sigmas come from ``sigma_schedule``."""
        schedule = self.config.get("sigma_schedule")
        if sigmas is None and timesteps is None and num_inference_steps and schedule:
            family = str(self.config.get("model_family", "sd"))
            sigmas = explicit_sigmas(schedule, num_inference_steps, self.alphas_cumprod, family)
            super().set_timesteps(device=device, sigmas=sigmas)
        else:
            super().set_timesteps(num_inference_steps, device, timesteps=timesteps, sigmas=sigmas)


def ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up) of an ancestral step (k-diffusion's ``get_ancestral_step``).

    sigma_up^2 = eta^2 sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2 (at most
    sigma_to), sigma_down^2 = sigma_to^2 - sigma_up^2: a deterministic step to sigma_down,
    then fresh noise of size sigma_up, lands on sigma_to.
    """
    if eta == 0.0 or sigma_to == 0.0:
        return sigma_to, 0.0
    up = min(sigma_to, eta * math.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2))
    return math.sqrt(sigma_to**2 - up**2), up


def dpmpp_2s_ancestral_step(
    x: torch.Tensor,
    sigma: float,
    sigma_next: float,
    denoise: Any,
    noise: torch.Tensor | None,
    eta: float = 1.0,
) -> torch.Tensor:
    """One DPM++ 2S a step from ``sigma`` to ``sigma_next`` (Lu et al. 2022, Algorithm 1).

    In t = -log(sigma), with h = t(sigma_down) - t(sigma) and s = t + h/2:
    x_2 = (sigma_s / sigma) x - expm1(-h/2) D(x, sigma);
    x' = (sigma_down / sigma) x - expm1(-h) D(x_2, sigma_s); then x' + sigma_up * noise.
    A step down to 0 is an Euler step.

    Args:
        x: the sample at ``sigma``.
        sigma: the current noise level.
        sigma_next: the next one.
        denoise: ``denoise(x, sigma) -> x0``, the model's denoised estimate.
        noise: standard normal noise shaped like ``x`` (unused when ``sigma_next`` is 0).
        eta: the ancestral noise scale (A1111's "Eta for ancestral samplers", 1 by default).
    """
    denoised = denoise(x, sigma)
    down, up = ancestral_step(sigma, sigma_next, eta)
    if down == 0.0:
        x = denoised + (x - denoised) * (down / sigma)
    else:
        h = math.log(sigma) - math.log(down)
        mid = math.exp(-(-math.log(sigma) + h / 2))
        x_2 = (mid / sigma) * x - math.expm1(-h / 2) * denoised
        x = (down / sigma) * x - math.expm1(-h) * denoise(x_2, mid)
    if sigma_next > 0 and noise is not None:
        x = x + noise * up
    return x


def k_sigmas(schedule: str, n: int, alphas_cumprod: Any, family: str = "sd") -> list[float]:
    """The ``n + 1`` sigmas of a schedule, as k-diffusion/A1111 build them.

    "karras": Karras et al. 2022 eq. 5 at rho 7 over the model's range; "exponential":
    evenly spaced in log sigma; "linspace" (A1111's Uniform): k-diffusion's ``get_sigmas``,
    t evenly spaced from the last training step to 0, log sigma interpolated between integer
    t; the explicit schedules of :mod:`sdkit.samplers.sigmas`.
    """
    table = model_sigmas(alphas_cumprod)
    lo, hi = float(table[0]), float(table[-1])
    if schedule in EXPLICIT_SCHEDULES:
        return explicit_sigmas(schedule, n, alphas_cumprod, family)
    if schedule == "karras":
        ramp = np.linspace(0.0, 1.0, n)
        inv = hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))
        return [float(s) for s in inv**7] + [0.0]
    if schedule == "exponential":
        return [float(s) for s in np.exp(np.linspace(math.log(hi), math.log(lo), n))] + [0.0]
    if schedule == "linspace":
        t = np.linspace(len(table) - 1, 0, n)
        logs = np.interp(t, np.arange(len(table)), np.log(table))
        return [float(s) for s in np.exp(logs)] + [0.0]
    raise KeyError(schedule)


class KDiffusionScheduler(SchedulerMixin, ConfigMixin):  # type: ignore[misc]
    """A k-diffusion sampler loop as a diffusers scheduler: the machinery its samplers share.

    ``set_timesteps`` builds k-diffusion's sigma list and the model calls (``timesteps``);
    ``scale_model_input`` and ``step`` work in k-diffusion's terms (x = x0 + sigma * eps, the
    sample starting at ``noise * sigma_max``); noise comes from the pipeline's generator(s).
    Subclasses say which calls a step makes (:meth:`_calls_for`) and what a call does
    (:meth:`_advance`).
    """

    order = 1
    _compatibles: ClassVar[list[str]] = []
    #: A1111's option: build the list for steps + 1 and drop its next-to-last level.
    discard_next_to_last_sigma = False

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        trained_betas: Any = None,
        prediction_type: str = "epsilon",
        sigma_schedule: str = "karras",
        model_family: str = "sd",
        eta: float = 1.0,
    ) -> None:
        if trained_betas is not None:
            betas = torch.tensor(trained_betas, dtype=torch.float32)
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        elif beta_schedule == "scaled_linear":
            betas = (
                torch.linspace(
                    beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32
                )
                ** 2
            )
        else:
            raise NotImplementedError(f"{beta_schedule} is not implemented for {type(self)}")
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # float32, as diffusers'
        self._log_sigmas = np.log(model_sigmas(self.alphas_cumprod.numpy()))
        self.set_timesteps(num_train_timesteps // 50 or 1)

    def _t(self, sigma: float) -> float:
        return float(np.interp(math.log(sigma), self._log_sigmas, np.arange(len(self._log_sigmas))))

    def set_timesteps(
        self, num_inference_steps: int, device: str | torch.device | None = None
    ) -> None:
        """Plan the model calls of ``num_inference_steps`` steps."""
        self.num_inference_steps = num_inference_steps
        discard = self.discard_next_to_last_sigma
        sigmas = k_sigmas(
            str(self.config.sigma_schedule),
            num_inference_steps + 1 if discard else num_inference_steps,
            self.alphas_cumprod.numpy(),
            str(self.config.model_family),
        )
        if discard:  # A1111: cat([sigmas[:-2], sigmas[-1:]])
            sigmas = [*sigmas[:-2], sigmas[-1]]
        self.sigmas = torch.tensor(sigmas, dtype=torch.float32)
        calls, plan = self._calls_for(sigmas)
        self.timesteps = torch.tensor([self._t(s) for s in calls], dtype=torch.float32).to(device)
        self._calls = [float(s) for s in calls]
        self._sigma_list = [float(s) for s in sigmas]
        self._plan = plan
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self._reset()

    def _reset(self) -> None:
        """Forget the state kept between calls (a new run)."""

    def _calls_for(self, sigmas: list[float]) -> tuple[list[float], list[int]]:
        """The sigma of each model call, and the step each call belongs to: one call a step."""
        return sigmas[:-1], list(range(len(sigmas) - 1))

    def _advance(
        self, index: int, sigma: float, x_in: torch.Tensor, denoised: torch.Tensor, generator: Any
    ) -> torch.Tensor:
        """The sample after model call ``index`` at ``sigma``, given its denoised estimate."""
        raise NotImplementedError

    @property
    def init_noise_sigma(self) -> float:
        """k-diffusion's start: the noise times the first sigma."""
        return float(self.sigmas[0])

    @property
    def step_index(self) -> int | None:
        """The index of the model call the next :meth:`step` finishes."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """The first call's index (img2img starts part way), set by the pipeline."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at call ``begin_index`` (the pipelines' img2img hook)."""
        self._begin_index = begin_index

    def _index_of(self, timestep: Any) -> int:
        hits = (self.timesteps.cpu() == torch.as_tensor(timestep).cpu()).nonzero()
        return int(hits[0]) if len(hits) else 0

    def _current(self, timestep: Any) -> int:
        if self._step_index is None:
            start = self._begin_index
            self._step_index = self._index_of(timestep) if start is None else start
        return self._step_index

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """The UNet's input at this call's sigma: x / sqrt(sigma^2 + 1)."""
        sigma = self._calls[self._current(timestep)]
        return sample / math.sqrt(sigma**2 + 1)

    def _denoised(self, out: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
        if self.config.prediction_type == "epsilon":
            return x - sigma * out
        if self.config.prediction_type == "v_prediction":
            return out * (-sigma / math.sqrt(sigma**2 + 1)) + x / (sigma**2 + 1)
        raise ValueError(f"prediction_type {self.config.prediction_type!r} is not supported")

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """Finish one model call: half a step (returns x_2) or a whole one."""
        index = self._current(timestep)
        sigma = self._calls[index]
        denoised = self._denoised(model_output.float(), sample.float(), sigma)
        x = self._advance(index, sigma, sample.float(), denoised, generator)
        self._step_index = index + 1
        out = x.to(sample.dtype)
        return SchedulerOutput(prev_sample=out) if return_dict else (out,)

    @staticmethod
    def _noised(x: torch.Tensor, up: float, generator: Any) -> torch.Tensor:
        if up == 0.0:
            return x
        noise: torch.Tensor = randn_tensor(
            x.shape, generator=generator, device=x.device, dtype=x.dtype
        )
        return x + noise * up

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """x0 + sigma * noise at the given calls' sigmas (img2img's start)."""
        if self._begin_index is not None:
            indices = [self._begin_index] * len(timesteps.reshape(-1))
        else:
            indices = [self._index_of(t) for t in timesteps.reshape(-1)]
        sigma = torch.tensor([self._calls[i] for i in indices], dtype=original_samples.dtype)
        sigma = sigma.to(original_samples.device).reshape(-1, *[1] * (original_samples.ndim - 1))
        noisy: torch.Tensor = original_samples + noise * sigma
        return noisy

    def __len__(self) -> int:
        return int(self.config.num_train_timesteps)


class DPMPP2SAncestralScheduler(KDiffusionScheduler):
    """A1111's "DPM++ 2S a" / ComfyUI's ``dpmpp_2s_ancestral``: :func:`dpmpp_2s_ancestral_step`.

    Each step but a final one to sigma 0 calls the model twice: at sigma_i, then at the
    midpoint sigma_s; ``timesteps`` lists every call, as HeunDiscreteScheduler's do. One noise
    draw a step.
    """

    order = 2

    def _reset(self) -> None:
        self._state: tuple[torch.Tensor, float, float, float] | None = None

    def _calls_for(self, sigmas: list[float]) -> tuple[list[float], list[int]]:
        calls: list[float] = []
        plan: list[int] = []  # the step each call belongs to
        for i in range(len(sigmas) - 1):
            calls.append(sigmas[i])
            plan.append(i)
            down, _ = ancestral_step(sigmas[i], sigmas[i + 1], float(self.config.eta))
            if down > 0:
                calls.append(math.sqrt(sigmas[i] * down))  # sigma_s: t + h/2 in t = -log sigma
                plan.append(i)
        return calls, plan

    def _advance(
        self, index: int, sigma: float, x_in: torch.Tensor, denoised: torch.Tensor, generator: Any
    ) -> torch.Tensor:
        if self._state is None:  # first call of a step, at sigma_i
            sigma_next = self._sigma_list[self._plan[index] + 1]
            down, up = ancestral_step(sigma, sigma_next, float(self.config.eta))
            if down == 0.0:  # the last step, to 0: Euler
                x = self._noised(denoised + (x_in - denoised) * (down / sigma), up, generator)
            else:
                mid = self._calls[index + 1]
                x = (mid / sigma) * x_in - math.expm1(-math.log(sigma / down) / 2) * denoised
                self._state = (x_in, sigma, down, up)
        else:  # second call, at the midpoint
            x0, sigma_i, down, up = self._state
            x = (down / sigma_i) * x0 - math.expm1(-math.log(sigma_i / down)) * denoised
            x = self._noised(x, up, generator)
            self._state = None
        return x


class DPMPP3MSDEScheduler(KDiffusionScheduler):
    """A1111's "DPM++ 3M SDE" / ComfyUI's ``dpmpp_3m_sde``: :func:`dpmpp_3m_sde_step`.

    One model call a step; the last two denoised estimates and step sizes carry over. As A1111
    (``discard_next_to_last_sigma``) the list is built for ``steps + 1`` and its next-to-last
    level dropped. k-diffusion draws the SDE noise from a Brownian tree; here each step's
    standard normal draw comes from the pipeline's generator (the same law, other numbers).
    """

    discard_next_to_last_sigma = True

    def _reset(self) -> None:
        self._history: list[tuple[torch.Tensor, float]] = []  # (denoised, h), newest first

    def _advance(
        self, index: int, sigma: float, x_in: torch.Tensor, denoised: torch.Tensor, generator: Any
    ) -> torch.Tensor:
        sigma_next = self._sigma_list[self._plan[index] + 1]
        noise = None
        if sigma_next > 0 and float(self.config.eta):
            noise = randn_tensor(
                x_in.shape, generator=generator, device=x_in.device, dtype=x_in.dtype
            )
        x = dpmpp_3m_sde_step(
            x_in, sigma, sigma_next, denoised, self._history, noise, float(self.config.eta)
        )
        if sigma_next > 0:
            self._history = [(denoised, math.log(sigma / sigma_next)), *self._history[:1]]
        return x


def dpmpp_3m_sde_step(
    x: torch.Tensor,
    sigma: float,
    sigma_next: float,
    denoised: torch.Tensor,
    history: list[tuple[torch.Tensor, float]],
    noise: torch.Tensor | None,
    eta: float = 1.0,
) -> torch.Tensor:
    """One DPM-Solver++(3M) SDE step (k-diffusion's ``sample_dpmpp_3m_sde``; Lu et al. 2022).

    With h = log(sigma / sigma_next) and h_eta = (1 + eta) h:
    x' = e^{-h_eta} x + (1 - e^{-h_eta}) D, plus phi_2 * d (one earlier estimate) or
    phi_2 * d1 - phi_3 * d2 (two), with phi_2 = expm1(-h_eta)/h_eta + 1 and
    phi_3 = phi_2/h_eta - 1/2 and d, d1, d2 the divided differences of the estimates over
    the step-size ratios r = h_k / h; then + sigma_next sqrt(1 - e^{-2 eta h}) * noise.
    A step to 0 returns D.

    Args:
        x: the sample at ``sigma``.
        sigma: the current level.
        sigma_next: the next level.
        denoised: the model's estimate D(x, sigma).
        history: the earlier estimates and their step sizes h, newest first (at most two used).
        noise: standard normal noise shaped like ``x`` (``None``: no noise).
        eta: the SDE's noise scale (1 in A1111 and ComfyUI).
    """
    if sigma_next == 0:
        return denoised
    h = math.log(sigma / sigma_next)
    h_eta = h * (eta + 1)
    x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
    phi_2 = math.expm1(-h_eta) / h_eta + 1
    if len(history) >= 2:
        (d_1, h_1), (d_2, h_2) = history[0], history[1]
        r0, r1 = h_1 / h, h_2 / h
        d1_0 = (denoised - d_1) / r0
        d1_1 = (d_1 - d_2) / r1
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
    elif history:
        d_1, h_1 = history[0]
        x = x + phi_2 * (denoised - d_1) / (h_1 / h)
    if noise is not None and eta:
        x = x + noise * sigma_next * math.sqrt(-math.expm1(-2 * h * eta))
    return x
