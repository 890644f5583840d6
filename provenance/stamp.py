"""The provenance layer: pixels -> watermarked pixels -> encoded bytes -> signed file.

Order matters and is fixed here: the watermark changes the pixels, so it comes first; C2PA binds
to the file's exact bytes, so signing comes last, over the final encoding (metadata included);
the fingerprint is taken from the encoded pixels in between.

Example:
    >>> from PIL import Image
    >>> stamper = Stamper(watermark=False)
    >>> _, record = stamper.watermark(Image.new("RGB", (64, 64)))
    >>> record.embedded, record.reason
    (False, 'turned off (watermark=False)')
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from . import fingerprint as fp
from .errors import ManifestError
from .manifest import MIME_TYPES, Ingredient, build_definition, sign_asset, training_mining_entries
from .store import ManifestStore
from .watermark import DEFAULT_METHOD, MIN_SIDE, Payload, embed

if TYPE_CHECKING:
    from .credentials import Credentials

__all__ = ["Ingredient", "Stamper", "WatermarkRecord", "ingredient_from"]


def _version() -> str:
    try:
        return metadata.version("sdkit")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


@dataclass(frozen=True)
class WatermarkRecord:
    """What the stamp did about the invisible watermark of one image.

    Attributes:
        embedded: whether the pixels carry a watermark.
        method: the watermark method (``sdkit-ss2``; older files ``sdkit-ss1``), when embedded.
        payload: the payload embedded (its content id keys the manifest store).
        reason: why no watermark was embedded, in words.
    """

    embedded: bool
    method: str | None = None
    payload: Payload | None = None
    reason: str | None = None

    def to_assertion(self) -> dict[str, Any]:
        """The data of the manifest's ``org.sdkit.watermark`` assertion."""
        if not self.embedded or self.payload is None:
            return {"embedded": False, "reason": self.reason or "not embedded"}
        return {
            "embedded": True,
            "method": self.method,
            "payload": {
                "version": self.payload.version,
                "issuer_id": self.payload.issuer_id,
                "content_id": f"{self.payload.content_id:012x}",
            },
        }


def ingredient_from(source: str | os.PathLike[str] | bytes | Image.Image) -> Ingredient:
    """An init image as a ``parentOf`` ingredient: a file keeps its bytes (and its manifest).

    Raises:
        ManifestError: the file cannot be read or is not PNG, JPEG or WebP (pixels are then
            re-encoded as PNG instead, see :class:`Ingredient`).
    """
    if isinstance(source, Image.Image):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        return Ingredient(buffer.getvalue(), "image/png", "init image")
    if isinstance(source, bytes):
        data, title = source, "init image"
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ManifestError(f"cannot read {source}: {exc.strerror}", path=str(source)) from exc
        title = os.path.basename(os.fspath(source))
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = (image.format or "").lower()
            if fmt not in MIME_TYPES:
                return ingredient_from(image.copy())
    except OSError as exc:
        raise ManifestError(f"{title} is not an image", path=title) from exc
    return Ingredient(data, MIME_TYPES[fmt], title)


class Stamper:
    """Watermarks and signs images for one signer.

    Args:
        credentials: who signs; default :func:`provenance.credentials.default_credentials`
            (your ``SDKIT_SIGNING_CERT`` / ``SDKIT_SIGNING_KEY``, else development credentials,
            created once), loaded at first use.
        store: a :class:`ManifestStore` or the path of one: every signed manifest is kept there
            under its watermark payload, so stripped copies can be re-linked.
        training_mining: the ``cawg.training-mining`` uses to state (default: generative AI
            training ``notAllowed``).
        thumbnail: long edge of a C2PA thumbnail in pixels; 0 (default) for none.
        watermark: embed the invisible watermark (default True).
    """

    def __init__(
        self,
        credentials: Credentials | None = None,
        *,
        store: ManifestStore | str | os.PathLike[str] | None = None,
        training_mining: Mapping[str, str] | None = None,
        thumbnail: int = 0,
        watermark: bool = True,
    ) -> None:
        training_mining_entries(training_mining)  # fail early on a bad value
        if thumbnail < 0:
            raise ManifestError("thumbnail must be 0 (none) or a long edge in pixels")
        self._credentials = credentials
        self._lock = threading.Lock()
        self.store = ManifestStore(store) if isinstance(store, (str, os.PathLike)) else store
        self.training_mining = dict(training_mining or {})
        self.thumbnail = thumbnail
        self.use_watermark = watermark

    @property
    def credentials(self) -> Credentials:
        """The signing credentials (loaded, or created, at first use)."""
        with self._lock:
            if self._credentials is None:
                from .credentials import default_credentials

                self._credentials = default_credentials()
            return self._credentials

    @property
    def issuer_id(self) -> int:
        """16 bits naming the signer in watermark payloads: from the signing certificate."""
        first = self.credentials.certificate_chain.split(b"-----END CERTIFICATE-----")[0]
        return int.from_bytes(hashlib.sha256(first).digest()[:2], "big")

    def watermark(
        self, image: Image.Image, payload: Payload | None = None
    ) -> tuple[Image.Image, WatermarkRecord]:
        """Embed a fresh payload (or ``payload``) in ``image``; small images are left as they are.

        Returns:
            The watermarked image (or ``image`` itself) and the record for the manifest.
        """
        if not self.use_watermark:
            return image, WatermarkRecord(False, reason="turned off (watermark=False)")
        if min(image.size) < MIN_SIDE:
            reason = (
                f"image too small: {image.width}x{image.height}, the watermark needs at least "
                f"{MIN_SIDE} px on each side"
            )
            return image, WatermarkRecord(False, reason=reason)
        payload = payload or Payload.random(issuer_id=self.issuer_id)
        return embed(image, payload), WatermarkRecord(True, DEFAULT_METHOD, payload)

    def sign(
        self,
        data: bytes,
        fmt: str,
        *,
        title: str,
        record: WatermarkRecord,
        recipe: Mapping[str, Any] | None = None,
        parent: Ingredient | None = None,
    ) -> bytes:
        """Sign encoded image bytes: fingerprint the pixels, build the manifest, sign, store.

        Args:
            data: the encoded image (PNG, JPEG or WebP), metadata already written.
            fmt: ``"png"``, ``"jpeg"`` or ``"webp"``.
            title: the file name recorded in the manifest.
            record: what :meth:`watermark` did.
            recipe: the Recipe as a JSON object.
            parent: the init image of an img2img / inpaint result.

        Raises:
            SigningError: the credentials cannot sign.
        """
        with Image.open(io.BytesIO(data)) as decoded:
            print_ = fp.fingerprint(decoded)
        definition = build_definition(
            title=title,
            software_version=_version(),
            recipe=recipe,
            watermark=record.to_assertion(),
            fingerprint={"algorithm": fp.ALGORITHM, "value": print_},
            training_mining=self.training_mining,
            edited=parent is not None,
        )
        signed, manifest = sign_asset(
            data, fmt, definition, self.credentials, parent=parent, thumbnail=self.thumbnail
        )
        if self.store is not None and record.payload is not None:
            self.store.put(record.payload, manifest, fingerprint=print_, title=title)
        return signed
