"""The provenance commands (verify, detect, keys, optout), mounted by ``sdkit`` and usable alone."""

from __future__ import annotations

from .detect import detect_group
from .keys import keys_group
from .optout import optout_group
from .verify import EXIT_CODES, verify_command

__all__ = ["EXIT_CODES", "detect_group", "keys_group", "optout_group", "verify_command"]
