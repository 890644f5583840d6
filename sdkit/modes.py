"""The kinds of generation: what a call's options select and what its Recipe records.

A leaf module (it imports nothing of sdkit), so that :mod:`sdkit.recipe` (light, imported by
``import sdkit``) and :mod:`sdkit.options` (which imports torch) share one definition without
importing each other both ways.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["MODES", "Mode"]

Mode = Literal["txt2img", "img2img", "inpaint"]
"""``txt2img`` (from noise), ``img2img`` (from an init image), ``inpaint`` (init image + mask)."""

MODES: tuple[Mode, ...] = ("txt2img", "img2img", "inpaint")
