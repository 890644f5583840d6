"""``sdkit verify``: where files come from, and whether that can be trusted."""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

import click

from ..errors import ProvenanceError
from ..verify import DEFAULT_MAX_PIXELS, VerificationReport, verify
from ._common import CliError, Command, ExistingPath, ExitCode, cli_error, list_images

__all__ = ["OUTCOMES", "verify_command"]

#: The exit code of each outcome of one file (an entry of the one table, :class:`ExitCode`).
OUTCOMES = {
    "verified": ExitCode.OK,
    "not_verified": ExitCode.NO,
    "no_provenance": ExitCode.NO_ANSWER,
    "unreadable": ExitCode.FILE,
    "similar": ExitCode.SIMILAR,
}
# With several files the most serious outcome decides the exit code.
_SEVERITY = ("verified", "similar", "no_provenance", "not_verified", "unreadable")


def _expand(patterns: tuple[str, ...]) -> list[Path]:
    """Files, folders (their images) and glob patterns -> image paths, in the order given."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else []
        for item in [Path(m) for m in matches] or [Path(pattern)]:
            try:
                paths.extend(list_images(item) if item.is_dir() else [item])
            except OSError:  # an unreadable folder: verify reports it as unreadable
                paths.append(item)
    return paths


@click.command("verify", cls=Command)
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file (JSONL).")
@click.option(
    "--trust-anchors",
    type=click.Path(dir_okay=False),
    envvar="SDKIT_TRUST_ANCHORS",
    show_envvar=True,
    help="PEM file of the certificates you trust (e.g. the dev CA from `sdkit keys init`).",
)
@click.option(
    "--require-trusted",
    is_flag=True,
    help="Count a valid manifest from a signer outside the trust anchors as not verified.",
)
@click.option(
    "--store",
    type=click.Path(dir_okay=False),
    envvar="SDKIT_STORE",
    show_envvar=True,
    help="Manifest store (SQLite) to recover stripped manifests from, through the watermark.",
)
@click.option(
    "--fetch-remote",
    is_flag=True,
    help="Fetch manifests that a file only points to (network access; off by default).",
)
@click.option(
    "--allow-private",
    is_flag=True,
    help="With --fetch-remote: allow loopback, private and link-local addresses "
    "(intranets, tests; refused by default against SSRF).",
)
@click.option(
    "--no-watermark",
    "skip_watermark",
    is_flag=True,
    help="Do not look for sdkit's watermark (faster; no store recovery).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Decode at most this many pixels per image for the watermark and fingerprint checks; "
    "larger images are not searched (JPEGs are decoded at a reduced scale when that fits).",
)
@click.option(
    "--probe",
    "--detector",
    "probe",
    type=ExistingPath(code=ExitCode.MODEL),
    help="Probe from `sdkit detect train` (the same option as `sdkit detect --probe`; "
    "--detector is its older name): score files that have no verified provenance.",
)
@click.option(
    "--small",
    type=click.Choice(["upscale", "error"]),
    default="upscale",
    show_default=True,
    help="With --probe: images smaller than the detector's 224 px crop are upscaled (a less "
    "reliable score) or, with 'error', reported as unreadable (exit 4).",
)
def verify_command(
    files: tuple[str, ...],
    as_json: bool,
    trust_anchors: str | None,
    require_trusted: bool,
    store: str | None,
    fetch_remote: bool,
    allow_private: bool,
    skip_watermark: bool,
    max_pixels: int,
    probe: str | None,
    small: str,
) -> None:
    """Report where FILES come from and whether that can be trusted.

    FILES are image files, folders (their images) or glob patterns. For each: the C2PA
    manifest (valid? trusted? what it says), sdkit's invisible watermark, and, when the
    manifest was stripped but the watermark survived, the manifest recovered from --store.

    \b
    Exit code, the most serious over all files: 0 verified (an untrusted signer
    fails only with --require-trusted), 7 similar (a manifest recovered from --store
    through the watermark; no hash binding ties it to these bytes), 3 no provenance,
    1 not verified or tampered, 4 a file could not be read; 5 trust anchors or
    store unusable, 6 a --probe that cannot be loaded (`sdkit --help`).
    """
    from ..credentials import load_trust_anchors
    from ..store import ManifestStore

    detector = None
    opened = None
    if probe is not None:
        from ..detector import Detector

        try:
            detector = Detector.load(probe, small="error" if small == "error" else "upscale")
        except ProvenanceError as exc:
            raise cli_error(exc, ExitCode.MODEL) from None
    try:
        anchors = load_trust_anchors(trust_anchors)  # ManifestError: missing or no PEM
        if store is not None:
            opened = ManifestStore(store, create=False)  # StoreError: missing, corrupt, other
    except ProvenanceError as exc:
        raise cli_error(exc, ExitCode.CREDENTIALS) from None
    paths = _expand(files)
    if not paths:
        raise CliError(
            "no image files found", exit_code=ExitCode.FILE, hint="give files, folders or globs."
        )
    worst = "verified"
    from tqdm import tqdm

    bar = tqdm(paths, unit="file", file=sys.stderr, disable=len(paths) < 8 or None)
    for path in bar:
        try:
            report = verify(
                path,
                trust_anchors=anchors,
                store=opened,
                detector=detector,
                fetch_remote=fetch_remote,
                check_watermark=not skip_watermark,
                allow_private=allow_private,
                max_pixels=max_pixels,
            )
        except ProvenanceError as exc:
            outcome = "unreadable"
            text = _error_text(path, exc.message, exc.hint, as_json)
        except Exception as exc:  # a bug must not stop the other files; said as one
            outcome = "unreadable"
            message = f"internal error ({type(exc).__name__}: {str(exc)[:200]})"
            text = _error_text(path, message, "this is a bug in sdkit; please report it.", as_json)
        else:
            outcome = _outcome(report, require_trusted)
            text = json.dumps(report.to_dict(), default=str) if as_json else _text(report)
        with tqdm.external_write_mode(file=sys.stderr):
            click.echo(text)
        if _SEVERITY.index(outcome) > _SEVERITY.index(worst):
            worst = outcome
    if opened is not None:
        opened.close()
    sys.exit(OUTCOMES[worst])


def _error_text(path: Path, message: str, hint: str | None, as_json: bool) -> str:
    if as_json:
        return json.dumps({"path": str(path), "error": message, "hint": hint})
    return f"{path}: ERROR: {message}" + (f"\n  hint: {hint}" if hint else "")


def _outcome(report: VerificationReport, require_trusted: bool) -> str:
    if report.verdict == "verified" and require_trusted and not report.trusted:
        return "not_verified"
    return report.verdict


def _text(report: VerificationReport) -> str:
    colour = {
        "verified": "green",
        "similar": "yellow",
        "not_verified": "red",
        "no_provenance": "yellow",
    }
    lines = report.to_text().split("\n")
    lines[0] = click.style(lines[0], fg=colour[report.verdict], bold=True)
    return "\n".join(lines)
