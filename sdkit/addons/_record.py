"""What one add-on contributed to a picture: the leaf type every add-on module returns.

Every add-on that shaped a picture (a LoRA, a textual-inversion embedding, a VAE, a ControlNet
model and its control image, an upscaler, a refiner) is named by one :class:`AddonRecord`.
The Recipe keeps them in order; the C2PA manifest lists each as a ``componentOf`` ingredient
with its SHA-256; the infotext codec writes A1111's fields (``Lora hashes``, ``TI hashes``,
``VAE hash``, ``ControlNet 0``, ...) from them. This module imports nothing of sdkit, so that
every add-on module, the Recipe and the generator can import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ADDON_KINDS", "AddonKind", "AddonRecord", "SettingValue"]

AddonKind = Literal[
    "lora", "embedding", "vae", "controlnet", "control_image", "upscaler", "refiner"
]
ADDON_KINDS: tuple[AddonKind, ...] = (
    "lora",
    "embedding",
    "vae",
    "controlnet",
    "control_image",
    "upscaler",
    "refiner",
)

SettingValue = str | int | float | bool | None


@dataclass(frozen=True)
class AddonRecord:
    """One add-on as it was used for one picture.

    Attributes:
        kind: which sort of add-on (one of :data:`ADDON_KINDS`).
        name: the name a user calls it by (a LoRA's ``<lora:name>``, an embedding's word, a file
            stem, a hub id).
        sha256: lowercase hex SHA-256 of the bytes that were loaded (for a folder: of its weight
            file; for a control image: of the image file or of its pixels as given).
        source: where it was loaded from, as the user gave it (path or hub id); informative only.
        settings: what was applied with it (weights, scale, start/end, strength...), JSON scalars.
        short_hash: the hash A1111 writes for it in infotext when that is not a prefix of
            ``sha256`` (a LoRA's: of the tensor bytes, :mod:`sdkit.addons._files`); ``""``:
            the kind's prefix of ``sha256`` (:func:`provenance.infotext.addon_fields`).
    """

    kind: AddonKind
    name: str
    sha256: str
    source: str = ""
    settings: Mapping[str, SettingValue] = field(default_factory=dict)
    short_hash: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON form, as stored in a Recipe (``short_hash`` only when set)."""
        data: dict[str, object] = {
            "kind": self.kind,
            "name": self.name,
            "sha256": self.sha256,
            "source": self.source,
            "settings": dict(self.settings),
        }
        if self.short_hash:
            data["short_hash"] = self.short_hash
        return data
