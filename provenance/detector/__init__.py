"""CLIP-based detector of AI-generated images (the UnivFD family).

A frozen open_clip image encoder turns each image into features; a linear probe, calibrated on
held-out data, turns them into the probability that the image is AI-generated. See
``docs/detector.md`` for what accuracy to expect and where the method fails.
"""

from __future__ import annotations

from .backbone import Backbone, preprocess
from .declarations import Declaration
from .detector import Augmentation, Detector, DetectorMetrics, SourceMetrics
from .evidence import EvidenceReport, MarkFound, assess
from .known_watermarks import KNOWN_MARKS, KnownMark
from .probe import LinearProbe

__all__ = [
    "KNOWN_MARKS",
    "Augmentation",
    "Backbone",
    "Declaration",
    "Detector",
    "DetectorMetrics",
    "EvidenceReport",
    "KnownMark",
    "LinearProbe",
    "MarkFound",
    "SourceMetrics",
    "assess",
    "preprocess",
]
