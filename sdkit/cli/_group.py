"""The ``sdkit`` click group and the helpers its commands share (errors, sizes, quiet libraries).

Library errors become exit codes here (see :data:`EXIT_CODES`), through provenance's one error
edge (:class:`~provenance.cli._common.CliError`) and its one table of exit codes.
"""

from __future__ import annotations

import re

import click

from provenance.cli._common import (
    ERROR_CODES,
    CliError,
    ExitCode,
    Explained,
    Group,
    cli_error,
    exit_codes_epilog,
)

from .. import __version__
from ..errors import (
    GenerationCancelled,
    InvalidOptionError,
    ModelLoadError,
    OutputError,
    SdkitError,
)

__all__ = ["EXIT_CODES", "cli", "error"]

#: Exit code per error class, sdkit's then provenance's; the first match in order wins. The
#: codes are those of the one table, :class:`~provenance.cli._common.ExitCode`.
EXIT_CODES: tuple[tuple[type[Exception], ExitCode], ...] = (
    (InvalidOptionError, ExitCode.USAGE),
    (ModelLoadError, ExitCode.MODEL),
    (OutputError, ExitCode.FILE),
    (GenerationCancelled, ExitCode.INTERRUPTED),
    (SdkitError, ExitCode.ERROR),
    *ERROR_CODES,  # while generating: credentials that cannot sign, an unusable store: 5
)


def error(exc: Explained, code: ExitCode | None = None) -> CliError:
    """The :class:`CliError` for an sdkit or provenance error (its code from :data:`EXIT_CODES`).

    Example:
        >>> from sdkit.errors import ModelNotFoundError
        >>> error(ModelNotFoundError("no model at m", source="m")).exit_code
        <ExitCode.MODEL: 6>
    """
    return cli_error(exc, code, table=EXIT_CODES)


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
    if not match:
        raise click.BadParameter("expected WIDTHxHEIGHT, e.g. 512x512")
    return int(match[1]), int(match[2])


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=exit_codes_epilog(),
)
@click.version_option(__version__, prog_name="sdkit")
def cli() -> None:
    """sdkit: text-to-image diffusion with provenance.

    Run `sdkit COMMAND --help` for each command's options. Ctrl-C in any command exits 130
    with one line. Errors print `error: …` and `hint: …` on stderr, never a traceback.
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
