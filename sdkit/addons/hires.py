"""Hires fix as AUTOMATIC1111 does it: generate at the base size, upscale, then img2img.

The steps and their sources (AUTOMATIC1111/stable-diffusion-webui, ``modules/processing.py``,
``StableDiffusionProcessingTxt2Img.init`` / ``sample`` / ``sample_hr_pass``, commit 0027ce1):

1. Target size ``int(width * scale) x int(height * scale)``; the latents are that // 8, so the
   picture is ``(int(width * scale) // 8) * 8`` wide (:func:`hires_size`).
2. Upscale. ``"Latent"`` (A1111's default, ``shared.latent_upscale_modes["Latent"]``) is
   ``torch.nn.functional.interpolate(latents, size, mode="bilinear", antialias=False)`` on the
   latents, no decoding. ``"Lanczos"`` decodes, resizes the pixels with PIL's Lanczos filter and
   encodes again. A model file (ESRGAN, RealESRGAN, SwinIR... anything spandrel's
   ``ModelLoader`` recognises) decodes, runs the model until the picture is at least the
   target size (at most 3 passes, as ``modules/upscaler.py`` ``Upscaler.upscale``), then
   resizes to the target with Lanczos.
3. img2img at ``hires_strength`` from fresh noise of the same seeds (A1111 makes a new
   ``ImageRNG`` with ``self.seeds``), the same prompts, for ``hires_steps`` steps (``None``:
   the first pass' steps). A1111 runs the last ``hires_steps`` steps of a schedule
   ``n = int(hires_steps / min(strength, 0.999))`` long (``sd_samplers_common.setup_img2img_steps``:
   ``t_enc = requested_steps - 1``). diffusers' img2img runs the last ``int(n * strength)`` steps
   of an ``n``-step schedule, so sdkit passes ``n`` and a strength that makes that
   ``hires_steps`` (:func:`second_pass`); the Recipe keeps the strength the caller gave.

The upscaler is recorded as ``AddonRecord("upscaler", name, sha256, settings={scale, steps,
strength})``: ``"Latent"`` or ``"Lanczos"`` with an empty hash, or the model's file stem with
the file's SHA-256; infotext writes A1111's ``Hires upscale``, ``Hires steps``, ``Hires
upscaler`` and ``Denoising strength`` from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .._option_values import check_float, check_int
from ..errors import InvalidOptionError, ModelLoadError, ModelNotFoundError
from ..weights_hash import weights_sha256
from ._record import AddonRecord

__all__ = [
    "BUILTIN_UPSCALERS",
    "DEFAULT_HIRES_STRENGTH",
    "DEFAULT_HIRES_UPSCALER",
    "HiresSpec",
    "Upscaler",
    "check_hires",
    "hires_size",
    "load_upscaler",
    "second_pass",
    "upscale_latents",
    "upscale_pictures",
]

DEFAULT_HIRES_UPSCALER = "Latent"
#: A1111's txt2img "Denoising strength" default.
DEFAULT_HIRES_STRENGTH = 0.7
BUILTIN_UPSCALERS = ("Latent", "Lanczos")
MAX_SCALE = 8.0
MAX_UPSCALER_BYTES = 2 << 30


@dataclass(frozen=True)
class HiresSpec:
    """A call's hires fix, checked.

    Attributes:
        scale: the upscale factor (1 < scale <= 8).
        upscaler: ``"Latent"``, ``"Lanczos"`` or a path to a super-resolution model file.
        steps: second-pass steps, or ``None`` for the first pass' steps.
        strength: second-pass denoising strength (0 < strength <= 1).
    """

    scale: float
    upscaler: str
    steps: int | None
    strength: float


def check_hires(
    scale: Any, upscaler: Any, steps: Any, strength: Any, *, has_init: bool = False
) -> HiresSpec | None:
    """The hires options checked; ``None`` when ``scale`` is ``None`` (no hires fix).

    Raises:
        InvalidOptionError: a scale outside 1..8 (exclusive of 1), steps outside 1..1000,
            strength outside 0..1 or 0, an upscaler that is neither built in nor a path, hires
            options without ``hires_scale``, or hires with an init image (txt2img only).
    """
    if scale is None:
        given = {"hires_steps": steps, "hires_strength": strength}
        extra = [name for name, value in given.items() if value is not None]
        if upscaler is not None:
            extra.insert(0, "hires_upscaler")
        if extra:
            raise InvalidOptionError(
                extra[0], "given", "hires options only with hires_scale", hint="pass hires_scale=2."
            )
        return None
    check_float("hires_scale", scale, 1.0, MAX_SCALE)
    if float(scale) <= 1.0:
        raise InvalidOptionError("hires_scale", scale, f"a number > 1 and <= {MAX_SCALE:g}")
    if steps is not None:
        check_int("hires_steps", steps, 1, 1000)
    strength = DEFAULT_HIRES_STRENGTH if strength is None else strength
    check_float("hires_strength", strength, 0.0, 1.0)
    if float(strength) <= 0.0:
        raise InvalidOptionError("hires_strength", strength, "a number > 0 and <= 1")
    upscaler = DEFAULT_HIRES_UPSCALER if upscaler is None else upscaler
    if not isinstance(upscaler, (str, os.PathLike)):
        raise InvalidOptionError("hires_upscaler", upscaler, "'Latent', 'Lanczos' or a file")
    if has_init:
        raise InvalidOptionError(
            "hires_scale",
            scale,
            "hires fix only for txt2img (no init_image)",
            hint="for img2img, pass a larger width/height instead (as in A1111).",
        )
    return HiresSpec(float(scale), os.fspath(upscaler), steps, float(strength))


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """A1111's hires size: ``int(side * scale)``, down to a multiple of 8 (the latent grid)."""
    return int(width * scale) // 8 * 8, int(height * scale) // 8 * 8


