"""``sdkit detect [check] FILE_OR_FOLDER...``: all the evidence that images are AI-generated.

One report per file (:class:`provenance.detector.EvidenceReport`); for a folder or several
files, a table and a summary (counts by verdict and by deciding evidence) after a progress bar
on stderr. ``--json`` prints one JSON object per file
(``provenance/schemas/detect-report.schema.json``) and, for several files, a last object
``{"summary": ...}``.

With no probe flag the default detector is used (UnivFD's head on CLIP ViT-L/14). When its CLIP
weights are not cached and cannot be fetched, declarations and watermarks are still reported,
each report notes that the probe did not run, and the command then exits 6 (MODEL) with the
command that fetches them (``--no-probe`` skips the probe on purpose and exits 0).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import MissingWeightsError, ProvenanceError
from ._common import CliError, ExistingPath, ExitCode, cli_error, list_images

if TYPE_CHECKING:
    from ..detector import Detector, EvidenceReport
    from ..detector.backbone import SmallPolicy

__all__ = ["check_command", "summary"]


class _FileOrFolder(ExistingPath):
    """An image file or a folder of them; a missing one is exit 4 (FILE)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """``value`` as a string, once it names an existing file or folder."""
        self.folder = os.path.isdir(os.fspath(value))
        return super().convert(value, param, ctx)


def _files(paths: Sequence[str]) -> tuple[list[Path], bool]:
    """The files named, folders expanded (images directly in them); whether it is a batch."""
    out: list[Path] = []
    for name in paths:
        path = Path(name)
        out += list_images(path) if path.is_dir() else [path]
    return out, len(paths) > 1 or any(Path(p).is_dir() for p in paths)


def summary(reports: Sequence[EvidenceReport]) -> dict[str, dict[str, int]]:
    """Counts by verdict and by deciding evidence (a file decided by both counts in both)."""
    by_evidence: Counter[str] = Counter()
    for r in reports:
        by_evidence.update(r.decided_by or ("nothing",))
        by_evidence.update(f"declaration:{d.source}" for d in r.declarations)
        by_evidence.update(f"watermark:{m.name}" for m in r.watermarks)
    return {
        "files": {"total": len(reports)},
        "by_verdict": dict(sorted(Counter(r.verdict for r in reports).items())),
        "by_evidence": dict(sorted(by_evidence.items())),
    }


def _load(
    probe: str | None,
    univfd: str | None,
    checkpoint: str | None,
    small: str,
    device: str | None,
    no_probe: bool,
) -> tuple[Detector | None, MissingWeightsError | None]:
    from ..detector import Detector

    policy: SmallPolicy = "upscale" if small == "upscale" else "error"
    if no_probe:
        return None, None
    try:
        if probe is not None:
            return Detector.load(
                probe, checkpoint=checkpoint, device=device, small=policy, progress=False
            ), None
        if univfd is not None:
            return Detector.from_univfd(
                univfd, checkpoint=checkpoint, device=device, small=policy
            ), None
        return Detector.default(
            checkpoint=checkpoint, device=device, small=policy, progress=False
        ), None
    except MissingWeightsError as exc:
        if probe is not None or univfd is not None:
            raise cli_error(exc, ExitCode.MODEL) from None
        return None, exc
    except ProvenanceError as exc:
        raise cli_error(exc, ExitCode.MODEL) from None


