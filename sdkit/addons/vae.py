"""VAE: swap the model's autoencoder for another one (A1111's "SD VAE" setting).

``Generator(..., vae=...)`` takes a single ``.safetensors`` file (an A1111-style VAE
checkpoint, read with diffusers' ``AutoencoderKL.from_single_file`` against the model's own VAE
config, so nothing is fetched), a diffusers folder (``config.json`` + weights) or a hub id
(``madebyollin/sdxl-vae-fp16-fix``; from the local cache when offline). A VAE whose latent
channels are not the UNet's is refused before any work. The VAE is recorded as
``AddonRecord("vae", name, sha256)`` (A1111's ``VAE hash`` is its first 10 hex digits).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ModelLoadError
from ._load import load_component
from ._record import AddonRecord

__all__ = ["load_vae", "swap_vae"]


def load_vae(
    ref: Any,
    pipe: Any,
    *,
    torch_dtype: torch.dtype,
    local_files_only: bool | None = None,
) -> tuple[Any, AddonRecord]:
    """Load ``ref`` as an ``AutoencoderKL`` that fits ``pipe``'s UNet.

    Returns:
        The VAE (not yet set on ``pipe``) and its record.

    Raises:
        ModelNotFoundError: no such path, or a hub id not cached while offline.
        ModelLoadError: not a VAE diffusers can read, or its latent channels do not fit.
    """
    from diffusers import AutoencoderKL

    loaded = load_component(
        AutoencoderKL,
        ref,
        what="vae",
        torch_dtype=torch_dtype,
        local_files_only=local_files_only,
        single_file_config=dict(pipe.vae.config),
    )
    vae = loaded.module
    channels = int(pipe.unet.config.in_channels)
    expected = 4 if channels == 9 else channels  # an inpainting UNet takes latents + mask + image
    got = int(getattr(vae.config, "latent_channels", -1))
    if got != expected:
        raise ModelLoadError(
            f"vae: {loaded.name!r} makes {got}-channel latents; this model's UNet takes {expected}",
            source=loaded.source or loaded.name,
            hint="use a VAE of the model's family (SD 1.x/2.x and SDXL VAEs have 4 channels; "
            "SD3 and Flux VAEs 16).",
        )
    return vae, AddonRecord("vae", loaded.name, loaded.sha256, loaded.source, {})


def swap_vae(
    pipe: Any, ref: Any, *, torch_dtype: torch.dtype, local_files_only: bool | None = None
) -> list[AddonRecord]:
    """Set ``ref`` as ``pipe``'s VAE; its record in a list (empty when ``ref`` is ``None``)."""
    if ref is None:
        return []
    vae, record = load_vae(ref, pipe, torch_dtype=torch_dtype, local_files_only=local_files_only)
    pipe.vae = vae
    return [record]
