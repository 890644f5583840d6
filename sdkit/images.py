"""Generated images and how they are written: infotext first, signed last, atomically.

Formats: PNG (infotext in a ``parameters`` text chunk, as AUTOMATIC1111 writes it), JPEG
(4:4:4 chroma, infotext in EXIF UserComment) and WebP (infotext in EXIF UserComment). The pixels
already carry the watermark (the Generator stamps them); encoding writes the infotext, and then
the C2PA manifest is signed over the final bytes (``provenance.stamp``). A file is written to a
temporary name in the destination folder and moved into place only when complete; an existing
file is never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from provenance import _fs
from provenance import infotext as infotext_codec
from provenance.manifest import Ingredient
from provenance.stamp import Stamper, WatermarkRecord
from provenance.verify import read_infotext
from provenance.watermark import Payload

from .errors import OutputError
from .recipe import Recipe

__all__ = ["FORMATS", "GeneratedImage", "GenerationResult", "encode_image", "read_infotext"]

ImageFormat = Literal["png", "jpeg", "webp"]
FORMATS: dict[str, ImageFormat] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".webp": "webp",
}


def encode_image(
    image: Image.Image, fmt: ImageFormat, *, infotext: str | None = None, quality: int = 95
) -> bytes:
    """Encode ``image`` as PNG, JPEG or WebP bytes, with ``infotext`` embedded when given (where
    A1111 puts it: :mod:`provenance.infotext`)."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", pnginfo=infotext_codec.png_info(infotext))
    elif fmt in ("jpeg", "webp"):
        exif = infotext_codec.exif_bytes(infotext)
        rgb = image.convert("RGB")
        if fmt == "jpeg":
            rgb.save(buffer, format="JPEG", quality=quality, subsampling=0, exif=exif)
        else:
            rgb.save(buffer, format="WEBP", quality=quality, exif=exif)
    else:
        raise OutputError(f"unknown image format {fmt!r}", path="-", hint="use png, jpeg or webp.")
    return buffer.getvalue()


