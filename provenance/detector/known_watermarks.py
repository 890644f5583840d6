"""Public invisible watermarks that generators add by default, read back by exact match.

Each row of :data:`KNOWN_MARKS` is a fixed message that a public generator embeds with the
invisible-watermark package (``imwatermark``), method ``dwtDct``:

=====================  =========================================================================
name                   message and source
=====================  =========================================================================
``diffusers-sdxl``     48 bits ``0b101100111110110010010000011110111011000110011110``:
                       ``WATERMARK_MESSAGE`` in huggingface/diffusers
                       ``src/diffusers/pipelines/stable_diffusion_xl/watermark.py`` (itself
                       "copied from" Stability-AI/generative-models
                       ``scripts/demo/streamlit_helpers.py``), added by every SDXL pipeline
                       unless ``add_watermarker=False``
``sd1-script``         the bytes of ``"StableDiffusionV1"`` (136 bits): ``wm = "StableDiffusionV1"``
                       and ``set_watermark('bytes', wm.encode('utf-8'))`` in
                       CompVis/stable-diffusion ``scripts/txt2img.py``
``sd2-script``         the bytes of ``"SDV2"`` (32 bits): ``wm = "SDV2"`` in
                       Stability-AI/stablediffusion ``scripts/txt2img.py``
=====================  =========================================================================

How the pixels are handed to the decoder matters. The package converts BGR to YUV with OpenCV,
whose offset for the chroma channels depends on the array's type (128 for ``uint8``, 0.5 for
``float32``). The reference scripts encode ``uint8`` arrays; diffusers' watermarker encodes the
``float32`` array ``255 * (x / 2 + 0.5)``. Each mark is therefore decoded from an array of the
type it was encoded from (:attr:`KnownMark.dtype`): decoded as ``uint8``, diffusers' mark on a
tiny SDXL pipeline's 256 px outputs came back with 41-42 of 48 bits right; as ``float32``, 47-48.

The package has no notion of "no mark": it returns bits from any image. A mark is therefore
accepted only when **every** bit equals the known message. On unmarked photos the decoded bits
are not uniform random (flat regions bias them), so the false-positive rate was measured rather
than assumed: ``benchmarks/known_watermarks_false_positives.py`` (0 of 1,000 unmarked photos
and JPEG re-encodings for each mark; docs/detector.md). An absent mark proves nothing: the
marks do not survive resizing or cropping, and JPEG re-encoding often erases them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..watermark.baselines import MIN_SIDE

__all__ = ["KNOWN_MARKS", "MAX_MARK_PIXELS", "KnownMark", "find_known_marks"]

#: Larger images are not searched: the marks live on the generator's pixel grid (they do not
#: survive resizing, so a reduced copy cannot carry them), generators write at most about
#: 2048 x 2048, and decoding costs memory in proportion (about 50 MB per Mpx as float32).
MAX_MARK_PIXELS = 2048 * 2048


def _bits_of_int(value: int) -> tuple[int, ...]:
    return tuple(int(b) for b in bin(value)[2:])


def _bits_of_bytes(text: str) -> tuple[int, ...]:
    # imwatermark's 'bytes' mode: each byte most significant bit first (np.unpackbits)
    return tuple(int(b) for b in np.unpackbits(np.frombuffer(text.encode(), np.uint8)))


@dataclass(frozen=True)
class KnownMark:
    """One public watermark.

    Attributes:
        name: sdkit's name for it.
        made_by: who embeds it, in words.
        bits: the message, as the decoder returns it.
        source: where the message is defined (repository and file).
        dtype: the array type the tool hands the encoder (``uint8`` or ``float32``).
    """

    name: str
    made_by: str
    bits: tuple[int, ...]
    source: str
    dtype: str = "uint8"

    def to_dict(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "made_by": self.made_by,
            "bits": len(self.bits),
            "source": self.source,
        }


KNOWN_MARKS: tuple[KnownMark, ...] = (
    KnownMark(
        "diffusers-sdxl",
        "diffusers' Stable Diffusion XL pipelines (default watermark)",
        _bits_of_int(0b101100111110110010010000011110111011000110011110),
        "huggingface/diffusers src/diffusers/pipelines/stable_diffusion_xl/watermark.py "
        "(WATERMARK_MESSAGE)",
        "float32",
    ),
    KnownMark(
        "sd1-script",
        'Stable Diffusion 1 reference script ("StableDiffusionV1")',
        _bits_of_bytes("StableDiffusionV1"),
        "CompVis/stable-diffusion scripts/txt2img.py (wm = 'StableDiffusionV1')",
    ),
    KnownMark(
        "sd2-script",
        'Stable Diffusion 2 reference script ("SDV2")',
        _bits_of_bytes("SDV2"),
        "Stability-AI/stablediffusion scripts/txt2img.py (wm = 'SDV2')",
    ),
)


def find_known_marks(image: Image.Image) -> tuple[KnownMark, ...]:
    """The known marks whose every bit decodes from ``image`` (dwtDct, invisible-watermark).

    Images under 256 px on a side cannot carry these marks (the package refuses them), and
    images over :data:`MAX_MARK_PIXELS` are not searched: none.
    """
    if min(image.size) < MIN_SIDE or image.width * image.height > MAX_MARK_PIXELS:
        return ()
    import imwatermark

    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    decoded: dict[tuple[int, str], tuple[int, ...]] = {}
    found = []
    for mark in KNOWN_MARKS:
        key = (len(mark.bits), mark.dtype)
        if key not in decoded:
            decoder = imwatermark.WatermarkDecoder("bits", key[0])
            bits = np.asarray(decoder.decode(bgr.astype(mark.dtype), "dwtDct")).reshape(-1)
            decoded[key] = tuple(int(b > 0) for b in bits)
        if decoded[key] == mark.bits:
            found.append(mark)
    return tuple(found)
