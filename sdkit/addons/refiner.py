"""The SDXL refiner: the base model denoises the first part, the refiner the rest, in latents.

This is the "ensemble of expert denoisers" hand-off of diffusers' SDXL docs
(https://huggingface.co/docs/diffusers/using-diffusers/sdxl#refine-image-quality): the base
pipeline runs with ``denoising_end=switch, output_type="latent"``, the refiner (an SDXL
img2img pipeline) continues from those latents with ``denoising_start=switch`` over the same
``num_inference_steps``. ``switch`` is A1111's "Refiner switch at" (default 0.8). The refiner
gets a fresh scheduler of the call's sampler, the call's prompts (encoded by its own text
encoder with A1111's weighting) and the same per-image generators, which carry on.

The refiner is recorded as ``AddonRecord("refiner", name, sha256, settings={"switch": ...})``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from .._option_values import check_float
from ..errors import InvalidOptionError, ModelLoadError
from ..models import load_pipeline, pipeline_family, resolve_source
from ..weights_hash import weights_sha256
from ._load import module_sha256
from ._record import AddonRecord

__all__ = ["DEFAULT_SWITCH", "Refiner", "check_switch", "load_refiner"]

#: A1111's "Refiner switch at" default.
DEFAULT_SWITCH = 0.8


@dataclass(frozen=True)
class Refiner:
    """A loaded refiner.

    Attributes:
        pipe: an SDXL img2img pipeline.
        name: the hub id, folder or file as given (``"custom"`` for a pipeline given as is).
        sha256: SHA-256 of its weights.
        source: the path or hub id as given.
    """

    pipe: Any
    name: str
    sha256: str
    source: str

    def record(self, switch: float) -> AddonRecord:
        """The Recipe's record of this refiner at ``switch``."""
        return AddonRecord("refiner", self.name, self.sha256, self.source, {"switch": switch})


def check_switch(value: Any) -> None:
    """``refiner_switch`` is a fraction of the steps strictly between 0 and 1.

    Raises:
        InvalidOptionError: otherwise.
    """
    check_float("refiner_switch", value, 0.0, 1.0)
    if not 0.0 < float(value) < 1.0:
        raise InvalidOptionError("refiner_switch", value, "a number between 0 and 1, exclusive")


def load_refiner(
    ref: Any,
    base: Any,
    *,
    device: torch.device,
    torch_dtype: torch.dtype,
    local_files_only: bool | None = None,
) -> Refiner:
    """Load ``ref`` (hub id, folder, single file, or a loaded pipeline) as ``base``'s refiner.

    Raises:
        InvalidOptionError: the base model is not SDXL.
        ModelLoadError: the refiner is not an SDXL pipeline (or cannot be loaded).
        ModelNotFoundError: no such path, or a hub id not cached while offline.
    """
    from diffusers import AutoPipelineForImage2Image, StableDiffusionXLImg2ImgPipeline

    if pipeline_family(base) != "sdxl":
        raise InvalidOptionError(
            "refiner",
            str(ref)[:200],
            "a refiner only with an SDXL base model",
            hint="the SDXL refiner hands off SDXL latents; use an SDXL model, or no refiner.",
        )
    if isinstance(ref, (str, os.PathLike)):
        source = resolve_source(ref)
        pipe, files = load_pipeline(
            source, torch_dtype=torch_dtype, local_files_only=local_files_only
        )
        name, text = source.name, os.fspath(ref)
        digest = weights_sha256(files) if files else _pipe_sha256(pipe)
    elif hasattr(ref, "unet") and hasattr(ref, "scheduler"):
        pipe, name, text, digest = ref, "custom", "", _pipe_sha256(ref)
    else:
        raise ModelLoadError(
            f"refiner: {type(ref).__name__} is not a path, a hub id or a diffusers pipeline",
            source=str(ref)[:200],
        )
    if pipeline_family(pipe) != "sdxl":
        raise ModelLoadError(
            f"refiner: {name!r} is an SD 1.x/2.x pipeline ({type(pipe).__name__}), not SDXL",
            source=text or name,
            hint="pass an SDXL refiner (e.g. stabilityai/stable-diffusion-xl-refiner-1.0).",
        )
    if not isinstance(pipe, StableDiffusionXLImg2ImgPipeline):
        pipe = AutoPipelineForImage2Image.from_pipe(pipe)
    pipe.to(device)
    return Refiner(pipe, name, digest, text)


def _pipe_sha256(pipe: Any) -> str:
    names = ("unet", "vae", "text_encoder", "text_encoder_2")
    parts = [module_sha256(m) for m in (getattr(pipe, n, None) for n in names) if m is not None]
    return hashlib.sha256("".join(f"{p}\n" for p in parts).encode()).hexdigest()
