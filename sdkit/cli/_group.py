"""The ``sdkit`` click group and the helpers its commands share (errors, sizes, quiet libraries).

Library errors become exit codes here and nowhere else (see :data:`EXIT_CODES`).
"""

from __future__ import annotations

import re
import sys
from typing import Any, NoReturn

import click

from provenance.errors import ProvenanceError

from .. import __version__
from ..errors import (
    GenerationCancelled,
    InvalidOptionError,
    ModelLoadError,
    OutputError,
    SdkitError,
)

__all__ = ["EXIT_CODES", "EXIT_INTERRUPTED", "cli"]

#: Exit code per error class; the first match in order wins.
EXIT_CODES: tuple[tuple[type[SdkitError], int], ...] = (
    (InvalidOptionError, 2),
    (ModelLoadError, 3),
    (OutputError, 4),
    (GenerationCancelled, 130),
    (SdkitError, 1),
)
#: Exit code of a run stopped with Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _fail(exc: SdkitError | ProvenanceError) -> NoReturn:
    # provenance errors while generating (credentials that cannot sign, an unusable store): 5
    code = next((c for cls, c in EXIT_CODES if isinstance(exc, cls)), 5)
    click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)
    sys.exit(code)


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
    if not match:
        raise click.BadParameter("expected WIDTHxHEIGHT, e.g. 512x512")
    return int(match[1]), int(match[2])


class _Group(click.Group):
    """The ``sdkit`` group: Ctrl-C in any command exits 130 with one line, not click's
    "Aborted!" and exit 1 (commands with more to say catch it themselves)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sdkit")
def cli() -> None:
    """sdkit: text-to-image diffusion with provenance.

    Run `sdkit COMMAND --help` for each command's options.
    """


def _quiet_libraries() -> None:
    """Keep the terminal for sdkit's own output: no loading bars or library chatter."""
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    for module in ("diffusers", "transformers", "torch", "huggingface_hub"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
