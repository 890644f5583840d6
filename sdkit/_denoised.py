"""What steps 1-6 of a :class:`sdkit.Generator` call hand to step 7, and the call's edges.

:class:`Denoised` holds the pictures as the pipeline decoded them with their Recipes; its
:meth:`~Denoised.stamp` watermarks one (files are signed when they are written).
:func:`step_hook` turns a call's ``callback`` into diffusers' ``callback_on_step_end``, which
stops the pipeline with :class:`Cancel`; :func:`make_stamper` is the Stamper that a
Generator's provenance options describe.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from provenance.credentials import Credentials
from provenance.stamp import Stamper
from provenance.store import ManifestStore, default_store_path
from provenance.watermark import Payload

from .errors import GenerationCancelled
from .images import GeneratedImage
from .options import StepCallback
from .recipe import Recipe

__all__ = ["Cancel", "Denoised", "make_stamper", "step_hook"]


class Cancel(Exception):
    """Raised from the step hook to leave the pipeline; the Generator raises
    :class:`~sdkit.errors.GenerationCancelled` with :attr:`step`."""

    def __init__(self, step: int) -> None:
        self.step = step


@dataclass(frozen=True)
class Denoised:
    """Pictures as the pipeline decoded them, before the watermark (steps 1-6 of a call)."""

    pictures: list[Image.Image]
    recipes: list[Recipe]
    parent: Any
    stamper: Stamper

    def stamp(self, index: int, payload: Payload | None = None) -> GeneratedImage:
        """Step 7 for one image: watermark the pixels; files are signed when they are written."""
        picture = self.pictures[index].convert("RGB")
        marked, record = self.stamper.watermark(picture, payload)
        recipe = self.recipes[index]
        return GeneratedImage(marked, recipe, index, record, self.stamper, self.parent)


def make_stamper(
    credentials: Credentials | None = None,
    store: ManifestStore | str | os.PathLike[str] | None = None,
    watermark: bool = True,
    training_mining: Mapping[str, str] | None = None,
) -> Stamper:
    """The Stamper of a Generator's provenance options (the store: ``$SDKIT_STORE`` if none)."""
    store = store if store is not None else default_store_path()
    return Stamper(credentials, store=store, watermark=watermark, training_mining=training_mining)


def step_hook(callback: StepCallback) -> Callable[..., dict[str, Any]]:
    """``callback(step, timestep, latents)`` as diffusers' ``callback_on_step_end``."""

    def hook(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            keep_going = callback(step + 1, int(timestep), kwargs["latents"])
        except GenerationCancelled:
            raise Cancel(step + 1) from None
        if keep_going is False:
            raise Cancel(step + 1)
        return kwargs

    return hook
