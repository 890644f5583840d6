"""Click commands of the provenance package, mounted by ``sdkit`` and usable alone."""

from __future__ import annotations

import json
import sys

import click

from .detect_cli import detect_group, fail
from .errors import ProvenanceError
from .verify import verify

__all__ = ["detect_group", "verify_command"]


@click.command("verify")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
@click.option(
    "--require-credentials",
    is_flag=True,
    help="Exit 1 when a file has no Content Credentials at all.",
)
@click.option(
    "--detector",
    "probe",
    type=click.Path(exists=True, dir_okay=False),
    help="Probe from `sdkit detect train`: score files that have no valid Content Credentials.",
)
@click.option(
    "--small",
    type=click.Choice(["error", "upscale"]),
    default="upscale",
    show_default=True,
    help="With --detector: images smaller than the detector's crop.",
)
def verify_command(
    files: tuple[str, ...],
    as_json: bool,
    require_credentials: bool,
    probe: str | None,
    small: str,
) -> None:
    """Report where FILES come from: C2PA Content Credentials and embedded parameters.

    Exit codes: 0 nothing wrong found; 1 a file has no Content Credentials (only with
    --require-credentials); 2 a file's credentials are invalid; 3 a file could not be read.
    """
    detector = None
    if probe is not None:
        from .detector import Detector

        try:
            detector = Detector.load(probe, small="upscale" if small == "upscale" else "error")
        except ProvenanceError as exc:
            fail(exc)
    worst = 0
    for name in files:
        try:
            report = verify(name, detector=detector)
        except ProvenanceError as exc:
            click.echo(f"error: {exc.message}", err=True)
            worst = max(worst, 3)
            continue
        if as_json:
            click.echo(json.dumps(report.to_dict(), default=str))
        else:
            click.echo(report.to_text())
        absent = 1 if require_credentials else 0
        code = {"valid": 0, "trusted": 0, "absent": absent, "unreadable": 3}.get(
            report.c2pa_state, 2
        )
        worst = max(worst, code)
    sys.exit(worst)
