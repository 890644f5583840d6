"""The add-ons a prompt brings: LoRAs (``loras=`` and ``<lora:…>`` tags) and embeddings.

One :class:`PromptAddons` per Generator holds its :class:`~sdkit.addons.lora.LoraSet` and
:class:`~sdkit.addons.embeddings.EmbeddingSet`; :meth:`PromptAddons.prepare` reads a call's
tags, finds, checks and loads what it names (raising before any denoising), applies the LoRA
set, and returns the text to encode and the :class:`~sdkit.addons.AddonRecord` of each add-on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._attention import extract_lora_tags
from ._record import AddonRecord
from .embeddings import EmbeddingSet
from .lora import LoraSet, LoraWeights, weights_of

__all__ = ["PreparedPrompt", "PromptAddons"]


@dataclass(frozen=True)
class PreparedPrompt:
    """A call's prompt with its ``<lora:…>`` tags removed, and what the Recipe records."""

    text: str
    records: tuple[AddonRecord, ...]


class PromptAddons:
    """LoRAs and embeddings of one pipeline (see the module docstring)."""

    def __init__(
        self,
        pipe: Any,
        *,
        lora_dirs: tuple[Path, ...],
        embedding_dirs: tuple[Path, ...],
        allow_pickle: bool = False,
    ) -> None:
        self.loras = LoraSet(pipe, lora_dirs, allow_pickle=allow_pickle)
        self.embeddings = EmbeddingSet(pipe, embedding_dirs, allow_pickle=allow_pickle)

    def prepare(
        self,
        prompt: str,
        negative_prompt: str,
        loras: Mapping[str, object] | None,
        *,
        fuse: bool = False,
    ) -> PreparedPrompt:
        """Resolve, check and load the call's add-ons, apply its LoRA set; see the module doc.

        Raises:
            AddonNotFoundError: a LoRA or embedding name found in no folder (close names listed).
            AddonError: a file that is not that add-on, or made for another model family.
            InvalidOptionError: a malformed tag or weight.
        """
        text, tags = extract_lora_tags(prompt)
        wanted: dict[str, LoraWeights] = {
            name: weights_of(weight, name) for name, weight in (loras or {}).items()
        }
        for name, te, unet in tags:
            wanted.pop(name, None)
            wanted[name] = LoraWeights(unet=unet, te=te)
        tagged = {t[0] for t in tags}  # written in the prompt: names in the folders only
        active = [
            (self.loras.resolve(name, paths=name not in tagged), weights)
            for name, weights in wanted.items()
        ]
        used = self.embeddings.used([text, negative_prompt])
        self.loras.apply(active, fuse=fuse)
        records = self.loras.records(active, fuse=fuse, tagged={t[0] for t in tags})
        return PreparedPrompt(text, (*records, *(e.record() for e in used)))

    def restore(self, records: Sequence[AddonRecord]) -> None:
        """Load the LoRAs and embeddings a Recipe names, each checked against its SHA-256.

        Raises:
            AddonNotFoundError: a file is in none of the folders.
            AddonError: a file of that name is not the one recorded.
        """
        for record in records:
            if record.kind == "lora":
                self.loras.ensure(record.name, record.sha256)
            elif record.kind == "embedding":
                self.embeddings.ensure(record.name, record.sha256)
