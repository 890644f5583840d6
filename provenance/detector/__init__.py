"""CLIP-based detector of AI-generated images (the UnivFD family).

A frozen open_clip image encoder turns each image into features; a linear probe, calibrated on
held-out data, turns them into the probability that the image is AI-generated. See
``docs/detector.md`` for what accuracy to expect and where the method fails.
"""

from __future__ import annotations

from .backbone import Backbone, preprocess
from .detector import Augmentation, Detector, DetectorMetrics, SourceMetrics
from .probe import LinearProbe

__all__ = [
    "Augmentation",
    "Backbone",
    "Detector",
    "DetectorMetrics",
    "LinearProbe",
    "SourceMetrics",
    "preprocess",
]
