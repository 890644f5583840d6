"""Models that can be loaded without network: the default, the hub cache, folders and files.

``sdkit models`` lists them; every entry names what to pass as ``model``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._json import read_json
from .models import DEFAULT_MODEL_DIR, DEFAULT_MODEL_ID, hub_cache_dir

__all__ = ["LocalModel", "list_local_models"]


@dataclass(frozen=True)
class LocalModel:
    """A model that can be loaded without network.

    Attributes:
        name: what to pass as ``model`` (hub id or path).
        kind: ``"default"``, ``"hub-cache"``, ``"folder"`` or ``"single_file"``.
        family: ``"sd"``, ``"sdxl"``, a single-file family name, or ``"unknown"``.
        size_bytes: bytes on disk.
        location: the folder or file.
    """

    name: str
    kind: str
    family: str
    size_bytes: int
    location: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "family": self.family,
            "size_bytes": self.size_bytes,
            "location": self.location,
        }


def list_local_models(
    dirs: Iterable[str | os.PathLike[str]] = (),
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[LocalModel]:
    """List models loadable offline: the default, the hub cache, and ``dirs`` (two levels deep)."""

    found: list[LocalModel] = []
    if (DEFAULT_MODEL_DIR / "model_index.json").is_file():
        found.append(_folder_entry(DEFAULT_MODEL_DIR, DEFAULT_MODEL_ID, "default"))
    found.extend(_hub_cache_models(hub_cache_dir(cache_dir)))
    for root in dirs:
        for path in _walk(Path(root), depth=2):
            if path.is_dir() and (path / "model_index.json").is_file():
                found.append(_folder_entry(path, str(path), "folder"))
            elif path.is_file() and path.suffix == ".safetensors":
                found.append(
                    LocalModel(
                        str(path), "single_file", _file_family(path), path.stat().st_size, str(path)
                    )
                )
    return found


def _walk(root: Path, depth: int) -> Iterator[Path]:
    if not root.exists():
        return
    yield root
    if depth == 0 or not root.is_dir() or (root / "model_index.json").is_file():
        return
    for child in sorted(root.iterdir()):
        if not child.name.startswith("."):
            yield from _walk(child, depth - 1)


def _folder_entry(folder: Path, name: str, kind: str) -> LocalModel:
    try:
        index = read_json(folder / "model_index.json")
        family = "sdxl" if isinstance(index, dict) and "text_encoder_2" in index else "sd"
    except ValueError:
        family = "unknown"
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return LocalModel(name, kind, family, size, str(folder))


def _file_family(path: Path) -> str:
    try:
        from ._single_file import detect_family, read_checkpoint_header

        return detect_family(read_checkpoint_header(path))
    except Exception:  # any unreadable file is listed as unknown, not fatal
        return "unknown"


def _hub_cache_models(cache: Path) -> list[LocalModel]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache)
    except (CacheNotFound, OSError, ValueError):
        return []
    found: list[LocalModel] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            names = {f.file_name for f in revision.files}
            if "model_index.json" in names:
                entry = _folder_entry(Path(revision.snapshot_path), repo.repo_id, "hub-cache")
                found.append(
                    LocalModel(
                        repo.repo_id, "hub-cache", entry.family, repo.size_on_disk, entry.location
                    )
                )
                break
    return found
