"""Errors raised by provenance.

::

    ProvenanceError
    ├── SigningError       credentials missing or unusable, or signing failed
    ├── ManifestError      a C2PA manifest could not be built or read
    │   └── StoreError     a manifest store is missing, corrupt or of another schema
    ├── WatermarkError     a watermark could not be embedded or read
    ├── OptOutError        an opt-out check could not be made
    └── DetectorError      the AI-image detector could not be loaded or run
        └── MissingWeightsError  the CLIP weights are not in the cache and cannot be fetched

Every error carries the context (``path``) and a ``hint`` that says how to fix the problem.
"""

from __future__ import annotations

__all__ = [
    "DetectorError",
    "ManifestError",
    "MissingWeightsError",
    "OptOutError",
    "ProvenanceError",
    "SigningError",
    "StoreError",
    "WatermarkError",
]


class ProvenanceError(Exception):
    """Base class of every error provenance raises on purpose.

    Attributes:
        path: the file concerned, or ``None``.
        hint: one sentence on how to fix the problem, or ``None``.
    """

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.path = path
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\nHint: {hint}")


class SigningError(ProvenanceError):
    """Credentials are missing or unusable, or signing failed."""


class ManifestError(ProvenanceError):
    """A C2PA manifest could not be built or read."""


class StoreError(ManifestError):
    """A manifest store is missing, not SQLite, corrupt, or has another schema."""


class WatermarkError(ProvenanceError):
    """A watermark could not be embedded or read."""


class OptOutError(ProvenanceError):
    """An opt-out check could not be made."""


class DetectorError(ProvenanceError):
    """The AI-image detector could not be loaded or run."""


class MissingWeightsError(DetectorError):
    """The CLIP backbone's weights are not in the Hugging Face cache and cannot be fetched
    (offline, ``HF_HUB_OFFLINE=1``); the hint names the command that fetches them."""
