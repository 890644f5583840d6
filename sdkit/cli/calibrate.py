"""``sdkit detect calibrate``: fit a detector probe against images of your own generator."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from provenance.cli._common import CliError, ExistingPath, ExitCode, list_images
from provenance.cli.detect import with_backbone_options, work_error
from provenance.errors import ProvenanceError

from ..errors import SdkitError
from ._group import _quiet_libraries, _size, error

__all__ = ["CALIBRATION_PROMPTS", "calibrate_command"]


CALIBRATION_PROMPTS = (
    "a photo of a city street at night",
    "a portrait of a woman in natural light",
    "a bowl of fruit on a wooden table",
    "a mountain landscape with a lake",
    "a close-up photo of a cat",
    "an aerial view of farmland",
    "a busy market with people",
    "a modern living room interior",
    "a dog running on a beach",
    "a plate of food in a restaurant",
    "a forest path in autumn",
    "a car parked in front of a house",
)


@click.command("calibrate")
@click.option(
    "--model",
    "-m",
    default=None,
    metavar="ID|PATH",
    help="Generator model to calibrate against (default: the shipped one).",
)
@click.option(
    "--real",
    "real_dir",
    required=True,
    type=ExistingPath(folder=True),
    help="Folder of real images.",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="Probe file to write."
)
@click.option(
    "-n",
    "--num-fakes",
    type=int,
    default=None,
    help="Images to generate (default: as many as real images).",
)
@click.option(
    "--prompts",
    type=ExistingPath(),
    help="Text file, one prompt per line (default: a built-in list of photo-like prompts).",
)
@click.option(
    "--steps", default=None, type=int, help="Denoising steps (default: the model's own, else 25)."
)
@click.option(
    "--size",
    default=None,
    callback=_size,
    metavar="WxH",
    help="Generated size (default: the model's native size; must be >= the detector crop).",
)
@click.option(
    "--save-fakes",
    type=click.Path(file_okay=False),
    help="Also keep the generated images in this folder.",
)
@with_backbone_options
@click.option("--augment/--no-augment", default=False)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None)
@click.option("--overwrite", is_flag=True)
def calibrate_command(
    model: str | None,
    real_dir: str,
    output: str,
    num_fakes: int | None,
    prompts: str | None,
    steps: int | None,
    size: tuple[int, int] | None,
    save_fakes: str | None,
    backbone_model: str,
    pretrained: str,
    checkpoint: str | None,
    feature: str,
    augment: bool,
    seed: int,
    device: str | None,
    overwrite: bool,
) -> None:
    """Fit a detector probe against images made by your own generator.

    Generates images with the Generator (seeds SEED, SEED+1, …; prompts cycled), then trains a
    probe on them against the real images in --real. --model is the diffusion model;
    --backbone the CLIP backbone of the probe.

    Exit code: 0 done, 4 an image unusable or -o exists, 6 the model or the backbone
    weights not loadable (the table: `sdkit --help`).
    """
    from provenance.detector import Augmentation, Backbone, Detector

    out = Path(output)
    if out.exists() and not overwrite:
        raise CliError(
            f"{out} exists", exit_code=ExitCode.FILE, hint="pass --overwrite or choose another -o."
        )
    real = list_images(real_dir)
    count = num_fakes if num_fakes is not None else len(real)
    texts = (
        [line.strip() for line in Path(prompts).read_text().splitlines() if line.strip()]
        if prompts
        else list(CALIBRATION_PROMPTS)
    )
    _quiet_libraries()
    try:
        from ..generator import Generator

        gen = Generator(model, device=device, progress=False)
        width, height = size if size else (None, None)
        fakes = []
        with click.progressbar(range(count), label="generating", file=sys.stderr) as bar:
            for i in bar:
                image = gen(
                    texts[i % len(texts)], steps=steps, seed=seed + i, width=width, height=height
                ).image
                if save_fakes:
                    Path(save_fakes).mkdir(parents=True, exist_ok=True)
                    image.save(Path(save_fakes) / f"fake-{seed + i}.png", overwrite=overwrite)
                fakes.append(image.image)
    except SdkitError as exc:
        raise error(exc) from None
    try:
        backbone = Backbone(
            backbone_model,
            None if checkpoint else pretrained,
            checkpoint=checkpoint,
            feature=feature,
            device=device,
            progress=True,
        )
    except ProvenanceError as exc:
        raise error(exc, ExitCode.MODEL) from None
    try:
        detector = Detector(backbone)
        probe = detector.fit(real, fakes, augment=Augmentation() if augment else None, seed=seed)
        generator = {
            "model": gen.source.name,
            "model_sha256": gen.model_sha256,
            "steps": gen.defaults.steps if steps is None else steps,
            "n": count,
        }
        probe = dataclasses.replace(probe, metadata={**probe.metadata, "generator": generator})
        path = probe.save(out)
    except ProvenanceError as exc:
        raise work_error(exc) from None
    summary = probe.metadata["training"]
    click.echo(
        f"wrote {path} ({len(real)} real, {count} generated by {gen.source.name}; threshold {probe.threshold:.3f}, held-out balanced accuracy {summary['validation_balanced_accuracy']:.3f})"
    )
