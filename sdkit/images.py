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
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image, PngImagePlugin

from provenance.manifest import Ingredient
from provenance.stamp import Stamper, WatermarkRecord
from provenance.verify import read_infotext

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
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\x00"


def encode_image(
    image: Image.Image, fmt: ImageFormat, *, infotext: str | None = None, quality: int = 95
) -> bytes:
    """Encode ``image`` as PNG, JPEG or WebP bytes, with ``infotext`` embedded when given."""
    buffer = io.BytesIO()
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        if infotext is not None:
            info.add_text("parameters", infotext)
        image.save(buffer, format="PNG", pnginfo=info)
    elif fmt in ("jpeg", "webp"):
        exif = Image.Exif()
        if infotext is not None:
            # A1111 (piexif) writes UserComment as "UNICODE\0" + UTF-16BE.
            exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = _UNICODE_PREFIX + infotext.encode("utf-16-be")
        rgb = image.convert("RGB")
        if fmt == "jpeg":
            rgb.save(buffer, format="JPEG", quality=quality, subsampling=0, exif=exif.tobytes())
        else:
            rgb.save(buffer, format="WEBP", quality=quality, exif=exif.tobytes())
    else:
        raise OutputError(f"unknown image format {fmt!r}", path="-", hint="use png, jpeg or webp.")
    return buffer.getvalue()


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """Create a new temporary file in ``folder`` as ``open(path, "x")`` would: mode 0666 less
    the umask (``mkstemp`` makes 0600, and a fixed chmod would ignore the umask)."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def write_atomic(path: Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file; never leave a partial file.

    Raises:
        OutputError: the file exists (and ``overwrite`` is False) or cannot be written.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path} is a folder", path=path, hint="give a file name.")
    if not overwrite and path.exists():
        raise OutputError(
            f"{path} exists", path=path, hint="choose another name or pass overwrite=True."
        )
    if not folder.is_dir():
        raise OutputError(f"folder {folder} does not exist", path=path, hint="create it first.")
    try:
        fd, tmp = _create_temp(folder, path.name)
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror}", path=path) from exc
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the name was taken meanwhile: no race can clobber a file.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputError(
                    f"{path} exists", path=path, hint="choose another name or pass overwrite=True."
                ) from None
            except OSError:
                # file systems without hard links: fall back to a checked rename
                if path.exists():
                    raise OutputError(f"{path} exists", path=path) from None
                os.replace(tmp, path)
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", path=path) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
    def payload(self) -> Any:
        """The watermark payload (:class:`provenance.watermark.Payload`), or ``None``."""
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
