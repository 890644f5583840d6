"""The call options of :class:`sdkit.Generator`, declared once, and their validation.

:class:`GenerationOptions` holds every option of one call with its default. Its
:meth:`~GenerationOptions.check` validates them against a few facts of the model
(:class:`ModelFacts`: native size, family, default steps and guidance, the scheduler) and
resolves them into a :class:`Plan` (mode, sizes, one seed per image, the scheduler), raising
:class:`~sdkit.errors.InvalidOptionError` before any work; it needs no pipeline, so it is
tested without one (diffusers' ``check_inputs``, given only what it reads).

:class:`CallOptions` is the same set as a ``TypedDict``: ``**options: Unpack[CallOptions]``
makes a misspelt option a type error wherever options are forwarded (``stream``,
``generate_many``, ``warmup``). ``tests/test_options.py`` checks that the dataclass, the
``TypedDict`` and ``Generator.__call__``'s keywords name the same options with the same defaults.

Example:
    >>> from diffusers import EulerDiscreteScheduler
    >>> facts = ModelFacts(native_size=(64, 64), family="sd1", default_steps=25,
    ...     default_guidance_scale=7.0, text_layers=12, unet_in_channels=4,
    ...     scheduler_class=EulerDiscreteScheduler, scheduler_config={})
    >>> plan = GenerationOptions(steps=4, seed=7, num_images=2).check(facts)
    >>> plan.mode, plan.steps, plan.guidance_scale, plan.seeds, (plan.width, plan.height)
    ('txt2img', 4, 7.0, [7, 8], (64, 64))
    >>> try:
    ...     GenerationOptions(width=100).check(facts)
    ... except InvalidOptionError as exc:
    ...     print(exc.option, exc.value, exc.allowed, exc.hint)
    width 100 a multiple of 8 try 96 or 104.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import torch
from PIL import Image

from provenance.watermark import Payload

from . import samplers
from ._option_values import (
    MAX_SEED,
    ImageInput,
    check_float,
    check_int,
    check_side,
    first_seed,
    load_image,
    mask_without_init,
    size_for,
)
from ._plan import ModelFacts, Plan, RecipeFields
from .addons.call_options import addon_options_from_records, check_addon_options
from .addons.control import ControlInput
from .addons.lora import LoraWeight
from .errors import InvalidOptionError
from .feature_cache import check_interval
from .modes import Mode

__all__ = [
    "DEFAULT_STRENGTH",
    "MAX_SEED",
    "BatchOptions",
    "CallOptions",
    "ControlInput",
    "GenerationOptions",
    "ImageInput",
    "Mode",
    "ModelFacts",
    "Plan",
    "RecipeFields",
    "StepCallback",
    "check_float",
    "check_int",
    "first_seed",
]

#: ``callback(step, timestep, latents)``; return ``False`` (or raise GenerationCancelled) to stop.
StepCallback = Callable[[int, int, torch.Tensor], bool | None]
#: What a call makes (a Recipe records it): decided by ``init_image`` and ``mask``.
DEFAULT_STRENGTH = 0.75


@dataclass(frozen=True)
class GenerationOptions:
    """Every option of one :meth:`sdkit.Generator.__call__`, with its default.

    The attributes are ``__call__``'s keyword arguments. ``callback`` and
    ``watermark_payloads`` are here too although no Recipe records them: they are per-call
    options forwarded like the others, and one list is what keeps ``__call__``, ``stream``,
    ``generate_many`` and :class:`CallOptions` in step.

    Attributes:
        negative_prompt: what to steer away from.
        sampler: A1111 or ComfyUI sampler name (see ``sdkit samplers``); ``None`` keeps the
            model's own scheduler.
        schedule: ``"karras"``, ``"exponential"``, ``"beta"``, ``"sgm_uniform"``…
        steps: denoising steps (1-1000, and what the sampler can schedule: PNDM and DDIM
            with SD's config take at most 999); ``None``: the model's default
            (``Generator.defaults``: 25 for most models).
        guidance_scale: classifier-free guidance; <= 1 turns it off. ``None``: the
            model's default (``Generator.defaults``: 7 for most models, 3 for the model sdkit
            ships, 0 for Turbo models).
        guidance_rescale: φ of "Common Diffusion Noise Schedules…" (0..1).
        clip_skip: A1111 meaning, 1 = last layer, 2 = penultimate.
        seed: first seed (0 .. 2**32-1); ``None`` draws one (recorded in the Recipe).
        width: pixels, a multiple of 8 (default: the model's native size, or the init image's).
        height: pixels, a multiple of 8.
        num_images: images to make in one batch.
        init_image: image (or path) to start from: img2img, or inpaint with ``mask``.
        strength: how much of ``init_image`` to repaint, 0..1 (default 0.75).
        mask: white = repaint, black = keep; same size as ``init_image``.
        callback: ``callback(step, timestep, latents)`` after each step; return ``False``
            to cancel (raises :class:`~sdkit.errors.GenerationCancelled`).
        watermark_payloads: one :class:`provenance.watermark.Payload` per image to embed
            instead of fresh random ones (``Generator.replay`` uses it).
        feature_cache: lossy speed-up, DeepCache style: the whole UNet runs every
            ``feature_cache``-th step (2..50) and the steps between reuse its deep
            features (:mod:`sdkit.feature_cache`). ``None`` (default): every step in full.
            Recorded in the Recipe. Refused under ``optimize="max"``.
        control: ControlNets: ``[(model, image, scale), ...]`` or
            :class:`sdkit.addons.control.ControlSpec` items (start/end of guidance, Canny).
        hires_scale: hires fix (txt2img): generate, upscale by this (1 < scale <= 8), img2img.
        hires_upscaler: ``"Latent"`` (default), ``"Lanczos"`` or a super-resolution model file.
        hires_steps: the hires pass' steps (default: ``steps``).
        hires_strength: the hires pass' denoising strength (default 0.7).
        refiner_switch: where the Generator's SDXL refiner takes over (0..1, default 0.8).
        loras: LoRAs for this call, ``{name: weight}`` (a weight, or ``(unet, te)``): names
            loaded with ``Generator.load_lora`` or found in the Generator's ``lora_dirs``;
            the prompt's ``<lora:name:w>`` tags add to them (:mod:`sdkit.addons.lora`).
        fuse_loras: merge the call's LoRA set into the weights (``fuse_lora``): faster steps
            while the set stays the same, nearly the same pixels; recorded in the Recipe.
    """

    negative_prompt: str = ""
    sampler: str | None = None
    schedule: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    guidance_rescale: float = 0.0
    clip_skip: int | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    num_images: int = 1
    init_image: ImageInput | None = None
    strength: float | None = None
    mask: ImageInput | None = None
    callback: StepCallback | None = None
    watermark_payloads: Sequence[Payload] | None = None
    feature_cache: int | None = None
    control: Sequence[ControlInput] | None = None
    hires_scale: float | None = None
    hires_upscaler: str | None = None
    hires_steps: int | None = None
    hires_strength: float | None = None
    refiner_switch: float | None = None
    loras: Mapping[str, LoraWeight] | None = None
    fuse_loras: bool = False

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any], **fixed: Any) -> GenerationOptions:
        """Options from keyword arguments plus ``fixed`` ones; an unknown name is refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(options) - names | set(options) & set(fixed)
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidOptionError(name, options[name], "an option of Generator.__call__")
        return cls(**options, **fixed)

    @classmethod
    def from_recipe(
        cls,
        recipe: RecipeFields,
        *,
        init_image: ImageInput | None = None,
        mask: ImageInput | None = None,
        watermark_payloads: Sequence[Payload] | None = None,
    ) -> GenerationOptions:
        """The options that made the image ``recipe`` describes (one image, its seed).

        A Recipe records the init image and mask by hash only, and the watermark payload
        not at all: pass them for img2img / inpaint, or to reproduce watermarked pixels.
        """
        return cls(
            negative_prompt=recipe.negative_prompt,
            # the row that rebuilds the recorded config (a renamed row: old Recipes' UniPC)
            sampler=None
            if recipe.sampler is None
            else samplers.replay_sampler(recipe.sampler, recipe.schedule, recipe.scheduler_config),
            schedule=None if recipe.sampler is None else recipe.schedule,
            steps=recipe.steps,
            guidance_scale=recipe.guidance_scale,
            guidance_rescale=recipe.guidance_rescale,
            clip_skip=recipe.clip_skip,
            seed=recipe.seed,
            width=recipe.width,
            height=recipe.height,
            init_image=init_image,
            strength=recipe.strength,
            mask=mask,
            watermark_payloads=watermark_payloads,
            feature_cache=recipe.feature_cache,
            **addon_options_from_records(recipe.addons),  # LoRAs, hires fix, refiner switch
        )

    def as_kwargs(self) -> CallOptions:
        """The options as keyword arguments of ``Generator.__call__`` (a shallow copy)."""
        return cast(CallOptions, {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def check_alone(self) -> None:
        """The checks that need no model: types, ranges, the sampler's name, seeds, sizes.

        ``sdkit generate --prompts`` runs them on every line before it loads a model;
        :meth:`check` runs them first, then those that need the model's facts.

        Raises:
            InvalidOptionError: the first invalid option, with what is allowed and a hint.
        """
        self._check_values(clip_skip_max=None)

    def _check_values(
        self, *, clip_skip_max: int | None
    ) -> tuple[samplers.ResolvedSampler | None, int | None]:
        """:meth:`check_alone`'s checks; the resolved sampler and feature-cache interval."""
        if not isinstance(self.negative_prompt, str):
            raise InvalidOptionError("negative_prompt", self.negative_prompt, "a string")
        if self.steps is not None:
            check_int("steps", self.steps, 1, 1000)
        check_int("num_images", self.num_images, 1, 64)
        if self.guidance_scale is not None:
            check_float("guidance_scale", self.guidance_scale, 0.0, 100.0)
        check_float("guidance_rescale", self.guidance_rescale, 0.0, 1.0)
        if self.clip_skip is not None:
            check_int("clip_skip", self.clip_skip, 1, clip_skip_max)
        resolved = self._sampler()
        if self.seed is not None:
            first_seed(self.seed, int(self.num_images))
        for name, side in (("width", self.width), ("height", self.height)):
            if side is not None:
                check_side(name, side, resizes=self.init_image is not None)
        if self.strength is not None:
            check_float("strength", self.strength, 0.0, 1.0)
        interval = check_interval(self.feature_cache)
        if self.mask is not None and self.init_image is None:
            raise mask_without_init()
        check_addon_options(self, has_init=self.init_image is not None)
        return resolved, interval

    def check(self, facts: ModelFacts) -> Plan:
        """Validate every option against the model's facts and resolve them into a Plan.

        Raises:
            InvalidOptionError: the first invalid option, with what is allowed and a hint.
        """
        # 1. The model's defaults where the caller said nothing, then every check that needs
        # no model (check_alone's), with clip skip bounded by the text encoder's layers.
        steps = facts.default_steps if self.steps is None else self.steps
        guidance = (
            facts.default_guidance_scale if self.guidance_scale is None else self.guidance_scale
        )
        filled = dataclasses.replace(self, steps=steps, guidance_scale=guidance)
        resolved, interval = filled._check_values(clip_skip_max=facts.text_layers)
        # 2. Seeds.
        first = first_seed(self.seed, self.num_images)
        # 3. Mode, images and size.
        init = load_image("init_image", self.init_image, "RGB")
        mask = load_image("mask", self.mask, "L")
        mode, strength = self._mode(facts, init, mask, int(steps))
        width, height = size_for(init, facts.native_size, self.width, self.height)
        if init is not None and init.size != (width, height):
            init = init.resize((width, height), Image.Resampling.LANCZOS)
            if mask is not None:
                mask = mask.resize((width, height), Image.Resampling.NEAREST)
        payloads = self.watermark_payloads
        if payloads is not None and len(payloads) != self.num_images:
            raise InvalidOptionError(
                "watermark_payloads", len(payloads), f"{self.num_images} payloads"
            )
        # 4. What this runtime and this scheduler can do.
        if interval and facts.optimize == "max":
            # the whole UNet is one compiled graph (CUDA graphs on CUDA), traced through the
            # blocks' own forwards; the cache swaps them and keeps their outputs across calls,
            # which CUDA graph replays may overwrite. Not verified either way: refused
            raise InvalidOptionError(
                "feature_cache", interval, "None with optimize='max'",
                hint="feature caching works with optimize='none' or 'compile'.",
            )  # fmt: skip
        seeds = [first + i for i in range(int(self.num_images))]
        scheduler = samplers.fresh_scheduler(
            facts.scheduler_class, facts.scheduler_config, resolved, seeds, facts.family
        )
        samplers.check_steps(scheduler, int(steps), resolved)
        # numpy scalars and the like pass validation; the Plan holds plain Python numbers
        return Plan(
            mode=mode,
            steps=int(steps),
            guidance_scale=float(guidance),
            guidance_rescale=float(self.guidance_rescale),
            clip_skip=None if self.clip_skip is None else int(self.clip_skip),
            width=width,
            height=height,
            seeds=seeds,
            sampler=resolved,
            scheduler=scheduler,
            init_image=init,
            mask=mask,
            strength=strength,
            feature_cache=interval,
        )

    def _sampler(self) -> samplers.ResolvedSampler | None:
        if self.sampler is None and self.schedule is None:
            return None
        if self.sampler is None:
            raise InvalidOptionError(
                "schedule",
                self.schedule,
                "a schedule together with a sampler",
                hint="pass sampler=... too (see `sdkit samplers`).",
            )
        return samplers.resolve_sampler(self.sampler, self.schedule)

    def _mode(
        self, facts: ModelFacts, init: Image.Image | None, mask: Image.Image | None, steps: int
    ) -> tuple[Mode, float | None]:
        """The mode the images imply, and the strength it uses (``None`` for txt2img)."""
        if mask is not None and init is None:
            raise mask_without_init()
        if init is None:
            if self.strength is not None:
                raise InvalidOptionError(
                    "strength",
                    self.strength,
                    "strength only with init_image",
                    hint="pass init_image=... for img2img.",
                )
            return "txt2img", None
        mode: Mode = "inpaint" if mask is not None else "img2img"
        strength = DEFAULT_STRENGTH if self.strength is None else self.strength  # in range
        if int(steps * strength) < 1:
            raise InvalidOptionError(
                "strength",
                strength,
                f"at least 1/steps = {1 / steps:.3g} with steps={steps}",
                hint="raise strength or steps: img2img runs steps*strength denoising steps.",
            )
        if mask is not None and mask.size != init.size:
            raise InvalidOptionError(
                "mask",
                f"{mask.size[0]}x{mask.size[1]}",
                f"the init image's size {init.size[0]}x{init.size[1]}",
            )
        if mode == "img2img":
            self._refuse_rescale(facts, mode)
        channels = facts.unet_in_channels
        if mode == "inpaint" and channels not in (4, 9):
            raise InvalidOptionError(
                "mask",
                "given",
                "a model whose UNet takes 4 latent channels (any SD model) or 9 (an "
                f"inpainting model); this one takes {channels}",
                hint="inpaint with another model (Generator(model=...)); img2img without a "
                "mask works with this one.",
            )
        if mode == "inpaint":
            self._refuse_rescale(facts, mode)
        return mode, float(strength)

    def _refuse_rescale(self, facts: ModelFacts, mode: Mode) -> None:
        if facts.family != "sdxl" and self.guidance_rescale:
            raise InvalidOptionError(
                "guidance_rescale",
                self.guidance_rescale,
                f"0 for SD 1.x/2.x {mode}",
                hint=f"diffusers' SD {mode} pipeline has no guidance rescale.",
            )


class _BatchOptions(TypedDict, total=False):
    negative_prompt: str
    sampler: str | None
    schedule: str | None
    steps: int | None
    guidance_scale: float | None
    guidance_rescale: float
    clip_skip: int | None
    width: int | None
    height: int | None
    init_image: ImageInput | None
    strength: float | None
    mask: ImageInput | None
    callback: StepCallback | None
    watermark_payloads: Sequence[Payload] | None
    feature_cache: int | None
    control: Sequence[ControlInput] | None
    hires_scale: float | None
    hires_upscaler: str | None
    hires_steps: int | None
    hires_strength: float | None
    refiner_switch: float | None
    loras: Mapping[str, LoraWeight] | None
    fuse_loras: bool


BatchOptions = _BatchOptions
"""The options of ``Generator.__call__`` but ``seed`` and ``num_images``, as a ``TypedDict``:
for calls that set those two themselves (``stream``, ``generate_many``, ``warmup``)."""


class CallOptions(_BatchOptions, total=False):
    """Every option of ``Generator.__call__``, as a ``TypedDict`` for ``**Unpack[...]``."""

    seed: int | None
    num_images: int
