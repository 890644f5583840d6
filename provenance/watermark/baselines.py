"""invisible-watermark's methods, kept selectable and readable as baselines.

Stable Diffusion's reference scripts mark images with the ``invisible-watermark`` package
(``imwatermark``). sdkit's own mark is stronger; these wrappers let benchmarks compare against the
three methods that package ships, and let the verifier read marks made by other tools.

==============  ======================================================  ========  ==========
method          how                                                     bits      speed
==============  ======================================================  ========  ==========
``dwtDct``      Haar DWT, then quantise the largest DCT coefficient of   any       fast
                each 4x4 block (U channel only: a quirk of the package)
``dwtDctSvd``   Haar DWT, DCT of 4x4 blocks, quantise the top singular   any       fast
                value (U channel)
``rivaGan``     RivaGAN encoder/decoder networks (ONNX, shipped in the   32 only   seconds
                package; needs onnxruntime)
==============  ======================================================  ========  ==========

The package works on BGR ``uint8`` arrays in OpenCV's channel order; these wrappers take and
return :class:`PIL.Image.Image` in RGB (an alpha channel is kept as it was). Every bit is repeated
over the image's blocks, and the package refuses images under 256x256.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from ..errors import WatermarkError

__all__ = ["BASELINES", "Baseline", "embed_baseline", "extract_baseline"]

Baseline = Literal["dwtDct", "dwtDctSvd", "rivaGan"]
BASELINES: tuple[Baseline, ...] = ("dwtDct", "dwtDctSvd", "rivaGan")
MIN_SIDE = 256  # invisible-watermark's smallest image (it checks the area; we check both sides)
RIVAGAN_BITS = 32  # the RivaGAN networks were trained for 32-bit messages
_BLOCK = 4  # the DWT-DCT methods' block side, in wavelet coefficients


def embed_baseline(image: Image.Image, bits: npt.ArrayLike, method: Baseline) -> Image.Image:
    """Mark ``image`` with ``bits`` using one of invisible-watermark's methods.

    Args:
        image: the image to mark, at least 256x256 (converted to RGB; alpha is kept).
        bits: the message, a 1-D sequence of 0s and 1s (exactly 32 for ``rivaGan``).
        method: one of :data:`BASELINES`.

    Returns:
        A new RGB (or RGBA) image of the same size.

    Raises:
        WatermarkError: unknown method, image too small, bits not 0/1 or the wrong number for the
            method, or rivaGan's runtime (onnxruntime) missing.

    Example:
        >>> from skimage.data import astronaut
        >>> photo = Image.fromarray(astronaut())
        >>> marked = embed_baseline(photo, [1, 0] * 24, "dwtDctSvd")
        >>> extract_baseline(marked, 48, "dwtDctSvd").tolist() == [1, 0] * 24
        True
    """
    message = _check_bits(bits)
    _check_call(image, len(message), method)
    rgb = np.asarray(image.convert("RGB"))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])

    encoder = _imwatermark().WatermarkEncoder()
    encoder.set_watermark("bits", message.tolist())
    if method == "rivaGan":
        _load_rivagan(encoder)
    marked_bgr = np.asarray(encoder.encode(bgr, method), dtype=np.uint8)

    marked = Image.fromarray(np.ascontiguousarray(marked_bgr[:, :, ::-1]))
    if "A" in image.getbands():
        marked.putalpha(image.getchannel("A"))
    return marked


def extract_baseline(image: Image.Image, n_bits: int, method: Baseline) -> npt.NDArray[np.uint8]:
    """Read ``n_bits`` back from an image marked by :func:`embed_baseline` (or the package).

    The methods have no notion of "no mark": an unmarked image yields bits all the same.

    Args:
        image: the image to read, at least 256x256.
        n_bits: the message length that was embedded (32 for ``rivaGan``).
        method: one of :data:`BASELINES`.

    Returns:
        A ``uint8`` array of 0s and 1s, ``n_bits`` long.

    Raises:
        WatermarkError: unknown method, image too small, or ``n_bits`` not possible for the method.
    """
    _check_call(image, n_bits, method)
    rgb = np.asarray(image.convert("RGB"))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])

    decoder = _imwatermark().WatermarkDecoder("bits", n_bits)
    if method == "rivaGan":
        _load_rivagan(decoder)
    bits = np.asarray(decoder.decode(bgr, method))
    return (bits.reshape(-1) > 0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# helpers


def _imwatermark() -> Any:
    """The ``imwatermark`` module (imported late: it imports torch and OpenCV)."""
    import imwatermark

    return imwatermark


def _load_rivagan(coder: Any) -> None:
    """Load RivaGAN's ONNX networks once (they ship inside the package)."""
    try:
        coder.loadModel()
    except ImportError as error:
        raise WatermarkError(
            "the rivaGan baseline needs onnxruntime",
            hint="pip install onnxruntime (or pick dwtDct / dwtDctSvd)",
        ) from error


def _check_bits(bits: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """``bits`` as a 1-D ``uint8`` array of 0s and 1s."""
    array = np.asarray(bits)
    if array.ndim != 1 or array.size == 0:
        raise WatermarkError(
            f"the message must be a non-empty 1-D sequence of bits, got shape {array.shape}",
            hint="pass e.g. encode_payload(payload) or a list of 0s and 1s",
        )
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_) or np.any(
        (array != 0) & (array != 1)
    ):
        raise WatermarkError(
            "the message bits must be 0 or 1",
            hint="threshold soft values first, e.g. (values > 0).astype(np.uint8)",
        )
    return array.astype(np.uint8)


def _check_call(image: Image.Image, n_bits: int, method: str) -> None:
    """Refuse what invisible-watermark would refuse (or silently get wrong), with a hint."""
    if method not in BASELINES:
        raise WatermarkError(
            f"unknown baseline watermark method {method!r}",
            hint=f"use one of {', '.join(BASELINES)}",
        )
    width, height = image.size
    if width < MIN_SIDE or height < MIN_SIDE:
        raise WatermarkError(
            f"a {width}x{height} image is too small for the {method} watermark",
            hint=f"use an image at least {MIN_SIDE}x{MIN_SIDE} (upscale it first)",
        )
    if method == "rivaGan":
        if n_bits != RIVAGAN_BITS:
            raise WatermarkError(
                f"rivaGan carries exactly {RIVAGAN_BITS} bits, not {n_bits}",
                hint=f"pass {RIVAGAN_BITS} bits, or use dwtDct / dwtDctSvd for longer messages",
            )
        return
    # DWT halves each side (after cropping to a multiple of 4), then 4x4 blocks carry the bits.
    blocks = (height // 4 * 4 // 2 // _BLOCK) * (width // 4 * 4 // 2 // _BLOCK)
    if not 1 <= n_bits <= blocks:
        raise WatermarkError(
            f"{method} can carry 1 to {blocks} bits in a {width}x{height} image, not {n_bits}",
            hint="use a shorter message or a larger image",
        )