def write_atomic(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file; never leave a partial file.

    The guarantee is :func:`provenance._fs.write_atomic`'s (fsync, then ``os.link`` so nothing is
    overwritten unasked, or ``os.replace`` with ``overwrite``); this adds the checks and the
    wording of sdkit's :class:`OutputError`.

    Raises:
        OutputError: the file exists (and ``overwrite`` is False) or cannot be written.
    """
    path = Path(path)
    folder = path.parent
    exists = OutputError(
        f"{path} exists", path=path, hint="choose another name or pass overwrite=True."
    )
    if path.is_dir():
        raise OutputError(f"{path} is a folder", path=path, hint="give a file name.")
    if not overwrite and path.exists():
        raise exists
    if not folder.is_dir():
        raise OutputError(f"folder {folder} does not exist", path=path, hint="create it first.")
    try:
        return _fs.write_atomic(path, data, overwrite=overwrite)
    except FileExistsError:
        raise exists from None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", path=path) from exc


@dataclass(frozen=True)
class GeneratedImage:
    """One generated image, the Recipe that made it, and what signs it.

    Attributes:
        image: the pixels (RGB), watermarked when ``watermark.embedded``.
        recipe: every parameter that made them.
        index: position in its batch.
        watermark: what the provenance layer did about the watermark (``None``: no
            provenance layer).
        stamper: signs the encoded bytes (``None``: files are written unsigned).
        parent: the init image of an img2img / inpaint result (a C2PA ingredient).
    """

    image: Image.Image
    recipe: Recipe
    index: int = 0
    watermark: WatermarkRecord | None = None
    stamper: Stamper | None = field(default=None, repr=False, compare=False)
    parent: Ingredient | None = field(default=None, repr=False, compare=False)

    @property
    def seed(self) -> int:
        """This image's seed (``recipe.seed``)."""
        return self.recipe.seed

    @property
    def infotext(self) -> str:
        """A1111 "parameters" text for this image."""
        return self.recipe.to_infotext()

    @property
    def payload(self) -> Payload | None:
        """The watermark payload, or ``None``."""
        return self.watermark.payload if self.watermark is not None else None

    def to_bytes(
        self, fmt: str = "png", *, quality: int = 95, title: str | None = None, sign: bool = True
    ) -> bytes:
        """Encode as ``"png"``, ``"jpeg"`` or ``"webp"``: infotext embedded, then C2PA-signed.

        Args:
            fmt: the format.
            quality: JPEG / WebP quality.
            title: the file name recorded in the manifest (default ``image.<ext>``).
            sign: sign with the Generator's credentials (default); False gives the bare
                encoding (watermark and infotext only).

        Raises:
            OutputError: unknown format.
            SigningError: the credentials cannot sign (``provenance.errors``).
        """
        chosen = _format(fmt, "-")
        data = encode_image(self.image, chosen, infotext=self.infotext, quality=quality)
        if not sign or self.stamper is None:
            return data
        ext = "jpg" if chosen == "jpeg" else chosen
        return self.stamper.sign(
            data,
            chosen,
            title=title or f"image.{ext}",
            record=self.watermark or WatermarkRecord(False, reason="not stamped"),
            recipe=self.recipe.to_dict(),
            parent=self.parent,
        )

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        fmt: str | None = None,
        overwrite: bool = False,
        quality: int = 95,
    ) -> Path:
        """Write the signed image (format from ``fmt`` or the suffix) atomically.

        Nothing is written when encoding or signing fails, and an existing file is kept unless
        ``overwrite=True``.

        Raises:
            OutputError: unknown format, existing file without ``overwrite``, or unwritable.
            SigningError: the credentials cannot sign (``provenance.errors``).
        """
        dest = Path(path)
        chosen = _format(fmt or dest.suffix, dest)
        if not overwrite and dest.exists():  # fail before the work of signing
            raise OutputError(
                f"{dest} exists", path=dest, hint="choose another name or pass overwrite=True."
            )
        data = self.to_bytes(chosen, quality=quality, title=dest.name)
        return write_atomic(dest, data, overwrite=overwrite)

    def to_dict(self) -> dict[str, Any]:
        mark = self.watermark.to_assertion() if self.watermark is not None else None
        return {
            "index": self.index,
            "size": list(self.image.size),
            "recipe": self.recipe.to_dict(),
            "watermark": mark,
        }


def _format(fmt: str, path: str | os.PathLike[str]) -> ImageFormat:
    key = fmt.lower()
    key = key if key.startswith(".") else "." + key
    if key not in FORMATS:
        raise OutputError(
            f"unknown image format {fmt!r}",
            path=path,
            hint="use a .png, .jpg/.jpeg or .webp name (or fmt='png').",
        )
    return FORMATS[key]


@dataclass(frozen=True)
class GenerationResult:
    """What one call of a Generator made.

    Attributes:
        images: one :class:`GeneratedImage` per image, in seed order.
        elapsed_s: wall time of the call, in seconds.
    """

    images: tuple[GeneratedImage, ...]
    elapsed_s: float = 0.0

    @property
    def image(self) -> GeneratedImage:
        """The first image (the only one when ``num_images=1``)."""
        return self.images[0]

    @property
    def seeds(self) -> list[int]:
        """Each image's seed, in order."""
        return [im.recipe.seed for im in self.images]

    @property
    def recipes(self) -> list[Recipe]:
        """Each image's Recipe, in order."""
        return [im.recipe for im in self.images]

    def __getitem__(self, index: int) -> GeneratedImage:
        return self.images[index]

    def __iter__(self) -> Iterator[GeneratedImage]:
        return iter(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def to_dict(self) -> dict[str, Any]:
        return {"elapsed_s": self.elapsed_s, "images": [im.to_dict() for im in self.images]}
