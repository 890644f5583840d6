"""A local manifest store: re-link files whose C2PA metadata was stripped.

Social networks and most editors drop C2PA metadata when they re-encode an image; the invisible
watermark survives. When a store is configured, every stamped file's manifest (the signed C2PA
manifest store bytes, exactly as embedded) is kept in SQLite under its watermark payload
(issuer id, content id). ``verify`` finds the watermark in a stripped copy, looks the payload
up, re-validates the stored manifest's signature and checks its perceptual fingerprint against
the pixels in hand.

The same image saved in several formats shares one payload: each file's manifest is kept, and
the lookup returns them all (the verifier picks the one whose fingerprint is nearest).

Example:
    >>> import tempfile, pathlib
    >>> from provenance.watermark import Payload
    >>> with ManifestStore(pathlib.Path(tempfile.mkdtemp()) / "m.db") as store:
    ...     store.put(Payload(content_id=5, issuer_id=1), b"manifest", fingerprint="00ff00ff00ff00ff")
    ...     [e.fingerprint for e in store.get(Payload(content_id=5, issuer_id=1))]
    ['00ff00ff00ff00ff']
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .errors import StoreError
from .watermark import Payload

__all__ = ["ManifestStore", "StoreError", "StoredManifest", "default_store_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifests (
    issuer_id   INTEGER NOT NULL,
    content_id  INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    manifest    BLOB    NOT NULL,
    sha256      TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    title       TEXT,
    stored_at   TEXT    NOT NULL,
    PRIMARY KEY (issuer_id, content_id, sha256)
);
"""
# The manifests table's columns and declared types, as PRAGMA table_info lists them.
_COLUMNS = (
    ("issuer_id", "INTEGER"),
    ("content_id", "INTEGER"),
    ("version", "INTEGER"),
    ("manifest", "BLOB"),
    ("sha256", "TEXT"),
    ("fingerprint", "TEXT"),
    ("title", "TEXT"),
    ("stored_at", "TEXT"),
)
_HEX16 = re.compile(r"[0-9a-fA-F]{16}")
_HINT = "give the path of a store sdkit created (`--store` of generate), or a new file name."


def default_store_path() -> Path | None:
    """The store named by ``$SDKIT_STORE``, or ``None`` (stores are opt-in)."""
    value = os.environ.get("SDKIT_STORE")
    return Path(value) if value else None


@dataclass(frozen=True)
class StoredManifest:
    """One stored manifest.

    Attributes:
        payload: the watermark payload it is stored under.
        manifest: the C2PA manifest store bytes (readable as ``application/c2pa``).
        fingerprint: perceptual hash of the pixels it was signed over.
        title: the file name it was signed with.
        stored_at: when it was stored (UTC, ISO 8601).
    """

    payload: Payload
    manifest: bytes = field(repr=False)
    fingerprint: str
    title: str | None
    stored_at: str


