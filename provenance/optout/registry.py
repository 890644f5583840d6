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
from .localfile import read_regular_file

__all__ = ["MATCH_DISTANCE", "OptOutRegistry", "RegistryEntry", "RegistryMatch", "image_hashes"]

#: A query matches a registered work at this distance or less (bits of 64; see the docstring).
MATCH_DISTANCE = 10
#: Crops stored per work: fraction cut from (start, end) of each axis.
_SPLITS = ((0.0, 0.0), (0.0, 0.05), (0.05, 0.0), (0.025, 0.025))
_HASH_SIDE = 256  # images are reduced to this long side before hashing (hashes use 32 px)
_MIN_STD = 2.0  # luminance standard deviation below which an image is too flat to hash
_MAX_FILE = 256 * 1024 * 1024  # bytes of an image file read at most
_COLUMNS = ("id", "label", "source", "phash", "added", "hashes")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS works (id INTEGER PRIMARY KEY, label TEXT NOT NULL, source TEXT NOT NULL,"
    " phash TEXT NOT NULL, added TEXT NOT NULL, hashes BLOB NOT NULL)"
)
_SCHEMA_VERSION = 1  # PRAGMA user_version of a registry (0: made before it was set)

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
    """A PIL image from a path (a regular file only, at most ``_MAX_FILE`` bytes) or bytes.

    Raises:
        OptOutError: not readable as an image, whatever Pillow raised on it.
    """
    if isinstance(image, Image.Image):
        return image
    name = "image bytes" if isinstance(image, bytes) else str(image)
    data = image if isinstance(image, bytes) else read_regular_file(Path(image), _MAX_FILE)
    try:
        if isinstance(data, str):
            raise OSError(data)
        with Image.open(io.BytesIO(data)) as opened:
            opened.draft("RGB", (_HASH_SIDE, _HASH_SIDE))  # JPEG: decode at a reduced size
            return opened.convert("RGB")
    except Exception as exc:  # Pillow's plugins raise many kinds on hostile files
        text = "not a format Pillow knows" if isinstance(exc, UnidentifiedImageError) else exc
        raise OptOutError(
            f"cannot read {name} as an image: {text}",
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
        self._db: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            _prepare(self._db)
            rows = self._db.execute("SELECT id, hashes FROM works ORDER BY id").fetchall()
            stacked = _stack_hashes(rows)
        except (sqlite3.Error, ValueError) as exc:
            if self._db is not None:
                self._db.close()
            raise OptOutError(
                f"cannot use {self.path} as an opt-out registry: {exc}",
                path=self.path,
                hint="give the file that `sdkit optout registry add` created, or a new path.",
            ) from exc
        self._ids = np.array([r[0] for r in rows], dtype=np.int64)
        self._phash = np.ascontiguousarray(stacked[:, :, 0])  # (works, crops)
        self._dhash = np.ascontiguousarray(stacked[:, :, 1])

    def __enter__(self) -> OptOutRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database (idempotent)."""
        if self._db is not None:
            self._db.close()

    @property
    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None  # set in __init__, or __init__ raised
        return self._db

    def _failed(self, exc: sqlite3.Error, doing: str) -> OptOutError:
        return OptOutError(
            f"cannot {doing} {self.path}: {exc}",
            path=self.path,
            hint="check that the registry file is writable and not damaged or locked.",
        )

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
        try:
            with self._lock, self._conn:
                cursor = self._conn.execute(
                    "INSERT INTO works (label, source, phash, added, hashes) VALUES (?, ?, ?, ?, ?)",
                    (label, where, phash, added, hashes.tobytes()),
                )
        except sqlite3.Error as exc:
            raise self._failed(exc, "add to") from exc
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
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT id, label, source, phash, added FROM works WHERE id = ?", (entry_id,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise self._failed(exc, "read") from exc
        if row is None:
            raise OptOutError(
                f"registered work #{entry_id} is gone from {self.path}",
                path=self.path,
                hint="the registry changed while it was open: open it again.",
            )
        return RegistryEntry(*row)

    def entries(self) -> Iterator[RegistryEntry]:
        """Every registered work, oldest first.

        Raises:
            OptOutError: the database cannot be read.
        """
        try:
            rows = self._conn.execute(
                "SELECT id, label, source, phash, added FROM works ORDER BY id"
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._failed(exc, "read") from exc
        for row in rows:
            yield RegistryEntry(*row)


def _prepare(db: sqlite3.Connection) -> None:
    """Create the schema in an empty database, or check that it is a registry's.

    Raises:
        ValueError: the database holds something else (another program's tables, a
            ``works`` table with other columns, a schema version from a newer sdkit).
        sqlite3.Error: the file is not an SQLite database, or it is damaged.
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables and version == 0:  # new (or empty): make it a registry
        with db:
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        return
    if version not in (0, _SCHEMA_VERSION):  # 0: made by sdkit before the version was set
        raise ValueError(f"its schema version is {version}, this sdkit reads {_SCHEMA_VERSION}")
    if "works" not in tables:
        raise ValueError(f"it has no 'works' table (it has {', '.join(sorted(tables))})")
    columns = [r[1] for r in db.execute("PRAGMA table_info(works)")]
    if columns != list(_COLUMNS):
        raise ValueError(
            f"its 'works' table has the columns {', '.join(columns)}, not {', '.join(_COLUMNS)}"
        )


def _stack_hashes(rows: list[tuple[Any, Any]]) -> np.ndarray:
    """``(works, crops, 2)`` uint64 hashes from the rows' blobs, each checked for its size.

    Raises:
        ValueError: an id is not an integer or a blob is not the 16 crops' hashes.
    """
    size = len(_SPLITS) ** 2 * 2 * 8
    for entry_id, blob in rows:
        if not isinstance(entry_id, int) or not isinstance(blob, bytes) or len(blob) != size:
            what = f"{len(blob)} bytes" if isinstance(blob, bytes) else type(blob).__name__
            raise ValueError(f"work #{entry_id}'s hashes are {what}, not {size} bytes")
    if not rows:
        return np.zeros((0, len(_SPLITS) ** 2, 2), np.uint64)
    return np.stack([np.frombuffer(blob, dtype=np.uint64).reshape(-1, 2) for _, blob in rows])
