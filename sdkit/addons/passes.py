"""The denoising passes of a call with ControlNet, hires fix or the SDXL refiner.

A :class:`Generator <sdkit.Generator>` holds one :class:`Addons`: the ControlNets and
upscalers it has loaded, and its refiner and VAE records. Per call, :meth:`Addons.prepare`
loads and checks what the call names (before any denoising) and returns an :class:`AddonCall`,
which picks the pipeline (a ControlNet pipeline built with ``from_pipe``, or the plain one)
and runs the passes:

* plain, or ControlNet: one pipeline call;
* hires fix (:mod:`sdkit.addons.hires`): the first pass at the base size, the upscale, the
  img2img pass at the hires size;
* refiner (:mod:`sdkit.addons.refiner`): the base to ``denoising_end``, the refiner from
  ``denoising_start``, in latents.

Hires fix and the refiner run with txt2img only, and neither with ControlNet yet: those
combinations are refused before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from ..errors import InvalidOptionError
from ..modes import Mode
from ._record import AddonRecord
from .control import ControlNets, PreparedControl, check_control
from .hires import (
    HiresSpec,
    Upscaler,
    check_hires,
    hires_size,
    load_upscaler,
    second_pass,
    upscale_latents,
    upscale_pictures,
)
from .refiner import DEFAULT_SWITCH, Refiner

__all__ = ["AddonCall", "AddonOptions", "Addons", "Encode", "options_from_records"]

#: ``encode(pipe)``: the call's prompts encoded for ``pipe``, a context manager with
#: ``embeds.as_pipeline_kwargs()`` (:func:`sdkit.prompt_conditioning.condition` bound).
Encode = Callable[[Any], Any]


class AddonOptions(Protocol):
    """The call options add-ons read (those of :class:`sdkit.options.GenerationOptions`)."""

    @property
    def control(self) -> Any: ...
    @property
    def hires_scale(self) -> float | None: ...
    @property
    def hires_upscaler(self) -> str | None: ...
    @property
    def hires_steps(self) -> int | None: ...
    @property
    def hires_strength(self) -> float | None: ...
    @property
    def refiner_switch(self) -> float | None: ...


@dataclass(frozen=True)
class AddonCall:
    """What one call's add-ons need at denoising time.

    Attributes:
        mode: the call's mode.
        control: the ControlNets, loaded, and their images; or ``None``.
        hires: the hires fix; or ``None``.
        upscaler: the hires upscaler; or ``None``.
        refiner: the refiner; or ``None``.
        switch: the refiner's switch.
        records: what the Recipe records, in order (VAE first, then as applied).
    """

    mode: Mode
    control: PreparedControl | None = None
    hires: HiresSpec | None = None
    upscaler: Upscaler | None = None
    refiner: Refiner | None = None
    switch: float = DEFAULT_SWITCH
    records: tuple[AddonRecord, ...] = ()

    def final_size(self, width: int, height: int) -> tuple[int, int]:
        """The pictures' size: the hires size, or the base size."""
        if self.hires is None:
            return width, height
        return hires_size(width, height, self.hires.scale)

    def pipeline(self, base: Any, derive: Callable[[Mode], Any]) -> Any:
        """The pipeline of the first pass: ControlNet's, or ``derive(mode)``."""
        if self.control is not None:
            return self.control.pipeline(base, self.mode)
        return derive(self.mode)

    def run(
        self,
        pipe: Any,
        kwargs: dict[str, Any],
        *,
        seeds: Sequence[int],
        derive: Callable[[Mode], Any],
        encode: Encode,
    ) -> list[Image.Image]:
        """Denoise and decode: the pictures, in order of the seeds."""
        if self.control is not None:
            # img2img / inpaint: the size of the init image (already resized to the call's)
            width, height = kwargs.get("width"), kwargs.get("height")
            if width is None or height is None:
                width, height = kwargs["image"].size
            kwargs = {**kwargs, **self.control.kwargs(self.mode, width, height)}
        if self.refiner is not None:
            return self._refine(pipe, kwargs, encode)
        if self.hires is None:
            return list(pipe(**kwargs).images)
        return self._hires(pipe, kwargs, seeds, derive)

    def _hires(
        self, pipe: Any, kwargs: dict[str, Any], seeds: Sequence[int], derive: Callable[[Mode], Any]
    ) -> list[Image.Image]:
        assert self.hires is not None and self.upscaler is not None
        spec, upscaler = self.hires, self.upscaler
        size = hires_size(kwargs["width"], kwargs["height"], spec.scale)
        # 1. The first pass at the base size.
        first = pipe(**{**kwargs, "output_type": "latent" if upscaler.latent else "pil"}).images
        # 2. Upscale: the latents, or the decoded pixels.
        image: Any = (
            upscale_latents(first, size)
            if upscaler.latent
            else upscale_pictures(list(first), upscaler, size)
        )
        # 3. img2img from fresh noise of the same seeds, as A1111's new ImageRNG.
        steps = kwargs["num_inference_steps"] if spec.steps is None else spec.steps
        total, strength = second_pass(steps, spec.strength)
        second = {k: v for k, v in kwargs.items() if k not in ("width", "height")}
        second.update(
            image=image,
            strength=strength,
            num_inference_steps=total,
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            output_type="pil",
        )
        img2img = derive("img2img")
        img2img.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        return list(img2img(**second).images)

    def _refine(self, pipe: Any, kwargs: dict[str, Any], encode: Encode) -> list[Image.Image]:
        assert self.refiner is not None
        latents = pipe(**{**kwargs, "denoising_end": self.switch, "output_type": "latent"}).images
        refiner = self.refiner.pipe
        refiner.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        refiner.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
        conditioning = encode(refiner)
        keep = ("num_inference_steps", "guidance_scale", "num_images_per_prompt", "generator")
        args = {k: kwargs[k] for k in keep if k in kwargs}
        if "callback_on_step_end" in kwargs:
            args["callback_on_step_end"] = kwargs["callback_on_step_end"]
        args.update(
            conditioning.embeds.as_pipeline_kwargs(),
            image=latents,
            denoising_start=self.switch,
            output_type="pil",
        )
        with conditioning:
            return list(refiner(**args).images)


