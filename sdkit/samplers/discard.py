"""DPM2 and DPM2 a as A1111 runs them: the next-to-last sigma discarded.

A1111 marks both samplers ``discard_next_to_last_sigma`` (``samplers_k_diffusion`` in
``modules/sd_samplers_kdiffusion.py``): it builds the schedule for ``steps + 1`` and drops the
next-to-last level, ``sigmas = cat([sigmas[:-2], sigmas[-1:]])``, so the last step goes from
a moderate sigma straight to 0 instead of through the smallest one. These subclasses of
diffusers' KDPM2 schedulers do the same for the sigma schedules (Karras, exponential, beta)
through the hook each of them calls, so everything downstream (interpolated midpoints,
timesteps, ancestral noise) is diffusers' own.
"""

from __future__ import annotations

from typing import Any

from diffusers import KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler

__all__ = ["DISCARDING", "DiscardingKDPM2AncestralScheduler", "DiscardingKDPM2Scheduler"]


class _DiscardNextToLast:
    """The three sigma-schedule hooks of diffusers' KDPM2 schedulers, each built for
    ``steps + 1`` and cut to its first ``steps`` levels (the 0 is appended later): A1111's
    ``cat([sigmas[:-2], sigmas[-1:]])``. Mixed in before the diffusers class."""

    def _convert_to_karras(self, in_sigmas: Any, num_inference_steps: int) -> Any:
        full = super()._convert_to_karras(in_sigmas, num_inference_steps + 1)  # type: ignore[misc]
        return full[:num_inference_steps]

    def _convert_to_exponential(self, in_sigmas: Any, num_inference_steps: int) -> Any:
        full = super()._convert_to_exponential(in_sigmas, num_inference_steps + 1)  # type: ignore[misc]
        return full[:num_inference_steps]

    def _convert_to_beta(
        self, in_sigmas: Any, num_inference_steps: int, *args: Any, **kwargs: Any
    ) -> Any:
        full = super()._convert_to_beta(in_sigmas, num_inference_steps + 1, *args, **kwargs)  # type: ignore[misc]
        return full[:num_inference_steps]


class DiscardingKDPM2Scheduler(_DiscardNextToLast, KDPM2DiscreteScheduler):  # type: ignore[misc]
    """diffusers' DPM2 whose sigma schedules drop the next-to-last level, as A1111's."""


class DiscardingKDPM2AncestralScheduler(_DiscardNextToLast, KDPM2AncestralDiscreteScheduler):  # type: ignore[misc]
    """diffusers' DPM2 a whose sigma schedules drop the next-to-last level, as A1111's."""


#: diffusers' class -> the discarding one that runs in its place under a sigma schedule.
DISCARDING: dict[type, type] = {
    KDPM2DiscreteScheduler: DiscardingKDPM2Scheduler,
    KDPM2AncestralDiscreteScheduler: DiscardingKDPM2AncestralScheduler,
}
