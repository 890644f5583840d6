"""Replay: re-render an image from the Recipe it carries and check that the pixels match.

The Recipe comes from the file's C2PA manifest (``org.sdkit.recipe``), or, for files whose
manifest is gone, from the A1111 infotext. The re-rendered image gets the same watermark
payload as the original (from the manifest), so a PNG replayed on the same kind of device
matches bit for bit; JPEG and WebP files are compared after encoding the replay the way sdkit
encodes (quality 95), then by PSNR.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Unpack

import numpy as np
from PIL import Image

from provenance.errors import ProvenanceError
from provenance.manifest import WATERMARK_LABEL, find_assertion
from provenance.verify import verify
from provenance.watermark import Payload

from .errors import AddonError, RecipeParseError, ReplayError, SdkitError
from .images import FORMATS, GeneratedImage, GenerationResult, encode_image
from .options import CallOptions, GenerationOptions, ImageInput
from .recipe import Recipe

__all__ = ["MATCH_PSNR_DB", "Renders", "ReplayResult", "replay"]

MATCH_PSNR_DB = 40.0  # lossy files: a replay this close differs only by encoding


class Renders(Protocol):
    """What :func:`replay` needs of a :class:`sdkit.Generator`: its model's hash, and a call."""

    @property
    def model_sha256(self) -> str: ...

    def __call__(self, prompt: str, **options: Unpack[CallOptions]) -> GenerationResult: ...


@dataclass(frozen=True)
class ReplayResult:
    """How a re-rendered image compares with the file.

    Attributes:
        matches: the replay reproduces the file (exactly, or within encoding noise for JPEG
            and WebP: PSNR >= 40 dB).
        exact: every pixel is identical.
        max_abs_diff: largest difference of one channel of one pixel (0 .. 255).
        psnr_db: PSNR of the replay against the file (``inf`` when exact).
        recipe: the Recipe that was replayed.
        recipe_source: ``"manifest"`` or ``"infotext"``.
        image: the re-rendered image.
    """

    matches: bool
    exact: bool
    max_abs_diff: int
    psnr_db: float
    recipe: Recipe = field(repr=False)
    recipe_source: str
    image: GeneratedImage = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "matches": self.matches,
            "exact": self.exact,
            "max_abs_diff": self.max_abs_diff,
            "psnr_db": self.psnr_db,
            "recipe_source": self.recipe_source,
            "recipe": self.recipe.to_dict(),
        }


