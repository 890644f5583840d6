"""The Recipes of one call: the checked options plus what no option says.

A Recipe records, beyond the options, the model (its SHA-256: of the weight files, or of the
tensors in memory for a pipeline given as is), the scheduler that ran with its full config,
the init image's and mask's pixel hashes and the library versions. One Recipe per image: the
seeds differ, and so does DPM++ SDE's ``noise_sampler_seed``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import torch
from PIL import Image

from .addons._record import AddonRecord
from .options import Plan
from .recipe import Recipe

__all__ = ["library_versions", "recipes_for", "state_sha256"]


def recipes_for(
    pipe: Any,
    plan: Plan,
    prompt: str,
    negative_prompt: str,
    *,
    model: str,
    model_sha256: str,
    dtype: torch.dtype,
    versions: dict[str, str],
    addons: Sequence[AddonRecord] = (),
) -> list[Recipe]:
    """One Recipe per image of ``plan``, as ``pipe`` (with its scheduler) ran it."""
    scheduler = pipe.scheduler
    fields = dict(
        prompt=prompt,
        negative_prompt=negative_prompt,
        model=model,
        model_sha256=model_sha256,
        pipeline=type(pipe).__name__,
        mode=plan.mode,
        sampler=plan.sampler.spec.name if plan.sampler else None,
        schedule=plan.sampler.schedule if plan.sampler else "default",
        scheduler=type(scheduler).__name__,
        scheduler_config=dict(scheduler.config),
        steps=plan.steps,
        guidance_scale=plan.guidance_scale,
        guidance_rescale=plan.guidance_rescale,
        clip_skip=plan.clip_skip,
        width=plan.width,
        height=plan.height,
        strength=plan.strength,
        init_image_sha256=_pixels_sha256(plan.init_image),
        mask_sha256=_pixels_sha256(plan.mask),
        feature_cache=plan.feature_cache,
        dtype=str(dtype).removeprefix("torch."),
        versions=versions,
        addons=tuple(addons),
    )
    return [_recipe_for(fields, seed) for seed in plan.seeds]


def _recipe_for(fields: dict[str, Any], seed: int) -> Recipe:
    config = fields["scheduler_config"]
    if "noise_sampler_seed" in config:
        # each image's Brownian-tree noise comes from its own seed
        config = {**config, "noise_sampler_seed": seed}
    return Recipe(**{**fields, "scheduler_config": config, "seed": seed})


def _pixels_sha256(image: Image.Image | None) -> str | None:
    if image is None:
        return None
    return hashlib.sha256(image.tobytes()).hexdigest()


def state_sha256(pipe: Any) -> str:
    """SHA-256 of a pipeline's weights as they are in memory (UNet, VAE, text encoders)."""
    digest = hashlib.sha256()
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}.{key}".encode())
            digest.update(
                tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            )
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """The versions of sdkit and the libraries that shape its pixels."""
    out = {}
    for dist in ("sdkit", "diffusers", "transformers", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out