def options_from_records(records: Sequence[AddonRecord]) -> dict[str, Any]:
    """The hires and refiner call options a Recipe's records say (for replay)."""
    options: dict[str, Any] = {}
    for record in records:
        settings = record.settings
        if record.kind == "upscaler":
            builtin = record.name in ("Latent", "Lanczos") and not record.sha256
            options.update(
                hires_scale=settings.get("scale"),
                hires_upscaler=record.name if builtin else record.source,
                hires_steps=settings.get("steps"),
                hires_strength=settings.get("strength"),
            )
        elif record.kind == "refiner":
            options["refiner_switch"] = settings.get("switch")
    return options


class Addons:
    """A Generator's loaded add-ons: ControlNets, upscalers, its refiner and VAE.

    Args:
        device: where models run.
        dtype: their dtype.
        refiner: the refiner given to the Generator, loaded; or ``None``.
        fixed: records of what every call uses (the VAE).
    """

    def __init__(
        self,
        *,
        device: torch.device,
        dtype: torch.dtype,
        refiner: Refiner | None = None,
        fixed: Sequence[AddonRecord] = (),
    ) -> None:
        self.device = device
        self.controlnets = ControlNets(device=device, dtype=dtype)
        self.refiner = refiner
        self.fixed = tuple(fixed)
        self._upscalers: dict[str, Upscaler] = {}

    def prepare(self, mode: Mode, unet: Any, options: AddonOptions) -> AddonCall:
        """Load and check what a call's ``options`` name, before any denoising.

        Raises:
            InvalidOptionError: a combination sdkit does not run (hires fix or the refiner
                with ControlNet or an init image; ``refiner_switch`` without a refiner), a
                control image that cannot be read.
            ModelLoadError: a ControlNet of another family, an upscaler file that is not one.
        """
        control = check_control(options.control)
        hires = check_hires(
            options.hires_scale,
            options.hires_upscaler,
            options.hires_steps,
            options.hires_strength,
            has_init=mode != "txt2img",
        )
        refiner_switch = options.refiner_switch
        if refiner_switch is not None and self.refiner is None:
            raise InvalidOptionError(
                "refiner_switch",
                refiner_switch,
                "a switch only with a refiner",
                hint="load one: Generator(..., refiner='stabilityai/stable-diffusion-xl-refiner-1.0').",
            )
        refiner = self.refiner
        if refiner is not None and (mode != "txt2img" or control or hires is not None):
            what = "img2img/inpaint" if mode != "txt2img" else "ControlNet or hires fix"
            raise InvalidOptionError(
                "refiner",
                refiner.name,
                f"a refiner with plain txt2img, not with {what}",
                hint="make the picture with a Generator without refiner= for this call.",
            )
        if hires is not None and control:
            raise InvalidOptionError(
                "hires_scale",
                hires.scale,
                "hires fix without ControlNet (not supported yet)",
                hint="generate at the full size with ControlNet, or drop control=.",
            )
        records: list[AddonRecord] = list(self.fixed)
        prepared = self.controlnets.prepare(control, unet) if control else None
        if prepared is not None:
            records += prepared.records
        upscaler = None
        if hires is not None:
            upscaler = self._upscaler(hires.upscaler)
            records.append(upscaler.record(hires))
        switch = DEFAULT_SWITCH if refiner_switch is None else float(refiner_switch)
        if refiner is not None:
            records.append(refiner.record(switch))
        return AddonCall(mode, prepared, hires, upscaler, refiner, switch, tuple(records))

    def _upscaler(self, name: str) -> Upscaler:
        if name not in self._upscalers:
            self._upscalers[name] = load_upscaler(name, device=self.device)
        return self._upscalers[name]
