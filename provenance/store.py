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
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .errors import ManifestError
from .watermark import Payload

__all__ = ["ManifestStore", "StoredManifest", "default_store_path"]

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

    Raises:
        ManifestError: the file cannot be opened or is not a manifest store.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if self.path.parent and not self.path.parent.is_dir():
                raise ManifestError(
                    f"folder {self.path.parent} does not exist",
                    path=str(self.path),
                    hint="create it, or give the store another path.",
                )
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            with self._db:
                self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ManifestError(
                f"{self.path} is not a usable manifest store: {exc}",
                path=str(self.path),
                hint="give the path of a store sdkit created, or a new file name.",
            ) from exc

    def put(
        self,
        payload: Payload,
        manifest: bytes,
        *,
        fingerprint: str,
        title: str | None = None,
    ) -> None:
        """Keep ``manifest`` under ``payload`` (the same bytes twice are kept once)."""
        digest = hashlib.sha256(manifest).hexdigest()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        row = (payload.issuer_id, payload.content_id, payload.version, manifest, digest)
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO manifests VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, fingerprint, title, now),
            )

    def get(self, payload: Payload) -> list[StoredManifest]:
        """Every manifest stored under ``payload``, oldest first (empty when none)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT version, manifest, fingerprint, title, stored_at FROM manifests "
                "WHERE issuer_id = ? AND content_id = ? ORDER BY stored_at, rowid",
                (payload.issuer_id, payload.content_id),
            ).fetchall()
        return [
            StoredManifest(
                Payload(payload.content_id, payload.issuer_id, version),
                bytes(blob),
                fp,
                title,
                stored,
            )
            for version, blob, fp, title, stored in rows
        ]

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM manifests").fetchone()
        return int(count)

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> ManifestStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
