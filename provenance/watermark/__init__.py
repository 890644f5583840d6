"""Invisible watermarks whose payload links an image to its C2PA manifest.

``embed(image, payload)`` marks an image with sdkit's method (``sdkit-ss2``, see
:mod:`provenance.watermark.ss2`; ``method="sdkit-ss1"`` still writes the first layout,
:mod:`provenance.watermark.spread`); ``extract(image)`` finds a payload of either method, or
returns ``None``, and says which method carried it and (``sdkit-ss2``) where it was found. A
payload is accepted only when the pilot synchronises, the BCH code decodes, the CRC-16 matches
and the version is known, so unmarked images do not produce payloads: the false-accept
probability per decode attempt is below 1e-12 (:mod:`provenance.watermark.payload`), and
``extract`` makes at most ``ss2.MAX_DECODES + 3`` attempts per image (union bound 4.2e-11).
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
    >>> found.payload == payload, found.method, found.region.share
    (True, 'sdkit-ss2', 1.0)
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
from . import ss2 as _ss2
from .payload import Payload
from .spread import MIN_SIDE
from .ss2 import Region

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "MIN_SIDE",
    "SEARCH_PIXELS",
    "Detection",
    "Payload",
    "Region",
    "WatermarkError",
    "embed",
    "extract",
    "false_accept_bound",
]

METHODS = (_ss2.METHOD, _ss1.METHOD)
DEFAULT_METHOD = _ss2.METHOD
# The search runs on at most about this many pixels: a larger image is first reduced by a whole
# factor (box average). The chip grid is relative to the image (160 chips along the long edge),
# so the reduced copy carries the same grid, with chips of 6.4 px or more (as a 1024 px image,
# the size SDXL makes, searched natively); a 6000 x 6000 image takes 0.5 s instead of 47 s.
SEARCH_PIXELS = 1024 * 1024
_SS1_DECODES = 3  # sdkit-ss1 candidates extract decodes after the sdkit-ss2 search


def false_accept_bound() -> float:
    """Union bound on ``extract`` returning a false payload for one unmarked image: at most
    ``ss2.MAX_DECODES`` (40) sdkit-ss2 decodes and 3 sdkit-ss1 decodes, each at most
    ``payload.false_accept_probability(5)``: 43 x 9.8e-13 = 4.2e-11."""
    per_decode = _payload.false_accept_probability(_payload.MAX_CHASE_BITS)
    return (_ss2.MAX_DECODES + _SS1_DECODES) * per_decode


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
        region: where the payload was found (``sdkit-ss2``): the box of the blocks where the
            evidence is strongest, in the image's pixels, and the share of the blocks that
            agree on their own; ``None`` for ``sdkit-ss1``.
    """

    payload: Payload
    method: str
    confidence: float
    bits_corrected: int
    sync_z: float
    region: Region | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "payload": self.payload.to_dict(),
            "method": self.method,
            "confidence": self.confidence,
            "bits_corrected": self.bits_corrected,
            "sync_z": self.sync_z,
            "region": None if self.region is None else self.region.to_dict(),
        }


def embed(image: Image.Image, payload: Payload, *, method: str = DEFAULT_METHOD) -> Image.Image:
    """Return a copy of ``image`` carrying ``payload``.

    Args:
        image: the pixels to mark (at least 256 px on each side).
        payload: what to carry.
        method: ``"sdkit-ss2"`` (default) or ``"sdkit-ss1"`` (the first layout).

    Raises:
        WatermarkError: the image is smaller than 256 px on a side, or the method is unknown.
    """
    if method not in METHODS:
        raise WatermarkError(f"unknown watermark method {method!r}", hint=f"use one of {METHODS}.")
    bits = _payload.encode_payload(payload)
    if method == _ss1.METHOD:
        return _ss1.embed_bits(image, bits)
    return _ss2.embed_bits(image, bits)


def extract(image: Image.Image, *, max_pixels: int = SEARCH_PIXELS) -> Detection | None:
    """Find a payload in ``image``; ``None`` when there is none (or it cannot be read).

    Args:
        image: the pixels to search.
        max_pixels: an image with more pixels is searched on a copy reduced by a whole factor
            to at most about this many (time and memory stay bounded whatever the size).
    """
    if min(image.size) < MIN_SIDE // 2:
        return None
    searched = _search_copy(image, max_pixels)
    scale = image.width / searched.width
    decodes = 0
    evidence = _ss1.Evidence.of(searched)  # chip grids read once for both methods
    for cand in _ss2.candidates(searched, _payload.CODEWORD_BITS, evidence=evidence):
        for soft in cand.readings():
            if decodes >= _ss2.MAX_DECODES:
                break
            decodes += 1
            decoded = _payload.decode_payload(soft, chase_bits=_ss2.CHASE_BITS)
            if decoded is None:
                continue
            payload, corrected = decoded
            codeword = _payload.encode_payload(payload)
            region = _ss2.locate(cand, codeword, searched.size)
            box = tuple(
                min(round(v * scale), side)
                for v, side in zip(region.box, image.size * 2, strict=True)
            )
            region = Region((box[0], box[1], box[2], box[3]), region.share)
            return Detection(
                payload, _ss2.METHOD, _confidence(soft, codeword), corrected, cand.z, region
            )
        if decodes >= _ss2.MAX_DECODES:
            break
    ss1 = _ss1.soft_candidates(
        searched, _payload.CODEWORD_BITS, keep=_SS1_DECODES, evidence=evidence
    )
    for old in ss1:
        decoded = _payload.decode_payload(old.soft)
        if decoded is None:
            continue
        payload, corrected = decoded
        codeword = _payload.encode_payload(payload)
        return Detection(payload, _ss1.METHOD, _confidence(old.soft, codeword), corrected, old.z)
    return None


def _confidence(soft: np.ndarray, codeword: np.ndarray) -> float:
    """Share of the soft evidence (summed reliabilities) that agrees with the codeword."""
    signs = codeword.astype(np.float64) * 2 - 1
    agree = float(np.sum(np.abs(soft) * (np.sign(soft) == signs)))
    return agree / (float(np.sum(np.abs(soft))) or 1.0)


def _search_copy(image: Image.Image, max_pixels: int) -> Image.Image:
    """``image``, or a copy reduced by the smallest whole factor that fits ``max_pixels``."""
    factor = math.ceil(math.sqrt(image.width * image.height / max(1, max_pixels)))
    if factor <= 1:
        return image
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")
    return image.reduce(factor)
