"""Opt-outs from AI training: read every signal, explain every decision, fail closed.

Signals (each one a rule in :data:`RULES`, named in every decision that uses it): HTTP
``X-Robots-Tag`` and TDMRep headers; the site files robots.txt, ai.txt and tdmrep.json;
HTML ``<meta>`` robots and TDMRep tags; C2PA / CAWG training-and-mining assertions and IPTC
``plus:DataMining`` inside the file; a local registry of opted-out works matched by perceptual
hash. An unknown (timeout, 5xx, unreadable) is not allowed unless ``on_error="allow"``.

Example:
    >>> from PIL import Image
    >>> from provenance.optout import OptOutChecker
    >>> decision = OptOutChecker().check(Image.new("RGB", (8, 8)))
    >>> decision.verdict, decision.allowed, decision.signals
    ('allowed', True, ())

See docs/optout.md for each signal's source, precedence and the SSRF policy, and
docs/scale-out.md for :func:`check_dataset_ray` (the same checks on a Ray cluster).
"""

from __future__ import annotations

from .checker import DEFAULT_USER_AGENT, OptOutChecker, Target
from .dataset import DatasetSummary, check_dataset
from .decision import RULES, Decision, Rule, Signal, decide
from .distributed import RayOptions, check_dataset_ray
from .embedded import DEFAULT_USES
from .markup import AI_TRAINING_AGENTS
from .registry import MATCH_DISTANCE, OptOutRegistry, RegistryEntry, RegistryMatch

__all__ = [
    "AI_TRAINING_AGENTS",
    "DEFAULT_USER_AGENT",
    "DEFAULT_USES",
    "MATCH_DISTANCE",
    "RULES",
    "DatasetSummary",
    "Decision",
    "OptOutChecker",
    "OptOutRegistry",
    "RayOptions",
    "RegistryEntry",
    "RegistryMatch",
    "Rule",
    "Signal",
    "Target",
    "check_dataset",
    "check_dataset_ray",
    "decide",
]
