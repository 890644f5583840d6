"""Sigma schedules that diffusers' config flags cannot express, as pure functions.

Each function returns ``n + 1`` descending noise levels, the last one 0: the schedule of an
``n``-step k-diffusion-style sampler. :func:`explicit_sigmas` computes the one a schedule name
selects for a model's noise table; schedulers that take ``sigmas=`` in ``set_timesteps``
(diffusers' Euler, sdkit's own DPM++ 2S a and 3M SDE) run them.

Sources, one per function: AUTOMATIC1111/stable-diffusion-webui ``modules/sd_schedulers.py``
(commit 02b0092d5a8450b282bd7d9c2d84fdfed0f3c6db) and comfyanonymous/ComfyUI
``comfy/samplers.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "AYS_SIGMAS",
    "EXPLICIT_SCHEDULES",
    "align_your_steps",
    "explicit_sigmas",
    "kl_optimal",
    "linear_quadratic",
    "model_sigmas",
]

#: NVIDIA's 10-step Align Your Steps noise levels (Sabour et al. 2024, arXiv:2404.14507;
#: research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html), as A1111 ships them.
AYS_SIGMAS: dict[str, tuple[float, ...]] = {
    "sd1": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
}


def model_sigmas(alphas_cumprod: Sequence[float] | np.ndarray) -> np.ndarray:
    """The model's noise levels sigma(t) = sqrt((1 - a_t) / a_t), ascending in t.

    Computed in float32, as diffusers and k-diffusion compute them, then widened.
    """
    acp = np.asarray(alphas_cumprod, dtype=np.float32)
    sigmas: np.ndarray = np.sqrt((1.0 - acp) / acp).astype(np.float64)
    return sigmas


def kl_optimal(n: int, sigma_min: float, sigma_max: float) -> list[float]:
    """The KL-optimal schedule: ``n`` levels evenly spaced in arctan(sigma), then 0.

    sigma_i = tan((1 - i/(n-1)) atan(sigma_max) + i/(n-1) atan(sigma_min)), from Sabour et al.
    2024, "Align Your Steps" (arXiv:2404.14507), as ComfyUI's ``kl_optimal_scheduler`` spaces
    it. A1111's ``kl_optimal`` spaces n + 1 levels the same way and ends at sigma_min, not 0.
    """
    if n == 1:
        return [float(sigma_max), 0.0]
    lo, hi = math.atan(sigma_min), math.atan(sigma_max)
    return [math.tan((1 - i / (n - 1)) * hi + i / (n - 1) * lo) for i in range(n)] + [0.0]


def align_your_steps(n: int, family: str) -> list[float]:
    """NVIDIA's Align Your Steps levels for ``family``, then 0: SDXL's table for "sdxl", SD
    1.5's for any other family (A1111 defaults to it likewise).

    As A1111's ``get_align_your_steps_sigmas``: with ``n`` other than the table's length (11)
    the table is resampled to ``n`` levels by linear interpolation of log sigma over an even
    grid (NVIDIA's howto), keeping its first and last level.
    """
    table = AYS_SIGMAS["sdxl" if family == "sdxl" else "sd1"]
    if n == len(table):
        return [*table, 0.0]
    grid = np.linspace(0.0, 1.0, len(table))
    logs = np.interp(np.linspace(0.0, 1.0, n), grid, np.log(table[::-1]))
    return [float(s) for s in np.exp(logs)[::-1]] + [0.0]


def linear_quadratic(
    n: int, sigma_max: float, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> list[float]:
    """ComfyUI's ``linear_quadratic`` (from Genmo's Mochi): linear, then quadratic, to 0.

    On a 0..1 scale the noise falls linearly from 1 to ``1 - threshold_noise`` over the first
    ``linear_steps`` (default n // 2) steps, then along the quadratic that meets it there
    with the same slope and reaches 0 at step n; the result is scaled by ``sigma_max``.
    """
    if n == 1:
        return [float(sigma_max), 0.0]
    k = n // 2 if linear_steps is None else linear_steps
    gap = k - threshold_noise * n
    quad = gap / (k * (n - k) ** 2)
    lin = threshold_noise / k - 2 * gap / (n - k) ** 2
    done = [i * threshold_noise / k for i in range(k)]
    done += [quad * i * i + lin * i + quad * k * k for i in range(k, n)]
    return [sigma_max * (1.0 - x) for x in [*done, 1.0]]


#: The schedules :func:`explicit_sigmas` builds.
EXPLICIT_SCHEDULES = ("kl_optimal", "align_your_steps", "linear_quadratic")


def explicit_sigmas(
    schedule: str, n: int, alphas_cumprod: Sequence[float] | np.ndarray, family: str
) -> list[float]:
    """The ``n + 1`` levels of an explicit schedule for a model's noise table.

    Args:
        schedule: one of :data:`EXPLICIT_SCHEDULES`.
        n: the step count.
        alphas_cumprod: the model's cumulative alphas (its scheduler's ``alphas_cumprod``).
        family: the model family ("sd", "sdxl"): Align Your Steps' table follows it.

    Raises:
        KeyError: for another schedule.
    """
    sigmas = model_sigmas(alphas_cumprod)
    lo, hi = float(sigmas[0]), float(sigmas[-1])
    if schedule == "kl_optimal":
        return kl_optimal(n, lo, hi)
    if schedule == "align_your_steps":
        return align_your_steps(n, family)
    if schedule == "linear_quadratic":
        return linear_quadratic(n, hi)
    raise KeyError(schedule)
