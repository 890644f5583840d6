"""Invisible watermarks whose payload links an image to its C2PA manifest.

``embed(image, payload)`` marks an image with sdkit's method (``sdkit-ss1``, see
:mod:`provenance.watermark.spread`); ``extract(image)`` finds a payload or returns ``None``. A
payload is accepted only when the pilot synchronises, the BCH code decodes, the CRC-16 matches
and the version is known, so unmarked images do not produce payloads (the false-accept
probability per decode attempt is below 1e-12, see :mod:`provenance.watermark.payload`).
invisible-watermark's methods stay available as baselines in
:mod:`provenance.watermark.baselines`.

Example:
    >>> import numpy as np
    >>> from PIL import Image
    >>> rng = np.random.default_rng(0)
    >>> ramp = np.linspace(40, 200, 320)[None, :, None] + rng.normal(0, 6, (320, 320, 3))
    >>> photo = Image.fromarray(np.clip(ramp, 0, 255).astype(np.uint8))
    >>> payload = Payload(content_id=0x0123456789AB, issuer_id=7)
    >>> found = extract(embed(photo, payload))
    >>> found.payload == payload, found.method
    (True, 'sdkit-ss1')
    >>> extract(photo) is None
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..errors import WatermarkError
from . import payload as _payload
from . import spread as _ss1
from .payload import Payload
from .spread import MIN_SIDE

__all__ = [
    "METHODS",
    "MIN_SIDE",
    "SEARCH_PIXELS",
    "Detection",
    "Payload",
    "WatermarkError",
    "embed",
    "extract",
]

METHODS = (_ss1.METHOD,)
# The search runs on at most about this many pixels: a larger image is first reduced by a whole
# factor (box average). The chip grid is relative to the image (160 chips along the long edge),
# so the reduced copy carries the same grid, with chips of 6.4 px or more (as a 1024 px image,
# the size SDXL makes, searched natively); a 6000 x 6000 image takes 0.5 s instead of 47 s.
SEARCH_PIXELS = 1024 * 1024


@dataclass(frozen=True)
class Detection:
    """A payload found in an image.

    Attributes:
        payload: what was embedded.
        method: the watermark method that carried it.
        confidence: share of the soft evidence (summed bit reliabilities) that agrees with the
            decoded codeword, 0.5 (chance) .. 1.0 (every bit agrees).
        bits_corrected: codeword bits the error correction had to fix.
        sync_z: z-score of the pilot's correlation peak (how sure the alignment is).
    """

    payload: Payload
    method: str
    confidence: float
    bits_corrected: int
    sync_z: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "payload": self.payload.to_dict(),
            "method": self.method,
            "confidence": self.confidence,
            "bits_corrected": self.bits_corrected,
            "sync_z": self.sync_z,
        }


def embed(image: Image.Image, payload: Payload, *, method: str = _ss1.METHOD) -> Image.Image:
    """Return a copy of ``image`` carrying ``payload``.

    Raises:
        WatermarkError: the image is smaller than 256 px on a side, or the method is unknown.
    """
    if method != _ss1.METHOD:
        raise WatermarkError(f"unknown watermark method {method!r}", hint=f"use one of {METHODS}.")
    return _ss1.embed_bits(image, _payload.encode_payload(payload))


def extract(image: Image.Image, *, max_pixels: int = SEARCH_PIXELS) -> Detection | None:
    """Find a payload in ``image``; ``None`` when there is none (or it cannot be read).

    Args:
        image: the pixels to search.
        max_pixels: an image with more pixels is searched on a copy reduced by a whole factor
            to at most about this many (time and memory stay bounded whatever the size).
    """
    if min(image.size) < MIN_SIDE // 2:
        return None
    for cand in _ss1.soft_candidates(_search_copy(image, max_pixels), _payload.CODEWORD_BITS):
        decoded = _payload.decode_payload(cand.soft)
        if decoded is None:
            continue
        payload, corrected = decoded
        codeword = _payload.encode_payload(payload).astype(np.float64) * 2 - 1
        agree = float(np.sum(np.abs(cand.soft) * (np.sign(cand.soft) == codeword)))
        total = float(np.sum(np.abs(cand.soft))) or 1.0
        return Detection(payload, _ss1.METHOD, agree / total, corrected, cand.z)
    return None


def _search_copy(image: Image.Image, max_pixels: int) -> Image.Image:
    """``image``, or a copy reduced by the smallest whole factor that fits ``max_pixels``."""
    factor = math.ceil(math.sqrt(image.width * image.height / max(1, max_pixels)))
    if factor <= 1:
        return image
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")
    return image.reduce(factor)
