"""The SHA-256 that names a model's weights, with a cache so a model is hashed once.

A single file's hash is A1111's (its first 10 hex digits are the "Model hash" in infotext);
a folder's is the hash of its files' hashes. File hashes are cached by (path, size, mtime) in
``hashes.json`` under :func:`provenance._fs.cache_dir` (``$SDKIT_CACHE``, default
``~/.cache/sdkit``), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from provenance._fs import cache_dir, write_atomic

__all__ = ["weights_sha256"]


def weights_sha256(files: Iterable[Path], *, root: Path | None = None) -> str:
    """SHA-256 that names a model's weights.

    One file: the file's SHA-256 (so A1111's short hash is its first 10 digits). Several files:
    the SHA-256 of the sorted lines ``"<relative path> <file sha256>"``. File hashes are cached
    by (path, size, mtime) in ``~/.cache/sdkit/hashes.json`` (``SDKIT_CACHE`` overrides).
    """
    paths = sorted(Path(f) for f in files)
    if not paths:
        return hashlib.sha256(b"").hexdigest()
    if len(paths) == 1:
        return _file_sha256(paths[0])
    base = root or Path(os.path.commonpath([str(p.parent) for p in paths]))
    lines = "".join(f"{p.relative_to(base).as_posix()} {_file_sha256(p)}\n" for p in paths)
    return hashlib.sha256(lines.encode()).hexdigest()


def _cache_root() -> Path:
    # $XDG_CACHE_HOME has never moved this cache (unlike the config folders'): kept so an
    # upgrade finds its hashes.
    return cache_dir(xdg=False)


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = _cache_root() / "hashes.json"
    try:
        cache: dict[str, str] = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    cache[key] = digest.hexdigest()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # private (0600), as it has always been: it lists the paths of the models used
        write_atomic(cache_file, json.dumps(cache).encode(), overwrite=True, mode=0o600)
    except OSError:
        pass  # a read-only home only costs re-hashing next time
    return cache[key]
