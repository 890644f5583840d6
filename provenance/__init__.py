"""provenance: watermarks, signed C2PA manifests, verification; usable without sdkit.

Example:
    >>> from provenance import verify
    >>> report = verify("tests/fixtures/c2pa-interop/C.jpg")
    >>> report.verdict, report.c2pa_state, report.trusted
    ('verified', 'valid', False)

The AI-image detector lives in :mod:`provenance.detector` (it imports torch, so it is not
loaded here).
"""

from __future__ import annotations

from .credentials import Credentials, default_credentials, load_trust_anchors
from .errors import (
    DetectorError,
    ManifestError,
    OptOutError,
    ProvenanceError,
    SigningError,
    WatermarkError,
)
from .report import VerificationReport
from .stamp import Stamper, WatermarkRecord
from .store import ManifestStore
from .verify import verify
from .watermark import Detection, Payload

__all__ = [
    "Credentials",
    "Detection",
    "DetectorError",
    "ManifestError",
    "ManifestStore",
    "OptOutError",
    "Payload",
    "ProvenanceError",
    "SigningError",
    "Stamper",
    "VerificationReport",
    "WatermarkError",
    "WatermarkRecord",
    "default_credentials",
    "load_trust_anchors",
    "verify",
]