class ManifestStore:
    """SQLite file of manifests keyed by watermark payload. Thread-safe; a context manager.

    Args:
        path: the SQLite file.
        create: create the file and its table when missing (the stamper's side); ``False``
            opens an existing store read-only (the verifier's side).

    Raises:
        StoreError: the file is missing (``create=False``), is not SQLite, is corrupt, or holds
            other tables or another schema (sdkit never adds its table to another database).
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if create and not self.path.parent.is_dir():
            raise StoreError(
                f"folder {self.path.parent} does not exist",
                path=str(self.path),
                hint="create it, or give the store another path.",
            )
        if not create and not self.path.is_file():
            raise StoreError(
                f"manifest store {self.path} does not exist", path=str(self.path), hint=_HINT
            )
        try:
            if create:
                self._db = sqlite3.connect(self.path, check_same_thread=False)
            else:
                uri = self.path.resolve().as_uri() + "?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._unusable(exc) from exc
        try:
            self._check_schema(create)
        except sqlite3.Error as exc:
            self._db.close()
            raise self._unusable(exc) from exc
        except StoreError:
            self._db.close()
            raise

    def _unusable(self, exc: BaseException) -> StoreError:
        message = f"{self.path} is not a usable manifest store: {exc}"
        return StoreError(message, path=str(self.path), hint=_HINT)

    def _check_schema(self, create: bool) -> None:
        """Refuse another database; create the table in an empty one (when ``create``)."""
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        tables = {str(name) for (name,) in self._db.execute(query)}
        if "manifests" not in tables:
            if tables or not create:
                found = ", ".join(sorted(tables)[:5]) or "none"
                raise StoreError(
                    f"{self.path} is not a manifest store: it has no manifests table "
                    f"(tables: {found})",
                    path=str(self.path),
                    hint=_HINT,
                )
            with self._db:
                self._db.executescript(_SCHEMA)
            return
        columns = tuple(
            (str(row[1]), str(row[2]).upper())
            for row in self._db.execute("PRAGMA table_info(manifests)")
        )
        if columns != _COLUMNS:
            raise StoreError(
                f"{self.path} has a manifests table of another schema: "
                + ", ".join(f"{n} {t}" for n, t in columns)[:200],
                path=str(self.path),
                hint=_HINT,
            )

    def put(
        self,
        payload: Payload,
        manifest: bytes,
        *,
        fingerprint: str,
        title: str | None = None,
    ) -> None:
        """Keep ``manifest`` under ``payload`` (the same bytes twice are kept once).

        Raises:
            StoreError: the database cannot be written (read-only, full, corrupt).
        """
        digest = hashlib.sha256(manifest).hexdigest()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        row = (payload.issuer_id, payload.content_id, payload.version, manifest, digest)
        try:
            with self._lock, self._db:
                self._db.execute(
                    "INSERT OR IGNORE INTO manifests VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, fingerprint, title, now),
                )
        except sqlite3.Error as exc:
            raise self._unusable(exc) from exc

    def get(self, payload: Payload) -> list[StoredManifest]:
        """Every manifest stored under ``payload``, oldest first (empty when none).

        Raises:
            StoreError: the database cannot be read, or a row is not what sdkit writes.
        """
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT version, manifest, fingerprint, title, stored_at FROM manifests "
                    "WHERE issuer_id = ? AND content_id = ? ORDER BY stored_at, rowid",
                    (payload.issuer_id, payload.content_id),
                ).fetchall()
        except sqlite3.Error as exc:
            raise self._unusable(exc) from exc
        return [self._entry(payload, *row) for row in rows]

    def _entry(
        self,
        payload: Payload,
        version: object,
        blob: object,
        fp: object,
        title: object,
        stored: object,
    ) -> StoredManifest:
        """One row, checked: a store is a file anyone may have edited."""
        ok = (
            isinstance(version, int)
            and 0 <= version < 16
            and isinstance(blob, bytes)
            and isinstance(fp, str)
            and _HEX16.fullmatch(fp) is not None
            and isinstance(title, str | None)
            and isinstance(stored, str)
        )
        if not ok:
            raise StoreError(
                f"{self.path} has a malformed row for content id {payload.hex} "
                f"(fingerprint {str(fp)[:20]!r}, version {str(version)[:10]!r})",
                path=str(self.path),
                hint="the store was edited by hand or by another program; re-create it.",
            )
        assert isinstance(version, int) and isinstance(blob, bytes) and isinstance(fp, str)
        assert isinstance(stored, str) and isinstance(title, str | None)
        return StoredManifest(
            Payload(payload.content_id, payload.issuer_id, version), blob, fp, title, stored
        )

    def __len__(self) -> int:
        try:
            with self._lock:
                (count,) = self._db.execute("SELECT COUNT(*) FROM manifests").fetchone()
        except sqlite3.Error as exc:
            raise self._unusable(exc) from exc
        return int(count)

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> ManifestStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
