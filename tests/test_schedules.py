"""Explicit sigma schedules (sdkit/samplers/sigmas.py) against their sources' rules and numbers.

References, written out here rather than imported:
- KL Optimal: comfyanonymous/ComfyUI ``comfy/samplers.py`` ``kl_optimal_scheduler`` (from
  AUTOMATIC1111/stable-diffusion-webui PR 15608; Sabour et al. 2024, arXiv:2404.14507):
  sigma_i = tan(i/(n-1) atan(sigma_min) + (1 - i/(n-1)) atan(sigma_max)), then 0.
- Align Your Steps: AUTOMATIC1111/stable-diffusion-webui ``modules/sd_schedulers.py`` (commit
  02b0092d5a8450b282bd7d9c2d84fdfed0f3c6db) ``get_align_your_steps_sigmas``: NVIDIA's
  11-entry tables, used as they are at n = 11, else resampled log-linearly to n levels; then 0.
- linear_quadratic: ComfyUI ``comfy/samplers.py`` ``linear_quadratic_schedule`` (Genmo's Mochi),
  worked by hand below for n = 3 and 4 with threshold_noise 0.025.
- Karras / exponential / uniform: crowsonkb/k-diffusion ``k_diffusion/sampling.py``
  (``get_sigmas_karras``, ``get_sigmas_exponential``, ``CompVisDenoiser.get_sigmas``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import SD15_SCHEDULER

from sdkit.errors import InvalidOptionError
from sdkit.samplers import a1111_names, make_scheduler, read_a1111_names, resolve_sampler
from sdkit.samplers.k_samplers import k_sigmas
from sdkit.samplers.sigmas import (
    AYS_SIGMAS,
    align_your_steps,
    kl_optimal,
    linear_quadratic,
    model_sigmas,
)

# The ends of SD 1.x/2.x/XL's noise table (scaled_linear betas 0.00085..0.012), as k-diffusion
# and A1111 show them: sigma_min 0.0292, sigma_max 14.6146.
SIGMA_MIN, SIGMA_MAX = 0.0292, 14.6146


def _acp() -> np.ndarray:
    """SD's cumulative alphas in float32, as diffusers and CompVis hold them."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0).numpy()


def test_model_sigma_range_is_sd_s() -> None:
    sigmas = model_sigmas(_acp())
    assert sigmas[0] == pytest.approx(SIGMA_MIN, abs=5e-5)
    assert sigmas[-1] == pytest.approx(SIGMA_MAX, abs=5e-5)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_kl_optimal_is_comfyuis_arctan_spacing(n: int) -> None:
    idx = torch.arange(n, dtype=torch.float64) / (n - 1)
    expected = torch.zeros(n + 1, dtype=torch.float64)
    expected[:-1] = torch.tan(idx * math.atan(SIGMA_MIN) + (1 - idx) * math.atan(SIGMA_MAX))
    got = kl_optimal(n, SIGMA_MIN, SIGMA_MAX)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12)
    assert got[0] == pytest.approx(SIGMA_MAX) and got[-2] == pytest.approx(SIGMA_MIN)


def test_kl_optimal_recorded_values() -> None:
    # n = 4 on SD's table: tan of atan(14.6146)..atan(0.0292) in thirds.
    np.testing.assert_allclose(
        kl_optimal(4, SIGMA_MIN, SIGMA_MAX), [14.6146, 1.5971, 0.5729, 0.0292, 0.0], atol=1e-4
    )
    assert kl_optimal(1, SIGMA_MIN, SIGMA_MAX) == [SIGMA_MAX, 0.0]


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_align_your_steps_uses_nvidias_table_at_its_length(family: str) -> None:
    table = {
        "sd1": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
        "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
    }[family]
    assert list(AYS_SIGMAS[family]) == table
    assert align_your_steps(11, family) == [*table, 0.0]


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_align_your_steps_resamples_log_linearly(family: str) -> None:
    table = AYS_SIGMAS[family]
    # 21 levels: the even grid of 21 holds the grid of 11, so every other level is the table's
    # and the ones between are geometric means of their neighbours (linear in log sigma).
    got = align_your_steps(21, family)
    assert len(got) == 22 and got[-1] == 0.0
    np.testing.assert_allclose(got[0:21:2], table, rtol=1e-12)
    for i in range(1, 21, 2):
        assert got[i] == pytest.approx(math.sqrt(got[i - 1] * got[i + 1]), rel=1e-12)
    # A1111 resamples to n levels whenever n != 11, the published 10-step schedule included.
    ten = align_your_steps(10, family)
    assert len(ten) == 11 and ten[0] == pytest.approx(14.615) and ten[-2] == pytest.approx(0.029)
    assert ten[:-1] != list(table[:-1])


def test_linear_quadratic_worked_by_hand() -> None:
    np.testing.assert_allclose(
        linear_quadratic(4, 10.0), [10.0, 9.875, 9.75, 7.25, 0.0], rtol=1e-12
    )
    np.testing.assert_allclose(linear_quadratic(3, 2.0), [2.0, 1.95, 1.4375, 0.0], rtol=1e-12)
    assert linear_quadratic(1, 3.0) == [3.0, 0.0]


