"""``sdkit detect``: score images, train, evaluate (click commands of provenance.detector)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ProvenanceError
from ._common import CliError, ExistingPath, ExitCode, Group, cli_error, list_images
from .detect_check import check_command

if TYPE_CHECKING:
    from ..detector.backbone import SmallPolicy

__all__ = ["backbone_options", "detect_group", "with_backbone_options", "work_error"]


class _DefaultToCheck(Group):
    """``sdkit detect FILE...`` means ``sdkit detect check FILE...`` (all the evidence)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["check", *args]
        return super().parse_args(ctx, args)


def _sources(folder: str) -> dict[str, list[Path]] | list[Path]:
    """A folder's images, or one list per subfolder (one source each) when it has subfolders."""
    root = Path(folder)
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    here = list_images(root)
    if not subdirs:
        return here
    found = {d.name: images for d in subdirs if (images := list_images(d))}
    if here:  # images beside the subfolders count as their own source
        found[root.name] = here
    return found


def work_error(exc: ProvenanceError) -> CliError:
    """An error while scoring, training or evaluating: about a file (an image that cannot be
    read or is too small, a probe that cannot be written) is 4, anything else 8."""
    return cli_error(exc, ExitCode.FILE if exc.path is not None else ExitCode.ERROR)


def _deprecated_model(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        click.echo(
            "warning: --model is deprecated here; use --backbone (--model is the diffusion model)",
            err=True,
        )
    return value


#: The CLIP backbone's options, the same in every command that builds one (train, calibrate).
backbone_options = [
    click.option(
        "--backbone",
        "backbone_model",
        default="ViT-L-14",
        show_default=True,
        help="open_clip architecture of the CLIP backbone.",
    ),
    click.option(
        "--pretrained",
        default="openai",
        show_default=True,
        help="open_clip pretrained tag (weights from the HF cache).",
    ),
    click.option(
        "--checkpoint",
        type=ExistingPath(code=ExitCode.MODEL),
        help="Local weights file for --backbone (instead of --pretrained).",
    ),
    click.option(
        "--feature",
        default="projected",
        show_default=True,
        help="projected (UnivFD), pooled, or layer:N (e.g. layer:-2).",
    ),
]


def with_backbone_options(fn: Any) -> Any:
    """Add :data:`backbone_options` to a click command."""
    for option in reversed(backbone_options):
        fn = option(fn)
    return fn


@click.group("detect", cls=_DefaultToCheck)
def detect_group() -> None:
    """Is this image AI-generated? All the evidence: declarations, watermarks, pixel probe.

    `sdkit detect FILE_OR_FOLDER...` (short for `detect check`) reports C2PA / XMP / generation
    parameter declarations, known watermarks and the pixel probe (UnivFD's head on CLIP
    ViT-L/14 by default; `detect fetch-weights` downloads the CLIP weights). `detect score`
    runs a probe alone; the other subcommands train and evaluate probes. See docs/detector.md
    for what each kind of evidence can and cannot tell.
    """


detect_group.add_command(check_command)


@detect_group.command("fetch-weights")
def fetch_weights_command() -> None:
    """Download the default detector's CLIP ViT-L/14 (OpenAI) weights into the HF cache.

    Exit code: 0 done (or already cached), 6 they cannot be fetched (offline).
    """
    from ..detector.default import fetch_weights

    try:
        path = fetch_weights()
    except ProvenanceError as exc:
        raise cli_error(exc, ExitCode.MODEL) from None
    click.echo(f"CLIP ViT-L/14 (OpenAI) weights in the Hugging Face cache: {path}")


@detect_group.command("score")
@click.argument("files", nargs=-1, required=True, type=ExistingPath())
@click.option(
    "--probe", type=ExistingPath(code=ExitCode.MODEL), help="Probe file from `detect train`."
)
@click.option(
    "--univfd",
    type=ExistingPath(code=ExitCode.MODEL),
    help="UnivFD's fc_weights.pth (instead of --probe).",
)
@click.option(
    "--checkpoint",
    type=ExistingPath(code=ExitCode.MODEL),
    help="Local weights for the probe's backbone.",
)
@click.option(
    "--small",
    type=click.Choice(["error", "upscale"]),
    default="error",
    show_default=True,
    help="Images smaller than the 224 px crop: refuse, or upscale them.",
)
@click.option("--device", default=None, help="cpu, cuda…")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
def score_command(
    files: tuple[str, ...],
    probe: str | None,
    univfd: str | None,
    checkpoint: str | None,
    small: str,
    device: str | None,
    as_json: bool,
) -> None:
    """Score FILES: probability that each is AI-generated.

    Exit code: 0 done, 4 a file missing or unusable, 6 probe or weights not loadable.
    """
    from ..detector import Detector

    if (probe is None) == (univfd is None):
        raise click.UsageError("pass exactly one of --probe or --univfd")
    try:
        if probe is not None:
            det = Detector.load(
                probe,
                checkpoint=checkpoint,
                device=device,
                small=_policy(small),
                progress=not as_json,
            )
        else:
            det = Detector.from_univfd(
                univfd or "", checkpoint=checkpoint, device=device, small=_policy(small)
            )
    except ProvenanceError as exc:
        raise cli_error(exc, ExitCode.MODEL) from None
    try:
        scores = det.score(list(files))
    except ProvenanceError as exc:
        raise work_error(exc) from None
    threshold = det.probe.threshold if det.probe else 0.5
    rows = [(name, float(s), bool(s >= threshold)) for name, s in zip(files, scores, strict=True)]
    if as_json:
        for name, s, flagged in rows:
            click.echo(
                json.dumps(
                    {"path": name, "score": s, "ai_generated": flagged, "threshold": threshold}
                )
            )
        return
    width = max(len(name) for name, _, _ in rows)
    click.echo(f"{'file'.ljust(width)}  score  verdict (threshold {threshold:.3f})")
    for name, s, flagged in rows:
        click.echo(f"{name.ljust(width)}  {s:.3f}  {'AI-generated' if flagged else 'real'}")


@detect_group.command("train")
@click.option(
    "--real",
    "real_dir",
    required=True,
    type=ExistingPath(folder=True),
    help="Folder of real images.",
)
@click.option(
    "--fake",
    "fake_dir",
    required=True,
    type=ExistingPath(folder=True),
    help="Folder of AI-generated images (subfolders allowed).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Probe file to write (.safetensors).",
)
@with_backbone_options
@click.option("--model", "deprecated_model", hidden=True, callback=_deprecated_model)
@click.option(
    "--augment/--no-augment", default=False, help="UnivFD-style blur + JPEG (q30-100) augmentation."
)
@click.option(
    "--val-fraction",
    default=0.2,
    show_default=True,
    help="Held out to calibrate and pick the threshold.",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--small", type=click.Choice(["error", "upscale"]), default="error", show_default=True
)
@click.option("--device", default=None)
@click.option("--overwrite", is_flag=True, help="Replace an existing probe file.")
def train_command(
    real_dir: str,
    fake_dir: str,
    output: str,
    backbone_model: str,
    pretrained: str,
    checkpoint: str | None,
    feature: str,
    deprecated_model: str | None,
    augment: bool,
    val_fraction: float,
    seed: int,
    small: str,
    device: str | None,
    overwrite: bool,
) -> None:
    """Train a probe on --real and --fake images and write it to -o.

    Exit code: 0 done, 4 an image unusable or -o exists, 6 backbone weights not loadable.
    """
    from ..detector import Augmentation, Backbone, Detector

    if deprecated_model is not None:
        backbone_model = deprecated_model
    out = Path(output)
    if out.exists() and not overwrite:
        raise CliError(
            f"{out} exists", exit_code=ExitCode.FILE, hint="pass --overwrite or choose another -o."
        )
    real = list_images(real_dir)
    fake = _flatten(_sources(fake_dir))
    try:
        backbone = Backbone(
            backbone_model,
            None if checkpoint else pretrained,
            checkpoint=checkpoint,
            feature=feature,
            device=device,
            small=_policy(small),
            progress=True,
        )
    except ProvenanceError as exc:
        raise cli_error(exc, ExitCode.MODEL) from None
    try:
        det = Detector(backbone)
        probe = det.fit(
            real,
            fake,
            augment=Augmentation() if augment else None,
            val_fraction=val_fraction,
            seed=seed,
        )
        path = det.save(out)
    except ProvenanceError as exc:
        raise work_error(exc) from None
    summary = probe.metadata["training"]
    click.echo(
        f"wrote {path} ({len(real)} real, {len(fake)} fake; threshold {probe.threshold:.3f}, held-out balanced accuracy {summary['validation_balanced_accuracy']:.3f})"
    )


@detect_group.command("eval")
@click.option("--probe", required=True, type=ExistingPath(code=ExitCode.MODEL))
@click.option(
    "--real",
    "real_dir",
    required=True,
    type=ExistingPath(folder=True),
    help="Real images (subfolders = sources).",
)
@click.option(
    "--fake",
    "fake_dir",
    required=True,
    type=ExistingPath(folder=True),
    help="AI-generated images (subfolders = sources).",
)
@click.option(
    "--checkpoint",
    type=ExistingPath(code=ExitCode.MODEL),
    help="Local weights for the probe's backbone.",
)
@click.option(
    "--small", type=click.Choice(["error", "upscale"]), default="error", show_default=True
)
@click.option("--device", default=None)
@click.option("--json", "as_json", is_flag=True)
def eval_command(
    probe: str,
    real_dir: str,
    fake_dir: str,
    checkpoint: str | None,
    small: str,
    device: str | None,
    as_json: bool,
) -> None:
    """Evaluate a probe: AP, ROC AUC, accuracy (overall, real, fake, per source).

    Exit code: 0 done, 4 an image unusable, 6 probe or weights not loadable, 8 no images.
    """
    from ..detector import Detector

    try:
        det = Detector.load(
            probe, checkpoint=checkpoint, device=device, small=_policy(small), progress=not as_json
        )
    except ProvenanceError as exc:
        raise cli_error(exc, ExitCode.MODEL) from None
    try:
        metrics = det.evaluate(_sources(real_dir), _sources(fake_dir))
    except ProvenanceError as exc:
        raise work_error(exc) from None
    if as_json:
        click.echo(json.dumps(metrics.to_dict(), indent=2))
        return
    click.echo(
        f"AP {metrics.average_precision:.4f}  ROC AUC {metrics.roc_auc:.4f}  accuracy {metrics.accuracy:.4f} (real {metrics.real_accuracy:.4f}, fake {metrics.fake_accuracy:.4f}) at threshold {metrics.threshold:.3f}; {metrics.n_real} real, {metrics.n_fake} fake"
    )
    for name, m in metrics.per_source.items():
        extra = f"  AP {m.average_precision:.4f}" if m.average_precision is not None else ""
        click.echo(
            f"  {name}: n={m.n}  accuracy {m.accuracy:.4f}  mean score {m.mean_score:.3f}{extra}"
        )


def _policy(small: str) -> SmallPolicy:
    return "upscale" if small == "upscale" else "error"


def _flatten(sources: dict[str, list[Path]] | list[Path]) -> Sequence[Path]:
    if isinstance(sources, dict):
        return [p for items in sources.values() for p in items]
    return sources
