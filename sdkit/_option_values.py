"""Checks of single option values, shared by :mod:`sdkit.options` and :mod:`sdkit.batch`.

Each refuses a value with an :class:`~sdkit.errors.InvalidOptionError` that names the option,
the value and what is allowed; none needs a model.
"""

from __future__ import annotations

import numbers
import os
import secrets
from typing import Any, Literal

from PIL import Image

from .errors import InvalidOptionError

__all__ = [
    "MAX_SEED",
    "ImageInput",
    "check_float",
    "check_int",
    "check_side",
    "first_seed",
    "load_image",
    "mask_without_init",
    "size_for",
]

MAX_SEED = 2**32 - 1
ImageInput = Image.Image | str | os.PathLike[str]


def first_seed(seed: Any, count: int) -> int:
    """The first of ``count`` consecutive seeds: ``seed`` checked, or drawn when ``None``.

    Every seed of the run, ``first .. first + count - 1``, stays within ``0 .. MAX_SEED``.
    """
    first = secrets.randbelow(MAX_SEED - count + 2) if seed is None else seed
    check_int("seed", first, 0, MAX_SEED - count + 1)
    return int(first)


def check_int(name: str, value: Any, low: int, high: int | None) -> None:
    """Refuse anything but an integer (``bool`` excluded) in ``low..high``."""
    allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidOptionError(name, value, allowed)
    value = int(value)
    if value < low or (high is not None and value > high):
        raise InvalidOptionError(name, value, allowed)


def check_float(name: str, value: Any, low: float, high: float) -> None:
    """Refuse anything but a real number (``bool`` excluded) in ``low..high``."""
    allowed = f"a number in {low:g}..{high:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidOptionError(name, value, allowed)
    if not low <= float(value) <= high:
        raise InvalidOptionError(name, value, allowed)


def size_for(
    init: Image.Image | None, native: tuple[int, int], width: Any, height: Any
) -> tuple[int, int]:
    """Width and height of a call: given, else the init image's, else the model's native size."""
    default_w, default_h = init.size if init is not None else native
    width = default_w if width is None else width
    height = default_h if height is None else height
    for name, value in (("width", width), ("height", height)):
        check_side(name, value, resizes=init is not None)
    return int(width), int(height)


def check_side(name: str, value: Any, *, resizes: bool) -> None:
    check_int(name, value, 8, 16384)
    if value % 8:
        raise InvalidOptionError(
            name,
            value,
            "a multiple of 8",
            hint=f"try {value - value % 8} or {value - value % 8 + 8}"
            + (" (or pass width/height to resize the init image)" if resizes else "")
            + ".",
        )


def mask_without_init() -> InvalidOptionError:
    return InvalidOptionError(
        "mask", "given", "a mask only with init_image", hint="pass init_image=... as well."
    )


def load_image(
    name: str, value: ImageInput | None, mode: Literal["RGB", "L"]
) -> Image.Image | None:
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value.convert(mode)
    if isinstance(value, (str, os.PathLike)):
        try:
            with Image.open(value) as im:
                return im.convert(mode)
        except (OSError, ValueError) as exc:
            raise InvalidOptionError(
                name, os.fspath(value), "a readable image file", hint=str(exc)
            ) from exc
    raise InvalidOptionError(name, type(value).__name__, "a PIL image or an image path")
