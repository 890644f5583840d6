"""A local registry of opted-out works, matched by perceptual hash.

Creators (or a dataset's maintainers on their behalf) register images; a checked image that is
the same picture, even resized, re-encoded or slightly cropped, is found again.

How a match is decided: each registered image is stored as 16 crops of itself (per axis: none,
5% off the start, 5% off the end, 2.5% off both; so any crop of up to 5% per axis is near one
of them), each with two 64-bit hashes from imagehash: the DCT hash (``phash``) and the
difference hash (``dhash``). A query's distance to a registered work is, over its 16 crops, the
smallest ``max(phash distance, dhash distance)`` in bits; it matches at
:data:`MATCH_DISTANCE` or less. Measured (tests/test_optout_registry.py and docs/optout.md):
copies resized to 0.5x, saved as JPEG q70 or cropped by 5% score 0 to 2 (a 3% + 4% crop,
between the stored crops, up to 7); 1,000 unrelated images score 18 or more. Near-uniform images (almost no structure to hash) are refused.

Memory: 256 bytes per registered work. A lookup scans every stored phash with numpy (about
0.6 s per query with a million works on a 2-core machine), then compares the dhash only where
the phash is within reach: the registry suits up to about 10^5 works at dataset scale.

Example:
    >>> from PIL import Image
    >>> art = Image.effect_mandelbrot((256, 256), (-2.0, -1.5, 1.0, 1.5), 100).convert("RGB")
    >>> with OptOutRegistry(":memory:") as registry:
    ...     entry = registry.add(art, label="mandelbrot by A. Artist")
    ...     registry.match(art.resize((128, 128))).label
    'mandelbrot by A. Artist'
"""

from __future__ import annotations

import datetime as dt
import io
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import OptOutError

__all__ = ["MATCH_DISTANCE", "OptOutRegistry", "RegistryEntry", "RegistryMatch", "image_hashes"]

#: A query matches a registered work at this distance or less (bits of 64; see the docstring).
MATCH_DISTANCE = 10
#: Crops stored per work: fraction cut from (start, end) of each axis.
_SPLITS = ((0.0, 0.0), (0.0, 0.05), (0.05, 0.0), (0.025, 0.025))
_HASH_SIDE = 256  # images are reduced to this long side before hashing (hashes use 32 px)
_MIN_STD = 2.0  # luminance standard deviation below which an image is too flat to hash

ImageInput = str | os.PathLike[str] | bytes | Image.Image


@dataclass(frozen=True)
class RegistryEntry:
    """One registered work.

    Attributes:
        id: its number in the registry.
        label: who and what (free text, e.g. the creator and title).
        source: the file or URL it was registered from.
        phash: the DCT hash of the uncropped image (16 hex digits).
        added: when (UTC, ISO 8601).
    """

    id: int
    label: str
    source: str
    phash: str
    added: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class RegistryMatch:
    """A registered work that a query image matched.

    Attributes:
        entry: the work.
        distance: bits apart (0 .. 64), see the module docstring.
    """

    entry: RegistryEntry
    distance: int

    @property
    def label(self) -> str:
        """The work's label."""
        return self.entry.label

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"entry": self.entry.to_dict(), "distance": self.distance}


