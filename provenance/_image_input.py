"""Reading an image file that anyone may have made: bounded bytes, bounded pixels.

* :func:`read_file` reads regular files only, at most :data:`MAX_FILE_BYTES`, through
  :func:`provenance._fs.read_regular` (a FIFO, ``/dev/zero`` or a socket is never opened).
* :func:`decode_image` opens the image (Pillow's decompression-bomb limit refused), and decodes
  its pixels only when they fit ``max_pixels`` (a JPEG is decoded at 1/2, 1/4 or 1/8 scale
  when that fits); decoding errors are returned as damage, not raised.
* :func:`read_infotext` reads the A1111 "parameters" text from a file, its bytes or an open
  image, through the codec :mod:`provenance.infotext`; malformed EXIF counts as none.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ._fs import NotRead, read_regular
from .errors import ManifestError
from .infotext import from_image

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_FILE_BYTES", "decode_image", "read_file", "read_infotext"]

# The largest file read (bytes): a 40 Mpx RGBA PNG of noise is about 160 MB.
MAX_FILE_BYTES = 256 * 1024 * 1024
# The most pixels decoded for the watermark and fingerprint checks (about 120 MB as RGB):
# 40 Mpx sensors (7296 x 5472) and 6000 x 6000 fit; larger JPEGs are decoded at a reduced scale.
DEFAULT_MAX_PIXELS = 40_000_000
_NOT_AN_IMAGE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)


def read_file(source: str | os.PathLike[str] | bytes) -> tuple[bytes, str]:
    """The file's bytes: regular files only (no FIFO, device or socket), at most MAX_FILE_BYTES
    (:func:`provenance._fs.read_regular`)."""
    if isinstance(source, bytes):
        return source, "<bytes>"
    path = Path(source)
    name = str(path)
    try:
        return read_regular(path, MAX_FILE_BYTES), name
    except NotRead as exc:
        message, hint = _NOT_READ[exc.kind]
        raise ManifestError(
            message.format(name=name, detail=exc.detail), path=name, hint=hint
        ) from exc


#: How verify words a file it did not read: (message, hint) by :class:`NotRead` kind.
_NOT_READ = {
    "folder": ("{name} is a folder", "give the image files in it."),
    "special": (
        "{name} is not a regular file ({detail})",
        "verify reads image files only; copy the data to a file first.",
    ),
    "too_big": (
        f"{{name}} is larger than {MAX_FILE_BYTES // 2**20} MiB",
        "verify reads image files of at most MAX_FILE_BYTES bytes.",
    ),
    "error": (
        "cannot read {name}: {detail}",
        "check that the file exists and that you may read it.",
    ),
}


@dataclass(frozen=True)
class _Decoded:
    """An opened image: pixels when decoded within budget, what is damaged, the infotext."""

    image: Image.Image
    fmt: str
    damage: str | None = None
    too_large: int | None = None  # the pixel count, when over max_pixels (not decoded)
    infotext: str | None = None

    @property
    def pixels(self) -> Image.Image | None:
        """The decoded image, or None when damaged or not decoded."""
        return self.image if self.damage is None and self.too_large is None else None


def decode_image(data: bytes, name: str, max_pixels: int) -> _Decoded:
    """Open the image and, within ``max_pixels``, decode its pixels.

    Raises:
        ManifestError: not an image, or larger than the decompression-bomb limit.
    """
    try:
        image = _open(data)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ManifestError(
            f"{name} is too large to check safely: {exc}",
            path=name,
            hint="images over Pillow's MAX_IMAGE_PIXELS are refused (decompression bombs).",
        ) from None
    except _NOT_AN_IMAGE as exc:
        raise ManifestError(
            f"{name} is not an image file sdkit can read",
            path=name,
            hint="give a PNG, JPEG or WebP file.",
        ) from exc
    fmt = (image.format or "").lower()
    count = image.width * image.height
    if count > max_pixels and fmt == "jpeg":
        _draft(image, max_pixels)
    if image.width * image.height > max_pixels:
        return _Decoded(image, fmt, too_large=count, infotext=from_image(image, loaded=False))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow's chatter on bad metadata
            image.load()
    except Exception as exc:  # Pillow's decoders raise many types on bad data
        return _Decoded(image, fmt, damage=str(exc)[:200], infotext=from_image(image, loaded=False))
    return _Decoded(image, fmt, infotext=from_image(image, loaded=True))


def _draft(image: Image.Image, max_pixels: int) -> None:
    """Have a JPEG decode at the largest DCT scale (1/2, 1/4, 1/8) that fits ``max_pixels``."""
    needed = math.sqrt(image.width * image.height / max_pixels)
    scale = next((s for s in (2, 4, 8) if s >= needed), None)
    if scale is not None:
        image.draft("RGB", (math.ceil(image.width / scale), math.ceil(image.height / scale)))


def read_infotext(source: str | os.PathLike[str] | bytes | Image.Image) -> str | None:
    """Read AUTOMATIC1111-style "parameters" text from an image.

    Looks in a PNG text chunk named ``parameters`` and in EXIF UserComment (JPEG, WebP), the
    places A1111, sdkit and most generators write it (:func:`provenance.infotext.from_image`);
    malformed EXIF counts as none. A path is read as :func:`read_file` reads it (regular files
    of at most :data:`MAX_FILE_BYTES`), and no pixel is decoded.

    Args:
        source: a path, the file's bytes, or an open PIL image.

    Returns:
        The text, or ``None`` when the image carries none.

    Raises:
        ManifestError: a path that cannot be read (as :func:`read_file`), or data that is not an
            image.
    """
    if isinstance(source, Image.Image):
        return from_image(source, loaded=True)
    data, name = read_file(source)
    try:
        with _open(data) as opened:
            return from_image(opened, loaded=False)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, *_NOT_AN_IMAGE) as exc:
        raise ManifestError(
            f"{name} is not an image file sdkit can read",
            path=name,
            hint="give a PNG, JPEG or WebP file.",
        ) from exc


def _open(data: bytes) -> Image.Image:
    """``Image.open`` with decompression bombs raised and Pillow's "Corrupt EXIF data" (a
    UserWarning it prints while reading a hostile header) silenced: the EXIF is ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))