def second_pass(hires_steps: int, strength: float) -> tuple[int, float]:
    """diffusers' img2img ``(num_inference_steps, strength)`` that run A1111's hires pass: the
    last ``hires_steps`` steps of an ``int(hires_steps / min(strength, 0.999))``-step schedule.

    Example:
        >>> second_pass(2, 0.6)  # the last 2 steps of 3
        (3, 0.8333333333333334)
    """
    total = int(hires_steps / min(strength, 0.999))
    # int(total * s) == hires_steps exactly, away from float rounding at the integer
    return total, min(1.0, (hires_steps + 0.5) / total)


@dataclass(frozen=True)
class Upscaler:
    """A loaded upscaler.

    Attributes:
        name: ``"Latent"``, ``"Lanczos"`` or the model file's stem.
        sha256: the model file's SHA-256 ("" for the built-in ones).
        source: the path as given ("" for the built-in ones).
        model: spandrel's ``ImageModelDescriptor``, or ``None`` for the built-in ones.
    """

    name: str
    sha256: str
    source: str
    model: Any = None

    @property
    def latent(self) -> bool:
        """Whether it works on latents (no decoding)."""
        return self.name == "Latent" and self.model is None

    def record(self, spec: HiresSpec) -> AddonRecord:
        """The Recipe's record of this upscaler and the hires pass it served."""
        settings = {"scale": spec.scale, "steps": spec.steps, "strength": spec.strength}
        return AddonRecord("upscaler", self.name, self.sha256, self.source, settings)


def load_upscaler(upscaler: str, *, device: torch.device) -> Upscaler:
    """A built-in upscaler by name, or a super-resolution model file read with spandrel.

    Raises:
        ModelNotFoundError: no such file.
        ModelLoadError: the file is not a ``.safetensors`` super-resolution model that
            spandrel recognises.
    """
    if upscaler in BUILTIN_UPSCALERS:
        return Upscaler(upscaler, "", "")
    path = Path(upscaler).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(
            f"hires_upscaler: no upscaler named {upscaler!r} and no such file",
            source=upscaler,
            hint=f"use one of {', '.join(BUILTIN_UPSCALERS)} or the path of a model file "
            "(ESRGAN, RealESRGAN, SwinIR... as .safetensors).",
        )
    if path.suffix.lower() != ".safetensors":
        raise ModelLoadError(
            f"hires_upscaler: {path} is not a .safetensors file",
            source=upscaler,
            hint="convert the model to safetensors; sdkit does not unpickle .pth/.ckpt files.",
        )
    if path.stat().st_size > MAX_UPSCALER_BYTES:
        raise ModelLoadError(f"hires_upscaler: {path} is over 2 GiB", source=upscaler)
    import spandrel

    try:
        descriptor = spandrel.ModelLoader(device=device).load_from_file(path)
    except Exception as exc:  # spandrel raises several types for "not a model I know"
        raise ModelLoadError(
            f"hires_upscaler: {path} is not an upscaler model spandrel recognises: "
            f"{type(exc).__name__}: {str(exc)[:300]}",
            source=upscaler,
            hint="pass an ESRGAN / RealESRGAN / SwinIR-style super-resolution model file, "
            "or 'Latent' / 'Lanczos'.",
        ) from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.scale < 2:
        raise ModelLoadError(
            f"hires_upscaler: {path} is a {descriptor.architecture.name} "
            f"{descriptor.purpose} model, not an upscaler",
            source=upscaler,
            hint="pass a super-resolution (SR) model with a scale of 2 or more.",
        )
    descriptor.eval()
    return Upscaler(path.stem, weights_sha256([path]), upscaler, descriptor)


def upscale_latents(latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A1111's "Latent": bilinear interpolation of the latents, no antialiasing."""
    width, height = size
    return torch.nn.functional.interpolate(
        latents, size=(height // 8, width // 8), mode="bilinear", antialias=False
    )


def upscale_pictures(
    pictures: list[Image.Image], upscaler: Upscaler, size: tuple[int, int]
) -> list[Image.Image]:
    """Lanczos, or the model (at most 3 passes) then Lanczos, to exactly ``size``."""
    return [_upscale_one(p.convert("RGB"), upscaler, size) for p in pictures]


def _upscale_one(picture: Image.Image, upscaler: Upscaler, size: tuple[int, int]) -> Image.Image:
    if upscaler.model is not None:
        for _ in range(3):
            if picture.width >= size[0] and picture.height >= size[1]:
                break
            picture = _run_model(upscaler.model, picture)
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return picture


def _run_model(model: Any, picture: Image.Image) -> Image.Image:
    array = np.asarray(picture, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)[None]
    with torch.inference_mode():
        out = model(tensor.to(model.device, model.dtype)).float().clamp(0, 1)
    pixels = (out[0].permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(pixels)
