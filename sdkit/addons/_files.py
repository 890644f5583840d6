"""Add-on files on disk: the folders searched, a name resolved in them, their hashes.

A1111 and ComfyUI users keep LoRAs and embeddings in folders and call them by file stem
(``<lora:film_grain:0.7>``, ``easynegative``). :func:`find` resolves such a name (or a path)
to one file, searching sub-folders as A1111 does; a name found nowhere is an
:class:`~sdkit.errors.AddonNotFoundError` that lists the names spelt nearly the same
(``difflib``). Hashes are computed once per file (keyed by path, size and modification time):
the SHA-256 of the whole file that Recipes and manifests keep, and A1111's short hashes.

A1111's short hashes (AUTOMATIC1111/stable-diffusion-webui, ``modules/hashes.py``
``addnet_hash_safetensors``; ``extensions-builtin/Lora/network.py`` ``NetworkOnDisk.set_hash``:
``shorthash = hash[0:12]``, the ``sshs_model_hash`` metadata first when a trainer wrote one):

* LoRA ``.safetensors``: SHA-256 of the bytes after the header (the tensor data, so editing the
  metadata keeps it), first 12 hex digits; other LoRA files: the file's SHA-256, 12 digits;
* embeddings: the file's SHA-256, first 12 hex digits (``modules/textual_inversion``);
* VAE: the file's SHA-256, first 10 hex digits (``modules/sd_vae.py``).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import AddonError, AddonNotFoundError

__all__ = [
    "PICKLE_SUFFIXES",
    "addnet_sha256",
    "file_sha256",
    "find",
    "folders",
    "listing",
]

#: Suffixes whose loading runs pickle (refused unless ``allow_pickle=True``).
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
MAX_FILES = 20_000  # files listed per folder tree: a name search stays bounded
_CHUNK = 1 << 20
_HASHES: dict[tuple[str, str, int, int], str] = {}


def folders(
    given: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None, env: str
) -> tuple[Path, ...]:
    """The folders to search: ``given`` (one or several), else ``$env`` (``os.pathsep``-separated).

    Example:
        >>> folders(["/a", "/b"], "SDKIT_NONE")
        (PosixPath('/a'), PosixPath('/b'))
    """
    if given is None:
        text = os.environ.get(env, "")
        return tuple(Path(p).expanduser() for p in text.split(os.pathsep) if p.strip())
    if isinstance(given, (str, os.PathLike)):
        given = [given]
    return tuple(Path(os.fspath(p)).expanduser() for p in given)


def listing(dirs: Sequence[Path], suffixes: Sequence[str]) -> dict[str, Path]:
    """Every add-on file (or diffusers folder, for ``"/"`` in ``suffixes``) by name, first wins.

    A file's name is its stem; a folder holding ``pytorch_lora_weights.safetensors`` (diffusers'
    LoRA layout) is named by the folder.
    """
    found: dict[str, Path] = {}
    seen = 0
    for top in dirs:
        if not top.is_dir():
            continue
        for root, subdirs, files in os.walk(top):
            subdirs.sort()
            here = Path(root)
            if "/" in suffixes and "pytorch_lora_weights.safetensors" in files and here != top:
                found.setdefault(here.name, here)
            for file in sorted(files):
                seen += 1
                if seen > MAX_FILES:
                    return found
                path = here / file
                if "/" in suffixes and file == "pytorch_lora_weights.safetensors":
                    continue  # its folder is the LoRA
                if path.suffix.lower() in suffixes and not file.startswith("."):
                    found.setdefault(path.stem, path)
    return found


def find(
    name: str, dirs: Sequence[Path], suffixes: Sequence[str], kind: str, *, paths: bool = True
) -> Path:
    """One add-on file: ``name`` as a path, or a file stem (sub-folders searched) in ``dirs``.

    ``paths=False`` (names written in a prompt, which an app's users may control) accepts only
    names found in ``dirs``, as A1111 does: a prompt cannot make sdkit open a file elsewhere.

    Raises:
        AddonNotFoundError: no such file; ``close`` lists names spelt nearly the same.
    """
    if not isinstance(name, str) or not name or len(name) > 4096 or "\0" in name:
        raise AddonNotFoundError(
            f"{kind} name {str(name)[:80]!r} is not a name", kind=kind, source=str(name)[:80],
            hint="name a file stem in the add-on folders, or give a path.",
        )  # fmt: skip
    direct = Path(name).expanduser()
    if paths and (os.sep in name or direct.suffix.lower() in suffixes) and direct.exists():
        return direct
    available = listing(dirs, suffixes)
    if name in available:
        return available[name]
    close = difflib.get_close_matches(name, list(available), n=5, cutoff=0.6)
    where = ", ".join(str(d) for d in dirs) or "no folder"
    shown = f"; close names: {', '.join(close)}" if close else ""
    env = "SDKIT_LORA_DIRS" if kind == "lora" else "SDKIT_EMBEDDING_DIRS"
    raise AddonNotFoundError(
        f"no {kind} named {name!r} in {where}{shown}",
        kind=kind,
        source=name,
        close=close,
        folders=dirs,
        hint=f"check the spelling, or add the folder that holds it ({kind}_dirs=, {env}); "
        "`sdkit models` lists what is found.",
    )


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (cached by path, size and modification time)."""
    return _cached(path, "file", lambda f: f.seek(0))


def addnet_sha256(path: Path) -> str:
    """A1111's LoRA hash of a ``.safetensors`` file: SHA-256 of the bytes after the header."""

    def skip_header(stream: BinaryIO) -> None:
        raw = stream.read(8)
        if len(raw) < 8:
            raise AddonError(
                f"{path.name} is too short for a .safetensors file", kind="lora", source=path
            )
        stream.seek(8 + struct.unpack("<Q", raw)[0])

    return _cached(path, "addnet", skip_header)


def _cached(path: Path, what: str, start: Callable[[BinaryIO], object]) -> str:
    try:
        stat = path.stat()
    except OSError as exc:
        raise AddonNotFoundError(
            f"cannot read {path}: {exc.strerror}", kind="addon", source=path
        ) from exc
    key = (what, str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            start(f)
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]
