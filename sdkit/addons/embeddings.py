"""Textual-inversion embeddings, A1111-style: a file's stem is a word of the prompt.

Put ``easynegative.safetensors`` in a folder of ``embedding_dirs=`` (or
``$SDKIT_EMBEDDING_DIRS``) and write ``easynegative`` in the prompt or the negative prompt. A
call loads the embeddings whose names appear in its texts (as whole words), once, with
diffusers' ``load_textual_inversion`` — for SDXL once per text encoder and tokenizer, with the
file's ``clip_l`` and ``clip_g`` vectors, as diffusers documents. sdkit's prompt encoder expands
the name into its vector tokens (diffusers' ``maybe_convert_prompt``) inside each weighted run,
so ``(easynegative:1.2)`` gives the embedding's tokens weight 1.2 (:mod:`sdkit.prompts`).

File forms read (A1111 ``modules/textual_inversion/textual_inversion.py``
``create_embedding_from_data``): ``emb_params`` (A1111's own ``.safetensors``),
``string_to_param: {"*": tensor}`` (A1111's ``.pt``), ``clip_l`` (+ ``clip_g`` for SDXL), or a
file of a single tensor. ``.safetensors`` is read by default; ``.pt`` / ``.bin`` only with
``allow_pickle=True``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._safetensors import read_safetensors_header
from ..errors import AddonError, ModelLoadError, UnsafeCheckpointError
from ._files import PICKLE_SUFFIXES, file_sha256, find, listing
from ._record import AddonRecord

__all__ = ["EMBEDDING_SUFFIXES", "EmbeddingFile", "EmbeddingSet", "read_embedding"]

EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
MAX_VECTORS = 75  # one chunk: A1111's embeddings are a few vectors


@dataclass(frozen=True)
class EmbeddingFile:
    """An embedding loaded into the pipeline.

    Attributes:
        name: its word in prompts (the file stem).
        path: the file.
        sha256: SHA-256 of the file (A1111's ``TI hashes`` show its first 12 hex digits).
        vectors: how many token vectors it adds.
        family: ``"SDXL"`` for ``clip_l`` + ``clip_g`` files, else ``"SD"``.
    """

    name: str
    path: Path
    sha256: str
    vectors: int
    family: str

    def record(self) -> AddonRecord:
        """What a Recipe keeps of it."""
        return AddonRecord(
            "embedding",
            self.name,
            self.sha256,
            source=self.path.name,  # the file name: no folder of the user in a manifest
            settings={"vectors": self.vectors},
            short_hash=self.sha256[:12],
        )


def read_embedding(path: Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The vectors of an embedding file: ``{"clip_l": t}`` (SD) or ``{"clip_l", "clip_g"}``.

    Raises:
        AddonError: not an embedding file (the message says what it holds).
        UnsafeCheckpointError: a pickle file without ``allow_pickle=True``.
    """
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise UnsafeCheckpointError(
                f"{path.name} is a pickle file: loading it can run code",
                source=path,
                hint="use the .safetensors version, or pass allow_pickle=True if you trust it.",
            )
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    else:
        try:
            read_safetensors_header(path)
        except ModelLoadError as exc:
            raise AddonError(exc.message, kind="embedding", source=path, hint=exc.hint) from exc
        from safetensors.torch import load_file

        data = load_file(str(path))
    if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):
        data = {"clip_l": data["string_to_param"].get("*")}
    elif isinstance(data, dict) and "emb_params" in data:
        data = {"clip_l": data["emb_params"]}
    elif isinstance(data, dict) and len(data) == 1 and "clip_g" not in data:
        data = {"clip_l": next(iter(data.values()))}
    elif isinstance(data, torch.Tensor):
        data = {"clip_l": data}
    vectors = (
        {k: v for k, v in data.items() if k in ("clip_l", "clip_g")}
        if isinstance(data, dict)
        else {}
    )
    good = vectors and all(
        isinstance(v, torch.Tensor)
        and v.ndim in (1, 2)
        and 0 < v.reshape(-1, v.shape[-1]).shape[0] <= MAX_VECTORS
        for v in vectors.values()
    )
    if not good or "clip_l" not in vectors:
        raise AddonError(
            f"{path.name} is not a textual-inversion embedding (expected emb_params, "
            "string_to_param, clip_l [+ clip_g] or one tensor of at most "
            f"{MAX_VECTORS} vectors)",
            kind="embedding",
            source=path,
            hint="a LoRA goes in lora_dirs=, a checkpoint in Generator(model=...).",
        )
    return {k: v.reshape(-1, v.shape[-1]).float() for k, v in vectors.items()}