def _open(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    try:
        source = io.BytesIO(image) if isinstance(image, bytes) else Path(image)
        with Image.open(source) as opened:
            opened.draft("RGB", (_HASH_SIDE, _HASH_SIDE))  # JPEG: decode at a reduced size
            return opened.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        name = "image bytes" if isinstance(image, bytes) else str(image)
        raise OptOutError(
            f"cannot read {name} as an image: {exc}",
            path=None if isinstance(image, bytes) else name,
            hint="give a PNG, JPEG, WebP, GIF or TIFF file.",
        ) from exc


def _reduce(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    if max(image.size) > _HASH_SIDE:
        image = image.copy()
        image.thumbnail((_HASH_SIDE, _HASH_SIDE), Image.Resampling.LANCZOS)
    return image


def _pair(image: Image.Image) -> tuple[int, int]:
    return int(str(imagehash.phash(image, 8)), 16), int(str(imagehash.dhash(image, 8)), 16)


def image_hashes(image: Image.Image, *, crops: bool = False) -> np.ndarray:
    """``(n, 2)`` uint64 array of (phash, dhash): the image itself, or its 16 stored crops."""
    reduced = _reduce(image)
    if not crops:
        return np.array([_pair(reduced)], dtype=np.uint64)
    w, h = reduced.size
    rows = []
    for left, right in _SPLITS:
        for top, bottom in _SPLITS:
            box = (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
            rows.append(_pair(reduced.crop(box)))
    return np.array(rows, dtype=np.uint64)


class OptOutRegistry:
    """SQLite file of opted-out works and their hashes.

    Args:
        path: the database file (created if missing), or ``":memory:"``.

    Raises:
        OptOutError: the file exists but is not a registry, or cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._lock = threading.Lock()  # checks run in worker threads
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS works (id INTEGER PRIMARY KEY, label TEXT NOT NULL,"
                " source TEXT NOT NULL, phash TEXT NOT NULL, added TEXT NOT NULL, hashes BLOB NOT NULL)"
            )
            rows = self._db.execute("SELECT id, hashes FROM works ORDER BY id").fetchall()
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "_db"):
                self._db.close()
            raise OptOutError(
                f"cannot use {self.path} as an opt-out registry: {exc}",
                path=self.path,
                hint="give the file that `sdkit optout registry add` created, or a new path.",
            ) from exc
        self._ids = np.array([r[0] for r in rows], dtype=np.int64)
        blobs = [np.frombuffer(r[1], dtype=np.uint64).reshape(-1, 2) for r in rows]
        stacked = np.stack(blobs) if blobs else np.zeros((0, len(_SPLITS) ** 2, 2), np.uint64)
        self._phash = np.ascontiguousarray(stacked[:, :, 0])  # (works, crops)
        self._dhash = np.ascontiguousarray(stacked[:, :, 1])

    def __enter__(self) -> OptOutRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database (idempotent)."""
        self._db.close()

    def __len__(self) -> int:
        return len(self._ids)

    def add(
        self, image: ImageInput, *, label: str = "", source: str | None = None
    ) -> RegistryEntry:
        """Register a work.

        Args:
            image: a file path, encoded bytes or a PIL image.
            label: who and what, kept with the entry.
            source: where it came from (default: the path given).

        Raises:
            OptOutError: the image cannot be read or is too flat to be told apart.
        """
        opened = _open(image)
        reduced = _reduce(opened)
        if float(np.asarray(reduced.convert("L"), dtype=np.float32).std()) < _MIN_STD:
            raise OptOutError(
                "this image is almost uniform: its hash would match many unrelated images",
                hint="register the work itself, not a blank or single-colour image.",
            )
        hashes = image_hashes(reduced, crops=True)
        phash = f"{int(hashes[0, 0]):016x}"
        where = source or (str(image) if isinstance(image, (str, os.PathLike)) else "")
        added = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT INTO works (label, source, phash, added, hashes) VALUES (?, ?, ?, ?, ?)",
                (label, where, phash, added, hashes.tobytes()),
            )
        entry_id = int(cursor.lastrowid or 0)
        self._ids = np.append(self._ids, entry_id)
        self._phash = np.concatenate([self._phash, hashes[None, :, 0]])
        self._dhash = np.concatenate([self._dhash, hashes[None, :, 1]])
        return RegistryEntry(entry_id, label, where, phash, added)

    def match(
        self, image: ImageInput, *, max_distance: int = MATCH_DISTANCE
    ) -> RegistryMatch | None:
        """The registered work nearest to ``image`` within ``max_distance``, or None.

        Raises:
            OptOutError: the image cannot be read.
        """
        if not len(self._ids):
            return None
        phash, dhash = image_hashes(_open(image))[0]
        # the phash alone first: only crops within reach need their dhash compared
        near = np.bitwise_count(self._phash ^ phash)
        works, crops = np.nonzero(near <= max_distance)
        if not len(works):
            return None
        both = np.maximum(near[works, crops], np.bitwise_count(self._dhash[works, crops] ^ dhash))
        best = int(np.argmin(both))
        distance = int(both[best])
        if distance > max_distance:
            return None
        return RegistryMatch(self._entry(int(self._ids[works[best]])), distance)

    def _entry(self, entry_id: int) -> RegistryEntry:
        with self._lock:
            row = self._db.execute(
                "SELECT id, label, source, phash, added FROM works WHERE id = ?", (entry_id,)
            ).fetchone()
        return RegistryEntry(*row)

    def entries(self) -> Iterator[RegistryEntry]:
        """Every registered work, oldest first."""
        for row in self._db.execute(
            "SELECT id, label, source, phash, added FROM works ORDER BY id"
        ):
            yield RegistryEntry(*row)
