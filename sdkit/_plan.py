"""What checking a call's options needs and makes: :class:`ModelFacts` in, :class:`Plan` out.

A leaf of :mod:`sdkit.options` (which re-exports these names): the facts of a model that
validation reads (:func:`model_facts` takes them from a pipeline), the :class:`Plan` that
:meth:`sdkit.options.GenerationOptions.check` resolves a call into, and :class:`RecipeFields`,
the fields of a Recipe that ``GenerationOptions.from_recipe`` reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from . import samplers
from .addons._record import AddonRecord
from .modes import Mode

__all__ = ["ModelFacts", "Plan", "RecipeFields", "model_facts", "native_size"]


@dataclass(frozen=True)
class ModelFacts:
    """What validating options needs to know about the model (see ``Generator.facts``).

    Attributes:
        native_size: (width, height) the model was trained at.
        family: ``"sd1"``, ``"sd2"``, ``"sdxl"``…
        default_steps: steps when a call does not say.
        default_guidance_scale: guidance when a call does not say.
        text_layers: layers of the shallower text encoder (the bound of ``clip_skip``).
        unet_in_channels: latent channels the UNet takes (inpainting needs 4 or 9).
        scheduler_class: the model's own scheduler class (used when no sampler is named).
        scheduler_config: the model's scheduler config, the base of every sampler's.
        optimize: the runtime's ``optimize`` level (feature caching is refused under ``"max"``).
    """

    native_size: tuple[int, int]
    family: str
    default_steps: int
    default_guidance_scale: float
    text_layers: int
    unet_in_channels: int
    scheduler_class: type[Any]
    scheduler_config: Mapping[str, Any]
    optimize: str = "none"


@dataclass(frozen=True)
class Plan:
    """Options checked and resolved for one call: what the pipeline runs with."""

    mode: Mode
    steps: int
    guidance_scale: float
    guidance_rescale: float
    clip_skip: int | None
    width: int
    height: int
    seeds: list[int]
    sampler: samplers.ResolvedSampler | None
    scheduler: Any
    init_image: Image.Image | None
    mask: Image.Image | None
    strength: float | None
    feature_cache: int | None

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The diffusers pipeline's arguments (prompt embeddings and callback aside)."""
        kwargs: dict[str, Any] = {
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "num_images_per_prompt": len(self.seeds),
            # one CPU generator per image, so that seeds reproduce across devices
            "generator": [torch.Generator("cpu").manual_seed(s) for s in self.seeds],
            "output_type": "pil",
        }
        if self.guidance_rescale:
            kwargs["guidance_rescale"] = self.guidance_rescale
        if self.mode == "txt2img" or self.mode == "inpaint":
            kwargs.update(height=self.height, width=self.width)
        if self.init_image is not None:
            kwargs.update(image=self.init_image, strength=self.strength)
        if self.mask is not None:
            kwargs["mask_image"] = self.mask
        return kwargs


class RecipeFields(Protocol):
    """The fields of a :class:`sdkit.Recipe` that :meth:`GenerationOptions.from_recipe` reads."""

    @property
    def negative_prompt(self) -> str: ...
    @property
    def sampler(self) -> str | None: ...
    @property
    def schedule(self) -> str: ...
    @property
    def scheduler_config(self) -> Mapping[str, Any]: ...
    @property
    def steps(self) -> int: ...
    @property
    def guidance_scale(self) -> float: ...
    @property
    def guidance_rescale(self) -> float: ...
    @property
    def clip_skip(self) -> int | None: ...
    @property
    def seed(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def strength(self) -> float | None: ...
    @property
    def feature_cache(self) -> int | None: ...
    @property
    def addons(self) -> Sequence[AddonRecord]: ...


def native_size(pipe: Any) -> tuple[int, int]:
    """(width, height) a pipeline's model was trained at: UNet sample size x VAE scale factor."""
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    size = pipe.unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(w) * factor, int(h) * factor


def model_facts(
    pipe: Any,
    *,
    family: str,
    default_steps: int,
    default_guidance_scale: float,
    scheduler_class: type[Any],
    scheduler_config: Mapping[str, Any],
    optimize: str,
) -> ModelFacts:
    """The :class:`ModelFacts` of a loaded pipeline (what ``Generator.facts`` returns)."""
    encoders = [getattr(pipe, n, None) for n in ("text_encoder", "text_encoder_2")]
    layers = [int(e.config.num_hidden_layers) for e in encoders if e is not None]
    return ModelFacts(
        native_size=native_size(pipe),
        family=family,
        default_steps=default_steps,
        default_guidance_scale=default_guidance_scale,
        text_layers=min(layers, default=0),
        unet_in_channels=int(pipe.unet.config.in_channels),
        scheduler_class=scheduler_class,
        scheduler_config=scheduler_config,
        optimize=optimize,
    )