class EmbeddingSet:
    """The embeddings in ``dirs``, loaded into one pipeline when a prompt first names them.

    Args:
        pipe: the diffusers pipeline (derived pipelines share its tokenizers and encoders).
        dirs: the folders searched (sub-folders too).
        allow_pickle: read ``.pt`` / ``.bin`` files.
    """

    def __init__(self, pipe: Any, dirs: Sequence[Path], *, allow_pickle: bool = False) -> None:
        self.pipe = pipe
        self.dirs = tuple(dirs)
        self.allow_pickle = allow_pickle
        self.loaded: dict[str, EmbeddingFile] = {}

    def available(self) -> dict[str, Path]:
        """Embedding files in :attr:`dirs`, by name."""
        return listing(self.dirs, EMBEDDING_SUFFIXES)

    def used(self, texts: Iterable[str]) -> list[EmbeddingFile]:
        """The embeddings named (as whole words) in ``texts``, loaded now if need be.

        Raises:
            AddonError: a file of that name is not an embedding, or not for this model.
        """
        joined = "\n".join(texts)
        names = set(self.loaded) | (set(self.available()) if self.dirs else set())
        found = [n for n in sorted(names) if _mentions(joined, n)]
        return [self.load(self.loaded[n].path if n in self.loaded else n, name=n) for n in found]

    def load(self, source: str | os.PathLike[str], *, name: str | None = None) -> EmbeddingFile:
        """Load one embedding (a path, or a name in :attr:`dirs`) under ``name`` (its stem).

        Raises:
            AddonError: not an embedding, or made for another text encoder.
            AddonNotFoundError: a name found in no folder.
        """
        path = Path(os.fspath(source)).expanduser()
        if not path.is_file():
            path = find(os.fspath(source), self.dirs, EMBEDDING_SUFFIXES, "embedding")
        word = name or path.stem
        sha = file_sha256(path)
        known = self.loaded.get(word)
        if known is not None:
            if known.sha256 == sha:
                return known
            self._unload(word)
        vectors = read_embedding(path, allow_pickle=self.allow_pickle)
        pairs = self._encoders(word, path, vectors)
        for (tokenizer, encoder), tensor in pairs:
            self.pipe.load_textual_inversion(
                tensor, token=word, tokenizer=tokenizer, text_encoder=encoder
            )
        family = "SDXL" if "clip_g" in vectors else "SD"
        loaded = EmbeddingFile(word, path, sha, int(vectors["clip_l"].shape[0]), family)
        self.loaded[word] = loaded
        return loaded

    def ensure(self, name: str, sha256: str) -> EmbeddingFile:
        """The embedding ``name`` whose file has ``sha256`` (a Recipe's), loaded.

        Raises:
            AddonNotFoundError: no file of that name in :attr:`dirs`.
            AddonError: the file of that name is another one (its SHA-256 differs).
        """
        known = self.loaded.get(name)
        if known is not None and known.sha256 == sha256:
            return known
        path = find(name, self.dirs, EMBEDDING_SUFFIXES, "embedding")
        found = file_sha256(path)
        if found != sha256:
            raise AddonError(
                f"{path} is not the embedding {name!r} the Recipe names: its sha256 is "
                f"{found[:12]}…, the Recipe's {sha256[:12]}…",
                kind="embedding",
                source=path,
                hint="put the file the picture was made with in embedding_dirs.",
            )
        return self.load(path, name=name)

    def _encoders(
        self, word: str, path: Path, vectors: dict[str, torch.Tensor]
    ) -> list[tuple[tuple[Any, Any], torch.Tensor]]:
        pipe = self.pipe
        pairs = [((pipe.tokenizer, pipe.text_encoder), vectors["clip_l"])]
        if getattr(pipe, "text_encoder_2", None) is not None:
            if "clip_g" not in vectors:
                raise AddonError(
                    f"the embedding {word!r} ({path.name}) is for SD 1.x/2.x: it has no "
                    "clip_g vectors for SDXL's second text encoder",
                    kind="embedding",
                    source=path,
                    hint="use an SDXL embedding (clip_l + clip_g) with an SDXL model.",
                )
            pairs.append(((pipe.tokenizer_2, pipe.text_encoder_2), vectors["clip_g"]))
        elif "clip_g" in vectors:
            raise AddonError(
                f"the embedding {word!r} ({path.name}) is for SDXL (clip_l + clip_g), "
                "this model has one text encoder",
                kind="embedding",
                source=path,
                hint="use an SD 1.x/2.x embedding with this model.",
            )
        for (tokenizer, encoder), tensor in pairs:
            width = int(encoder.get_input_embeddings().weight.shape[1])
            if tensor.shape[1] != width:
                raise AddonError(
                    f"the embedding {word!r} ({path.name}) has {tensor.shape[1]}-wide vectors, "
                    f"this model's text encoder takes {width} (768 SD 1.x, 1024 SD 2.x)",
                    kind="embedding",
                    source=path,
                    hint="use an embedding trained for this model's family.",
                )
            if tokenizer.convert_tokens_to_ids(word) != tokenizer.unk_token_id:
                raise AddonError(
                    f"{word!r} is already a word of the tokenizer's vocabulary",
                    kind="embedding",
                    source=path,
                    hint="rename the file: its stem becomes a new word of the prompt.",
                )
        return pairs

    def _unload(self, word: str) -> None:
        pipe = self.pipe
        pipe.unload_textual_inversion(
            word, tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder
        )
        if getattr(pipe, "text_encoder_2", None) is not None:
            pipe.unload_textual_inversion(
                word, tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2
            )
        del self.loaded[word]


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None
