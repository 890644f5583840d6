"""The ``sdkit`` command line: generate, samplers, models, and provenance's commands.

Library errors become exit codes at one edge (see :data:`EXIT_CODES`).
"""

from __future__ import annotations

from . import generate, listing  # noqa: F401  (their commands join the group)
from ._group import EXIT_CODES, cli
from .calibrate import calibrate_command

__all__ = ["EXIT_CODES", "cli", "main"]


def _mount_provenance() -> None:
    from provenance.cli import detect_group, keys_group, optout_group, verify_command

    cli.add_command(verify_command)
    cli.add_command(keys_group)
    detect_group.add_command(calibrate_command)
    cli.add_command(detect_group)
    cli.add_command(optout_group)


_mount_provenance()


def main() -> None:
    """Console-script entry point."""
    cli()
