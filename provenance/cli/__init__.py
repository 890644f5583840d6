"""The provenance commands (verify, detect, keys, optout), mounted by ``sdkit`` and usable alone.

Every command exits with a code of the one table, :class:`ExitCode` (``sdkit --help`` and
docs/cli.md show it), and fails through the one error edge, :class:`CliError`.
"""

from __future__ import annotations

from ._common import MEANINGS, CliError, ExitCode, cli_error
from .detect import detect_group
from .keys import keys_group
from .optout import optout_group
from .verify import verify_command

__all__ = [
    "MEANINGS",
    "CliError",
    "ExitCode",
    "cli_error",
    "detect_group",
    "keys_group",
    "optout_group",
    "verify_command",
]
