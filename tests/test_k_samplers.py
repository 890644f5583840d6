"""sdkit's own k-diffusion-style samplers against their update rules, written out here.

DPM++ 3M SDE: k-diffusion's ``sample_dpmpp_3m_sde`` (eta 1, s_noise 1), with A1111's
``discard_next_to_last_sigma`` for it (``modules/sd_samplers_kdiffusion.py``).

DPM++ 2S a: crowsonkb/k-diffusion ``k_diffusion/sampling.py`` ``sample_dpmpp_2s_ancestral``
(Lu et al. 2022, "DPM-Solver++", arXiv:2211.01095, DPM-Solver++(2S) at r = 1/2, with
k-diffusion's ``get_ancestral_step`` noise). The reference below works in t = -log(sigma), as
k-diffusion does; the scheduler works in sigma ratios. The denoiser is exact for Gaussian data
N(mu, s^2): D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from tiny_models import SD15_SCHEDULER

from sdkit.samplers import make_scheduler
from sdkit.samplers.k_samplers import (
    DPMPP2SAncestralScheduler,
    dpmpp_2s_ancestral_step,
    k_sigmas,
)

MU, S = 0.3, 0.7


def _denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return (S**2 * x + sigma**2 * MU) / (S**2 + sigma**2)


def _reference(sigmas: list[float], x: torch.Tensor, noises: list[torch.Tensor]) -> torch.Tensor:
    """k-diffusion's sample_dpmpp_2s_ancestral at eta = 1, s_noise = 1, written out."""
    noises = list(noises)
    for i in range(len(sigmas) - 1):
        denoised = _denoise(x, sigmas[i])
        up = min(
            sigmas[i + 1],
            math.sqrt(sigmas[i + 1] ** 2 * (sigmas[i] ** 2 - sigmas[i + 1] ** 2) / sigmas[i] ** 2),
        )
        down = math.sqrt(sigmas[i + 1] ** 2 - up**2)
        if down == 0:
            d = (x - denoised) / sigmas[i]
            x = x + d * (down - sigmas[i])
        else:
            t, t_next = -math.log(sigmas[i]), -math.log(down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (math.exp(-s) / math.exp(-t)) * x - math.expm1(-h * 0.5) * denoised
            denoised_2 = _denoise(x_2, math.exp(-s))
            x = (math.exp(-t_next) / math.exp(-t)) * x - math.expm1(-h) * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noises.pop(0) * up
    return x


def _drive(scheduler: Any, n: int, seed: int, prediction: str = "epsilon") -> torch.Tensor:
    """Run the scheduler as a diffusers pipeline does, with a model that knows the data."""
    scheduler.set_timesteps(n)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((1, 4, 3, 3), generator=generator) * scheduler.init_noise_sigma
    sigmas = scheduler._calls
    for k, t in enumerate(scheduler.timesteps):
        inp = scheduler.scale_model_input(x, t)
        sigma = sigmas[k]
        x_k = inp * math.sqrt(sigma**2 + 1)
        d = _denoise(x_k, sigma)
        eps = (x_k - d) / sigma
        if prediction == "v_prediction":  # v = alpha eps - sigma_t x0 in the VP scale
            a = 1 / math.sqrt(sigma**2 + 1)
            out = a * eps - sigma * a * d
        else:
            out = eps
        x = scheduler.step(out, t, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize("schedule", ["karras", "exponential", "linspace", "kl_optimal"])
@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_dpmpp_2s_ancestral_matches_k_diffusions_rule(
    schedule: str, n: int, prediction: str
) -> None:
    config = {**SD15_SCHEDULER, "prediction_type": prediction}
    scheduler = make_scheduler("DPM++ 2S a", config, schedule)
    got = _drive(scheduler, n, seed=3, prediction=prediction)
    # the same draws: the start noise, then one draw a step for each step that adds noise
    generator = torch.Generator().manual_seed(3)
    start = torch.randn((1, 4, 3, 3), generator=generator)
    sigmas = [float(s) for s in scheduler.sigmas]
    noises = [torch.randn((1, 4, 3, 3), generator=generator) for _ in range(n - 1)]
    want = _reference(sigmas, start * sigmas[0], noises)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert len(scheduler.timesteps) == 2 * n - 1  # two calls a step, one for the last


def test_step_function_matches_the_reference() -> None:
    x = torch.linspace(-2, 2, 9).reshape(1, 1, 3, 3) * 10
    noise = torch.ones_like(x) * 0.5
    got = dpmpp_2s_ancestral_step(x, 10.0, 2.0, _denoise, noise)
    torch.testing.assert_close(got, _reference([10.0, 2.0], x, [noise]), rtol=1e-6, atol=1e-6)
    last = dpmpp_2s_ancestral_step(x, 2.0, 0.0, _denoise, None)
    torch.testing.assert_close(last, _denoise(x, 2.0))  # the Euler step to 0 lands on D


def test_seeds_reproduce_and_differ() -> None:
    one = make_scheduler("DPM++ 2S a", dict(SD15_SCHEDULER))
    two = make_scheduler("DPM++ 2S a", dict(SD15_SCHEDULER))
    torch.testing.assert_close(_drive(one, 4, 1), _drive(two, 4, 1))
    assert not torch.allclose(_drive(one, 4, 1), _drive(two, 4, 2))


def test_add_noise_and_begin_index() -> None:
    scheduler = make_scheduler("DPM++ 2S a", dict(SD15_SCHEDULER))
    assert isinstance(scheduler, DPMPP2SAncestralScheduler)
    scheduler.set_timesteps(3)
    scheduler.set_begin_index(2)  # img2img: the second step's first call
    x0, noise = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    noisy = scheduler.add_noise(x0, noise, scheduler.timesteps[2:3])
    torch.testing.assert_close(noisy, noise * float(scheduler.sigmas[1]))


def _pipe(path: Path, cls: Any) -> Any:
    pipe = cls.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_runs_in_the_sd_pipelines(tiny_sd_path: Path) -> None:
    pipe = _pipe(tiny_sd_path, StableDiffusionPipeline)
    base = dict(pipe.scheduler.config)
    images = []
    for _ in range(2):
        pipe.scheduler = make_scheduler("dpmpp_2s_ancestral", base, "karras")
        out = pipe("a red cube", num_inference_steps=3, height=64, width=64,
                   generator=torch.Generator("cpu").manual_seed(0), output_type="np")  # fmt: skip
        images.append(out.images)
    assert np.isfinite(images[0]).all()
    np.testing.assert_array_equal(images[0], images[1])
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.scheduler = make_scheduler("DPM++ 2S a", base, "Align Your Steps")
    out = img2img("a red cube", image=images[0], strength=0.5, num_inference_steps=4,
                  generator=torch.Generator("cpu").manual_seed(0), output_type="np")  # fmt: skip
    assert out.images.shape == (1, 64, 64, 3) and np.isfinite(out.images).all()


def _reference_3m(sigmas: list[float], x: torch.Tensor, noises: list[torch.Tensor]) -> torch.Tensor:
    """k-diffusion's sample_dpmpp_3m_sde at eta = 1, s_noise = 1, written out in t = -log sigma."""
    noises = list(noises)
    eta = 1.0
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = _denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
            h = s - t
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x + (-math.expm1(-h_eta)) * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h  # type: ignore[operator]
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                r = h_1 / h
                d = (denoised - denoised_1) / r
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                x = x + phi_2 * d
            x = x + noises.pop(0) * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * h * eta))
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@pytest.mark.parametrize("schedule", ["exponential", "karras", "linspace", "align_your_steps"])
@pytest.mark.parametrize("n", [1, 2, 3, 6])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_dpmpp_3m_sde_matches_k_diffusions_rule(schedule: str, n: int, prediction: str) -> None:
    config = {**SD15_SCHEDULER, "prediction_type": prediction}
    scheduler = make_scheduler("DPM++ 3M SDE", config, schedule)
    got = _drive(scheduler, n, seed=5, prediction=prediction)
    sigmas = [float(s) for s in scheduler.sigmas]
    # A1111's discard_next_to_last_sigma: the list for n + 1 steps without its next-to-last
    full = k_sigmas(schedule, n + 1, scheduler.alphas_cumprod.numpy())
    np.testing.assert_allclose(sigmas, [*full[:-2], full[-1]], rtol=1e-6)
    generator = torch.Generator().manual_seed(5)
    start = torch.randn((1, 4, 3, 3), generator=generator)
    noises = [torch.randn((1, 4, 3, 3), generator=generator) for _ in range(n - 1)]
    want = _reference_3m(sigmas, start * sigmas[0], noises)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert len(scheduler.timesteps) == n


def test_dpmpp_3m_sde_runs_in_the_sd_pipeline(tiny_sd_path: Path) -> None:
    pipe = _pipe(tiny_sd_path, StableDiffusionPipeline)
    pipe.scheduler = make_scheduler("dpmpp_3m_sde_gpu", dict(pipe.scheduler.config))
    out = pipe("a red cube", num_inference_steps=4, height=64, width=64,
               generator=torch.Generator("cpu").manual_seed(0), output_type="np")  # fmt: skip
    assert out.images.shape == (1, 64, 64, 3) and np.isfinite(out.images).all()
