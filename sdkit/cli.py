"""The ``sdkit`` command line: generate, samplers, models, and provenance's commands.

Library errors become exit codes here and nowhere else (see :data:`EXIT_CODES`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from provenance.errors import ProvenanceError

from . import __version__
from .errors import (
    GenerationCancelled,
    InvalidOptionError,
    ModelLoadError,
    OutputError,
    SdkitError,
)

__all__ = ["EXIT_CODES", "main"]

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


@cli.command()
@click.argument("prompt")
@click.option("-n", "--num-images", default=1, show_default=True, help="Images to make.")
@click.option("--negative", "negative_prompt", default="", help="Negative prompt.")
@click.option(
    "--sampler",
    default=None,
    help="Sampler, e.g. 'Euler a', 'DPM++ 2M' (see `sdkit samplers`). Default: the model's own.",
)
@click.option(
    "--schedule", default=None, help="Schedule type: karras, exponential, beta, sgm_uniform, …"
)
@click.option(
    "--steps",
    default=None,
    type=int,
    help="Denoising steps. Default: the model's own (its sdkit.json; 4 for Turbo models), else 25.",
)
@click.option(
    "--cfg",
    "guidance_scale",
    default=None,
    type=float,
    help="CFG (guidance) scale; <= 1 turns guidance off. Default: the model's own (3 for the "
    "default model, 0 for Turbo models), else 7.",
)
@click.option(
    "--guidance-rescale", default=0.0, show_default=True, help="Guidance rescale φ, 0..1."
)
@click.option(
    "--clip-skip",
    default=None,
    type=int,
    help="1 = last text-encoder layer, 2 = penultimate (A1111 meaning).",
)
@click.option(
    "--seed",
    default=None,
    type=int,
    help="First seed; image i uses seed+i. Default: random (printed).",
)
@click.option(
    "--size",
    default=None,
    callback=_size,
    metavar="WxH",
    help="Image size, multiples of 8. Default: the model's native size.",
)
@click.option(
    "--model",
    "-m",
    default=None,
    metavar="ID|PATH",
    help="Hub id, diffusers folder or .safetensors file. Default: the model sdkit ships.",
)
@click.option(
    "--init-image",
    type=click.Path(exists=True, dir_okay=False),
    help="Start from this image (img2img).",
)
@click.option(
    "--mask",
    type=click.Path(exists=True, dir_okay=False),
    help="Inpaint where the mask is white (needs --init-image).",
)
@click.option(
    "--strength", type=float, default=None, help="img2img/inpaint strength, 0..1 (default 0.75)."
)
@click.option(
    "-o",
    "--output",
    default="sdkit.png",
    show_default=True,
    help="Output file (.png, .jpg, .webp). With -n > 1, '-1', '-2'… are added before the suffix.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing files.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N, mps. Default: the best present.")
@click.option(
    "--dtype", default=None, help="float32, float16 or bfloat16. Default: fp16 on GPU, fp32 on CPU."
)
@click.option(
    "--offline", is_flag=True, help="Never contact the Hugging Face hub (same as HF_HUB_OFFLINE=1)."
)
@click.option(
    "--optimize",
    type=click.Choice(["none", "compile", "max"]),
    default="none",
    show_default=True,
    help="compile: channels-last, fused QKV, regional torch.compile (short compile). max: whole "
    "UNet and VAE compiled, CUDA graphs on CUDA (longest compile). Worth it for many images.",
)
@click.option(
    "--feature-cache",
    type=int,
    default=None,
    metavar="N",
    help="Lossy speed-up (DeepCache style): the whole UNet runs every N-th step (2..50), the "
    "steps between reuse its deep features. Changes the pixels; recorded in the Recipe. "
    "Not with --optimize max.",
)
@click.option(
    "--memory",
    type=click.Choice(["high", "balanced", "low", "minimal"]),
    default="high",
    show_default=True,
    help="balanced: model offload to the CPU between uses, sliced VAE; low: + tiled VAE and "
    "attention slicing; minimal: sequential offload (slowest). Offload needs a GPU.",
)
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="Allow .ckpt/.bin weights. They can run code: only for files you trust.",
)
@click.option(
    "--signing-cert",
    type=click.Path(exists=True, dir_okay=False),
    envvar="SDKIT_SIGNING_CERT",
    show_envvar=True,
    help="PEM certificate chain (signer first) for the C2PA manifest. Default: your "
    "development credentials (`sdkit keys init`), trusted by nobody else.",
)
@click.option(
    "--signing-key",
    type=click.Path(exists=True, dir_okay=False),
    envvar="SDKIT_SIGNING_KEY",
    show_envvar=True,
    help="PEM private key of --signing-cert.",
)
@click.option(
    "--store",
    type=click.Path(dir_okay=False),
    envvar="SDKIT_STORE",
    show_envvar=True,
    help="Manifest store (SQLite) that keeps each manifest under its watermark, so that "
    "`sdkit verify --store` can re-link copies whose metadata was stripped.",
)
@click.option("--no-watermark", is_flag=True, help="Do not embed the invisible watermark.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the files and their Recipes as JSON.")
def generate(
    prompt: str,
    output: str,
    size: tuple[int, int] | None,
    model: str | None,
    overwrite: bool,
    device: str | None,
    dtype: str | None,
    offline: bool,
    optimize: str,
    memory: str,
    allow_pickle: bool,
    quiet: bool,
    as_json: bool,
    signing_cert: str | None,
    signing_key: str | None,
    store: str | None,
    no_watermark: bool,
    **options: Any,
) -> None:
    """Generate images from PROMPT and write them, watermarked and C2PA-signed.

    Each file carries its parameters (A1111-style infotext) and Content Credentials: a signed
    C2PA manifest with the Recipe, the watermark payload and a fingerprint of the pixels.
    Check one with `sdkit verify FILE`.

    \b
    Exit codes: 0 done; 1 other error; 2 invalid option; 3 model cannot be loaded;
    4 output cannot be written; 5 signing credentials or store unusable; 130 cancelled.
    """
    if (signing_cert is None) != (signing_key is None):
        raise click.UsageError("--signing-cert and --signing-key go together")
    paths = _output_paths(Path(output), options["num_images"])
    try:
        _check_outputs(paths, overwrite=overwrite)  # before the model loads: a bad -o costs nothing
    except SdkitError as exc:
        _fail(exc)
    written: list[Path] = []
    try:
        _quiet_libraries()
        from provenance.credentials import Credentials

        from .generator import Generator

        credentials = None
        if signing_cert is not None and signing_key is not None:
            credentials = Credentials.from_files(signing_cert, signing_key)

        if not quiet:
            click.echo(f"loading {model or 'the default model'} …", err=True)
        gen = Generator(
            model,
            device=device,
            dtype=dtype,
            progress=not quiet,
            allow_pickle=allow_pickle,
            local_files_only=True if offline else None,
            optimize=optimize,  # type: ignore[arg-type]
            memory=memory,  # type: ignore[arg-type]
            credentials=credentials,
            store=store,
            watermark=not no_watermark,
        )
        if gen.source.kind == "default" and not quiet:
            click.echo(
                "note: the default model is a small demonstration model (one coloured shape on "
                "a plain background, 256x256); pass --model for real pictures (docs/guide.md).",
                err=True,
            )
        width, height = size if size else (None, None)
        result = gen(prompt, width=width, height=height, **options)
        for im, path in zip(result.images, paths, strict=True):
            written.append(im.save(path, overwrite=overwrite))
    except (SdkitError, ProvenanceError) as exc:
        _fail(exc)
    except KeyboardInterrupt:
        # files are written whole or not at all (temp file + link): nothing partial is left
        done = ", ".join(str(p) for p in written)
        click.echo(f"\ninterrupted: {f'kept {done}' if written else 'no file written'}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {"path": str(p), **im.to_dict()}
                    for p, im in zip(written, result.images, strict=True)
                ],
                indent=2,
            )
        )
        return
    for path, image in zip(written, result.images, strict=True):
        click.echo(f"{path}  seed {image.recipe.seed}  {image.recipe.width}x{image.recipe.height}")
    click.echo(f"{len(written)} image(s) in {result.elapsed_s:.1f} s", err=True)


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


def _check_outputs(paths: Sequence[Path], *, overwrite: bool) -> None:
    """Refuse outputs that could not be written, before any model work.

    Raises:
        InvalidOptionError: the suffix is not an image format sdkit writes (exit 2).
        OutputError: a name is a folder or exists (without ``overwrite``), or its folder is
            missing or not writable (exit 4).
    """
    from .images import FORMATS

    for path in paths:
        if path.suffix.lower() not in FORMATS:
            raise InvalidOptionError(
                "output",
                str(path),
                "a file name ending in " + ", ".join(FORMATS),
                hint=f"-o {path.with_suffix('.png')} (the format follows the suffix).",
            )
        folder = path.parent
        if path.is_dir():
            raise OutputError(f"{path} is a folder", path=path, hint="give -o a file name.")
        if not folder.is_dir():
            raise OutputError(
                f"folder {folder} does not exist",
                path=path,
                hint=f"create it first (mkdir -p {folder}) or choose another -o.",
            )
        if not overwrite and (path.exists() or path.is_symlink()):
            raise OutputError(
                f"{path} exists", path=path, hint="choose another -o or pass --overwrite."
            )
        try:  # the one sure test of "writable" (permissions, read-only mounts, ACLs)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OutputError(
                f"cannot write in {folder}: {exc.strerror or exc}",
                path=path,
                hint="choose a folder you may write to.",
            ) from None


def _output_paths(output: Path, n: int) -> list[Path]:
    if n <= 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i + 1}{output.suffix}") for i in range(n)]


@cli.command("samplers")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def samplers_command(as_json: bool) -> None:
    """List the sampler names and schedule types --sampler/--schedule accept."""
    from .samplers import SAMPLERS, SCHEDULES

    if as_json:
        data = {
            "samplers": [
                {
                    "name": s.name,
                    "scheduler": s.scheduler_class.__name__,
                    "config": dict(s.config),
                    "aliases": list(s.aliases),
                    "schedules": list(s.schedules),
                    "description": s.description,
                }
                for s in SAMPLERS.values()
            ],
            "schedules": {
                name: {"config": dict(cfg), "description": desc}
                for name, (cfg, desc) in SCHEDULES.items()
            },
        }
        click.echo(json.dumps(data, indent=2, default=str))
        return
    rows = [
        (s.name, ", ".join(s.aliases), s.scheduler_class.__name__, ", ".join(s.schedules))
        for s in SAMPLERS.values()
    ]
    _table(("sampler", "also accepted", "diffusers scheduler", "schedules"), rows)
    click.echo("")
    _table(("schedule", "meaning"), [(name, desc) for name, (_, desc) in SCHEDULES.items()])
    click.echo(
        "\nLegacy A1111 names with a schedule suffix also work: 'DPM++ 2M Karras' = --sampler 'DPM++ 2M' --schedule karras."
    )


@cli.command("models")
@click.argument("dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option(
    "--cache-dir",
    default=None,
    help="Hugging Face hub cache to scan (default: HF_HUB_CACHE or ~/.cache/huggingface/hub).",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models_command(dirs: tuple[str, ...], cache_dir: str | None, as_json: bool) -> None:
    """List models that load offline: the default, the hub cache, and DIRS.

    DIRS are scanned two levels deep for diffusers folders and .safetensors files; the
    SDKIT_MODELS environment variable adds more (separated by the path separator).
    """
    import os

    from .models import list_local_models

    extra = [d for d in os.environ.get("SDKIT_MODELS", "").split(os.pathsep) if d]
    found = list_local_models([*dirs, *extra], cache_dir=cache_dir)
    if as_json:
        click.echo(json.dumps([m.to_dict() for m in found], indent=2))
        return
    if not found:
        click.echo("no models found offline")
        return
    _table(
        ("model", "kind", "family", "size"),
        [(m.name, m.kind, m.family, _human(m.size_bytes)) for m in found],
    )


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for i, row in enumerate([header, *rows]):
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


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
    type=click.Path(exists=True, file_okay=False),
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
    type=click.Path(exists=True, dir_okay=False),
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
@click.option(
    "--backbone",
    "backbone_model",
    default="ViT-L-14",
    show_default=True,
    help="open_clip architecture.",
)
@click.option("--pretrained", default="openai", show_default=True)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    help="Local weights for --backbone.",
)
@click.option("--feature", default="projected", show_default=True)
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
    probe on them against the real images in --real.
    """
    from provenance.detect_cli import fail, list_images
    from provenance.detector import Augmentation, Backbone, Detector
    from provenance.errors import ProvenanceError

    out = Path(output)
    if out.exists() and not overwrite:
        _fail(OutputError(f"{out} exists", path=out, hint="pass --overwrite or choose another -o."))
    real = list_images(real_dir)
    count = num_fakes if num_fakes is not None else len(real)
    texts = (
        [line.strip() for line in Path(prompts).read_text().splitlines() if line.strip()]
        if prompts
        else list(CALIBRATION_PROMPTS)
    )
    _quiet_libraries()
    try:
        from .generator import Generator

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
        _fail(exc)
    try:
        backbone = Backbone(
            backbone_model,
            None if checkpoint else pretrained,
            checkpoint=checkpoint,
            feature=feature,
            device=device,
            progress=True,
        )
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
        fail(exc)
    summary = probe.metadata["training"]
    click.echo(
        f"wrote {path} ({len(real)} real, {count} generated by {gen.source.name}; threshold {probe.threshold:.3f}, held-out balanced accuracy {summary['validation_balanced_accuracy']:.3f})"
    )


def _mount_provenance() -> None:
    from provenance.cli import detect_group, verify_command
    from provenance.keys_cli import keys_group
    from provenance.optout.cli import optout_group

    cli.add_command(verify_command)
    cli.add_command(keys_group)
    detect_group.add_command(calibrate_command)
    cli.add_command(detect_group)
    cli.add_command(optout_group)


_mount_provenance()


def main() -> None:
    """Console-script entry point."""
    cli()