@click.command("check")
@click.argument("paths", nargs=-1, required=True, type=_FileOrFolder())
@click.option("--probe", type=ExistingPath(code=ExitCode.MODEL), help="A probe instead of UnivFD.")
@click.option(
    "--univfd",
    type=ExistingPath(code=ExitCode.MODEL),
    help="Another copy of UnivFD's fc_weights.pth instead of the shipped head.",
)
@click.option(
    "--checkpoint",
    type=ExistingPath(code=ExitCode.MODEL),
    help="Local CLIP weights for the probe's backbone (instead of the HF cache).",
)
@click.option("--no-probe", is_flag=True, help="Report declarations and watermarks only.")
@click.option(
    "--small",
    type=click.Choice(["error", "upscale"]),
    default="error",
    show_default=True,
    help="Images smaller than the 224 px crop: refuse, or upscale them for the probe.",
)
@click.option("--device", default=None, help="cpu, cuda…")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
def check_command(
    paths: tuple[str, ...],
    probe: str | None,
    univfd: str | None,
    checkpoint: str | None,
    no_probe: bool,
    small: str,
    device: str | None,
    as_json: bool,
) -> None:
    """Is each image AI-generated? Declarations, known watermarks and the pixel probe.

    Exit code: 0 done, 2 wrong options, 4 a file missing or unusable, 6 probe or CLIP weights
    not loadable (after reporting declarations and watermarks when the weights are missing).
    """
    from tqdm.auto import tqdm

    from ..detector.evidence import PROBE_NOT_RUN, assess

    if probe is not None and univfd is not None:
        raise click.UsageError("pass at most one of --probe or --univfd")
    if no_probe and (probe is not None or univfd is not None):
        raise click.UsageError("--no-probe cannot be combined with --probe or --univfd")
    files, batch = _files(paths)
    detector, missing = _load(probe, univfd, checkpoint, small, device, no_probe)
    note = PROBE_NOT_RUN
    if missing is not None:
        note = (
            "the pixel probe did not run: CLIP weights missing (run `sdkit detect fetch-weights`)"
        )
    elif no_probe:
        note = "the pixel probe was not asked for (--no-probe)"
    reports: list[EvidenceReport] = []
    unreadable: list[dict[str, str | None]] = []
    # on a terminal only (disable=None): a log file or a pipe gets no bar
    bar = tqdm(files, desc="detect", unit="file", disable=None if batch else True, leave=False)
    for path in bar:
        try:
            reports.append(assess(path, detector=detector, probe_note=note))
        except ProvenanceError as exc:
            if not batch:
                bar.close()
                raise cli_error(exc, ExitCode.FILE if exc.path is not None else None) from None
            # several files: one bad file is reported in its row and the others still run
            unreadable.append({"path": str(path), "error": exc.message, "hint": exc.hint})
    bar.close()
    _print(reports, batch, as_json, unreadable)
    if missing is not None:
        raise CliError(missing.message, exit_code=ExitCode.MODEL, hint=missing.hint)
    if unreadable:
        raise CliError(
            f"{len(unreadable)} of {len(files)} files could not be read (listed above)",
            exit_code=ExitCode.FILE,
            hint="each row above names why; give PNG, JPEG or WebP files (the others' reports stand)",
        )


def _print(
    reports: Sequence[EvidenceReport],
    batch: bool,
    as_json: bool,
    unreadable: Sequence[dict[str, str | None]] = (),
) -> None:
    counts = summary(reports)
    if unreadable:
        counts["files"] = {"total": len(reports) + len(unreadable), "unreadable": len(unreadable)}
    if as_json:
        for r in reports:
            click.echo(json.dumps(r.to_dict()))
        for bad in unreadable:
            click.echo(json.dumps(bad))
        if batch:
            click.echo(json.dumps({"summary": counts}))
        return
    if not batch:
        for r in reports:
            click.echo(r.to_text())
        return
    width = max([4, *(len(r.path) for r in reports)])
    click.echo(f"{'file'.ljust(width)}  {'verdict':<13} {'probe':>6}  evidence")
    for r in reports:
        score = "-" if r.probe_score is None else f"{r.probe_score:.3f}"
        found = [f"declaration:{d.source}" for d in r.declarations]
        found += [f"watermark:{m.name}" for m in r.watermarks]
        click.echo(f"{r.path.ljust(width)}  {r.verdict:<13} {score:>6}  {', '.join(found) or '-'}")
    for bad in unreadable:
        click.echo(f"{str(bad['path']).ljust(width)}  {'unreadable':<13} {'-':>6}  {bad['error']}")
    verdicts = ", ".join(f"{k} {v}" for k, v in counts["by_verdict"].items())
    if unreadable:
        verdicts += f", unreadable {len(unreadable)}"
    evidence = ", ".join(f"{k} {v}" for k, v in counts["by_evidence"].items())
    click.echo(f"\n{len(reports) + len(unreadable)} files: {verdicts}")
    click.echo(f"evidence: {evidence}")