@pytest.mark.parametrize("n", [1, 4, 9])
def test_k_diffusion_sigma_lists(n: int) -> None:
    lo, hi = (float(s) for s in model_sigmas(_acp())[[0, -1]])
    ramp = np.linspace(0, 1, n)
    rho = 7.0
    karras = hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))
    np.testing.assert_allclose(k_sigmas("karras", n, _acp()), [*karras**rho, 0.0], rtol=1e-9)
    expo = np.exp(np.linspace(math.log(hi), math.log(lo), n))
    np.testing.assert_allclose(k_sigmas("exponential", n, _acp()), [*expo, 0.0], rtol=1e-9)
    # k-diffusion's DiscreteSchedule.get_sigmas: t from 999 to 0, log sigma lerped at floor/ceil
    log_sigmas = np.log(model_sigmas(_acp()))
    uniform = []
    for t in np.linspace(999, 0, n):
        low = math.floor(t)
        high = min(low + 1, 999)
        w = t - low
        uniform.append(math.exp((1 - w) * log_sigmas[low] + w * log_sigmas[high]))
    np.testing.assert_allclose(k_sigmas("linspace", n, _acp()), [*uniform, 0.0], rtol=1e-9)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("kl_optimal", lambda n: kl_optimal(n, *model_sigmas(_acp())[[0, -1]])),
        ("align_your_steps", lambda n: align_your_steps(n, "sd1")),
        ("linear_quadratic", lambda n: linear_quadratic(n, model_sigmas(_acp())[-1])),
    ],
)
@pytest.mark.parametrize("n", [2, 5, 11])
def test_euler_runs_the_explicit_sigmas(schedule: str, expected: object, n: int) -> None:
    scheduler = make_scheduler("Euler", dict(SD15_SCHEDULER), schedule)
    assert type(scheduler).__name__ == "ExplicitSigmasEulerScheduler"
    assert scheduler.config.sigma_schedule == schedule
    scheduler.set_timesteps(n)
    want = expected(n)  # type: ignore[operator]
    np.testing.assert_allclose(scheduler.sigmas.numpy(), want, rtol=2e-6, atol=1e-6)
    assert len(scheduler.timesteps) == n and (np.diff(scheduler.timesteps.numpy()) <= 0).all()


def test_align_your_steps_follows_the_model_family() -> None:
    xl = make_scheduler("Euler", dict(SD15_SCHEDULER), "Align Your Steps", family="sdxl")
    xl.set_timesteps(11)
    np.testing.assert_allclose(xl.sigmas.numpy()[:-1], AYS_SIGMAS["sdxl"], rtol=1e-6)
    # A1111: SDXL's table for SDXL, SD 1.5's for every other model
    sd = make_scheduler("Euler", dict(SD15_SCHEDULER), "align_your_steps", family="sd")
    sd.set_timesteps(11)
    np.testing.assert_allclose(sd.sigmas.numpy()[:-1], AYS_SIGMAS["sd1"], rtol=1e-6)


@pytest.mark.parametrize("spelling", ["KL Optimal", "kl_optimal", "Align Your Steps"])
def test_a1111_and_comfyui_spellings(spelling: str) -> None:
    resolved = resolve_sampler("Euler", spelling)
    label = a1111_names("Euler", resolved.schedule, "ExplicitSigmasEulerScheduler", {})[1]
    assert read_a1111_names("Euler", label) == ("Euler", resolved.schedule)


@pytest.mark.parametrize("name", ["DPM++ 2M", "Euler a", "DDIM", "Heun"])
def test_samplers_without_explicit_sigmas_refuse_them_naming_who_takes_them(name: str) -> None:
    with pytest.raises(InvalidOptionError) as caught:
        resolve_sampler(name, "kl_optimal")
    assert "Euler, DPM++ 2S a, DPM++ 3M SDE" in str(caught.value)


@pytest.mark.parametrize("name", ["DPM2", "DPM2 a"])
@pytest.mark.parametrize("schedule", ["karras", "exponential"])
@pytest.mark.parametrize("n", [2, 4, 10])
def test_dpm2_discards_the_next_to_last_sigma_as_a1111(name: str, schedule: str, n: int) -> None:
    # A1111 sd_samplers_kdiffusion.py, KDiffusionSampler.get_sigmas with
    # 'discard_next_to_last_sigma': steps + 1 levels, then cat([sigmas[:-2], sigmas[-1:]]).
    full = k_sigmas(schedule, n + 1, _acp())
    a1111 = [*full[:-2], full[-1]]
    scheduler = make_scheduler(name, dict(SD15_SCHEDULER), schedule)
    scheduler.set_timesteps(n)
    # diffusers' DPM2 lists sigma_0, then each later level twice (its two model calls)
    levels = scheduler.sigmas.numpy()[[0, *range(1, 2 * n + 1, 2)]]
    np.testing.assert_allclose(levels, a1111, rtol=2e-6, atol=1e-7)
    assert len(scheduler.timesteps) == 2 * n - 1


def test_dpm2_keeps_diffusers_spacing_without_a_sigma_schedule() -> None:
    scheduler = make_scheduler("DPM2", dict(SD15_SCHEDULER), "linspace")
    assert type(scheduler).__name__ == "KDPM2DiscreteScheduler"
