"""What every command of the CLI shares: the one exit-code table, the one error edge, helpers.

Every command of ``sdkit`` (and of ``provenance`` used alone) exits with a code of
:class:`ExitCode`, which means the same in every command. Library errors become a
:class:`CliError` here and nowhere else: it prints ``error: …`` and ``hint: …`` on stderr, never
a traceback, and exits with its code.

Example:
    >>> int(ExitCode.SIMILAR), MEANINGS[ExitCode.NO_ANSWER]
    (7, 'nothing to decide from: verify no_provenance, optout unknown')
    >>> from ..errors import StoreError
    >>> error = cli_error(StoreError("store.db is not SQLite", hint="give a manifest store."))
    >>> error.exit_code, error.hint
    (<ExitCode.CREDENTIALS: 5>, 'give a manifest store.')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import IO, Any, Protocol

import click

from ..errors import DetectorError, ManifestError, ProvenanceError, SigningError, StoreError

__all__ = [
    "ERROR_CODES",
    "IMAGE_SUFFIXES",
    "MEANINGS",
    "CliError",
    "Command",
    "ExistingPath",
    "ExitCode",
    "Explained",
    "Group",
    "cli_error",
    "exit_codes_epilog",
    "list_images",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})


class ExitCode(IntEnum):
    """The exit codes of every command; :data:`MEANINGS` says what each one means."""

    OK = 0
    NO = 1
    USAGE = 2
    NO_ANSWER = 3
    FILE = 4
    CREDENTIALS = 5
    MODEL = 6
    SIMILAR = 7
    ERROR = 8
    INTERRUPTED = 130


#: One line per exit code: what it means, in every command (docs/cli.md shows the same table).
MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success: images written, verify verified, optout allowed, any other command done",
    ExitCode.NO: "the answer is no: verify not_verified, optout disallowed (or a registry match)",
    ExitCode.USAGE: "the command line is wrong: unknown option, bad value, missing argument",
    ExitCode.NO_ANSWER: "nothing to decide from: verify no_provenance, optout unknown",
    ExitCode.FILE: "an input file is missing or cannot be read, or an output cannot be written",
    ExitCode.CREDENTIALS: "signing credentials, trust anchors or manifest store unusable",
    ExitCode.MODEL: "a model, weights, probe or CLIP backbone missing or not loadable",
    ExitCode.SIMILAR: "verify similar: a manifest recovered from the store, no hash binding",
    ExitCode.ERROR: "any other error the library reports on purpose",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C) or a cancelled generation",
}


class Explained(Protocol):
    """An error that says what went wrong and how to fix it (SdkitError, ProvenanceError)."""

    @property
    def message(self) -> str: ...

    @property
    def hint(self) -> str | None: ...


class CliError(click.ClickException):
    """The one way a command fails: ``error: …`` and ``hint: …`` on stderr, and an exit code.

    Attributes:
        exit_code: an :class:`ExitCode`.
        hint: one sentence on how to fix the problem, or ``None``.
    """

    def __init__(
        self, message: str, *, exit_code: ExitCode = ExitCode.ERROR, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares a class default
        self.hint = hint

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the error and its hint on stderr (never a traceback)."""
        click.echo(f"error: {self.format_message()}", err=True, file=file)
        if self.hint:
            click.echo(f"hint: {self.hint}", err=True, file=file)


#: Exit code per provenance error class; the first match in order wins.
ERROR_CODES: tuple[tuple[type[Exception], ExitCode], ...] = (
    (StoreError, ExitCode.CREDENTIALS),
    (SigningError, ExitCode.CREDENTIALS),
    (DetectorError, ExitCode.MODEL),
    (ManifestError, ExitCode.ERROR),
    (ProvenanceError, ExitCode.ERROR),
)


def cli_error(
    exc: Explained,
    code: ExitCode | None = None,
    *,
    table: Sequence[tuple[type[Exception], ExitCode]] = ERROR_CODES,
) -> CliError:
    """The :class:`CliError` for a library error: ``code``, else the first row of ``table``
    whose class ``exc`` is an instance of, else :attr:`ExitCode.ERROR`."""
    if code is None:
        code = next((c for cls, c in table if isinstance(exc, cls)), ExitCode.ERROR)
    return CliError(exc.message, exit_code=code, hint=exc.hint)


class ExistingPath(click.ParamType[str]):
    """A file (or folder) that must exist; a missing one exits with ``code``, not click's 2.

    Click's ``Path(exists=True)`` makes a missing input a usage error (2); in the table a
    missing input file is :attr:`ExitCode.FILE`, and missing weights :attr:`ExitCode.MODEL`.
    """

    name = "path"

    def __init__(self, *, folder: bool = False, code: ExitCode = ExitCode.FILE) -> None:
        self.folder = folder
        self.code = code

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """``value`` as a string, once it names an existing file (or folder)."""
        path = str(os.fspath(value))
        what = "folder" if self.folder else "file"
        name = f"{param.get_error_hint(ctx)}: " if param is not None and ctx is not None else ""
        if not os.path.exists(path):
            raise CliError(
                f"{name}{what} {path!r} does not exist", exit_code=self.code, hint="check the path."
            )
        if os.path.isdir(path) != self.folder:
            raise CliError(
                f"{name}{path!r} is {'not ' if self.folder else ''}a folder",
                exit_code=self.code,
                hint=f"give a {what}.",
            )
        return path


def exit_codes_epilog() -> str:
    """The exit-code table as text for ``--help`` (click keeps the lines after ``\\b``)."""
    rows = "\n".join(f"  {int(code):>3}  {code.name:<11}  {MEANINGS[code]}" for code in ExitCode)
    return f"\b\nExit codes (the same in every command):\n{rows}"


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted."""
    root = Path(folder)
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class Group(click.Group):
    """A click group whose commands exit 130 on Ctrl-C with one line, not click's "Aborted!"
    and exit 1 (commands with more to say catch it themselves)."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; Ctrl-C exits :attr:`ExitCode.INTERRUPTED`."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            raise SystemExit(ExitCode.INTERRUPTED) from None


class Command(click.Command):
    """A click command that exits 130 on Ctrl-C, as :class:`Group`'s commands do."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; Ctrl-C exits :attr:`ExitCode.INTERRUPTED`."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            raise SystemExit(ExitCode.INTERRUPTED) from None