def replay(
    generator: Renders,
    source: str | os.PathLike[str] | bytes,
    *,
    init_image: ImageInput | None = None,
    mask: ImageInput | None = None,
) -> ReplayResult:
    """See :meth:`sdkit.Generator.replay`."""
    name = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        report = verify(data, check_watermark=False)
    except OSError as exc:
        raise ReplayError(f"cannot read {name}: {exc.strerror}", path=name) from exc
    except ProvenanceError as exc:
        raise ReplayError(exc.message.replace("<bytes>", name), path=name, hint=exc.hint) from exc
    recipe, origin = _recipe(report.recipe, report.infotext, name)
    if recipe.model_sha256 != generator.model_sha256:
        raise ReplayError(
            f"{name} was made with another model ({recipe.model}, sha256 "
            f"{recipe.model_sha256[:12]}…); this Generator holds {generator.model_sha256[:12]}…",
            path=name,
            hint=f"load {recipe.model!r} and replay with that Generator.",
        )
    if recipe.mode != "txt2img" and init_image is None:
        raise ReplayError(
            f"{name} is an {recipe.mode} result: replaying needs the image it started from",
            path=name,
            hint="pass init_image=... (and mask=... for inpaint).",
        )
    payload = _payload(report.manifest, name)
    _restore_addons(generator, recipe, name)
    try:
        options = GenerationOptions.from_recipe(
            recipe,
            init_image=init_image,
            mask=mask,
            watermark_payloads=None if payload is None else [payload],
        )
        result = generator(recipe.prompt, **options.as_kwargs())
    except SdkitError as exc:
        raise ReplayError(f"cannot replay {name}: {exc.message}", path=name) from exc
    image = result.image
    if recipe.init_image_sha256 and image.recipe.init_image_sha256 != recipe.init_image_sha256:
        raise ReplayError(
            f"the init image given is not the one {name} was made from",
            path=name,
            hint="pass the exact image the Recipe records (its sha256 is in the Recipe).",
        )
    with Image.open(io.BytesIO(data)) as opened:
        fmt = (opened.format or "png").lower()
        original = np.asarray(opened.convert("RGB"), dtype=np.int16)
    replayed = image.image
    if fmt in ("jpeg", "webp"):
        encoded = encode_image(replayed, FORMATS["." + fmt], infotext=None)
        replayed = Image.open(io.BytesIO(encoded)).convert("RGB")
    ours = np.asarray(replayed, dtype=np.int16)
    if ours.shape != original.shape:
        raise ReplayError(
            f"the replay is {ours.shape[1]}x{ours.shape[0]}, {name} is "
            f"{original.shape[1]}x{original.shape[0]}: the file was resized",
            path=name,
        )
    diff = np.abs(ours - original)
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    exact = int(diff.max()) == 0
    return ReplayResult(
        matches=exact or psnr >= MATCH_PSNR_DB,
        exact=exact,
        max_abs_diff=int(diff.max()),
        psnr_db=psnr,
        recipe=recipe,
        recipe_source=origin,
        image=image,
    )


def _restore_addons(generator: Renders, recipe: Recipe, name: str) -> None:
    """Load the LoRAs and embeddings the Recipe names, checking each file's SHA-256."""
    addons = getattr(generator, "prompt_addons", None)
    if addons is None or not recipe.addons:
        return
    try:
        addons.restore(recipe.addons)
    except AddonError as exc:
        raise ReplayError(f"cannot replay {name}: {exc.message}", path=name, hint=exc.hint) from exc


def _recipe(data: dict[str, Any] | None, infotext: str | None, name: str) -> tuple[Recipe, str]:
    # Both come from the file: every field is checked, and a bad one is a RecipeParseError
    # naming the file and the field.
    try:
        if data is not None:
            return Recipe.from_dict(data), "manifest"
        if infotext is not None:
            return Recipe.from_infotext(infotext), "infotext"
    except RecipeParseError as exc:
        source = "manifest" if data is not None else "infotext"
        raise RecipeParseError(
            f"the Recipe in {name}'s {source} cannot be read: {exc.message}",
            field=exc.field,
            path=name,
            hint="the file's Recipe was altered or written by another tool; it cannot be replayed.",
        ) from exc
    raise ReplayError(
        f"{name} carries no Recipe (no sdkit manifest, no generation parameters)",
        path=name,
        hint="only images sdkit (or A1111-compatible tools) wrote can be replayed.",
    )


def _payload(manifest: dict[str, Any] | None, name: str) -> Payload | None:
    # The watermark assertion as provenance.stamp writes it: content_id as 12 hex digits,
    # issuer_id and version as integers. Anything else is refused, not raised on.
    claimed = find_assertion(manifest, WATERMARK_LABEL)
    if not isinstance(claimed, dict) or not claimed.get("embedded"):
        return None
    fields = claimed.get("payload")
    try:
        if not isinstance(fields, dict):
            raise ValueError(fields)
        content_id = fields["content_id"]
        if not isinstance(content_id, str) or not 0 < len(content_id) <= 12:
            raise ValueError(content_id)
        return Payload(
            content_id=int(content_id, 16),
            issuer_id=fields["issuer_id"],
            version=fields["version"],
        )
    except (KeyError, ValueError, ProvenanceError):
        raise ReplayError(
            f"the watermark assertion in {name}'s manifest is malformed",
            path=name,
            hint="the manifest was not written by sdkit; the file cannot be replayed exactly.",
        ) from None
