"""``sdkit generate PROMPT``: images from a prompt, written watermarked and C2PA-signed."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from provenance.cli._common import ExistingPath, ExitCode
from provenance.errors import ProvenanceError

from ..errors import InvalidOptionError, OutputError, SdkitError
from ._addon_flags import addon_flags, pop_addon_flags
from ._generate_ray import echo_batch, generate_on_ray
from ._group import _quiet_libraries, _size, cli, error

if TYPE_CHECKING:
    from provenance.credentials import Credentials

    from ..batch import BatchPrompt

__all__ = ["generate"]


@cli.command()
@click.argument("prompt", required=False)
@click.option(
    "--prompts",
    "prompts_file",
    type=ExistingPath(),
    metavar="FILE",
    help="Many prompts: one per line, or one JSON object of options per line "
    '(e.g. {"prompt": "a cat", "steps": 20, "seed": 5}). Every line is checked before the '
    "model loads. Files go into the -o folder as NNNNN-SEED.png (see --format).",
)
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
    type=ExistingPath(),
    help="Start from this image (img2img).",
)
@click.option(
    "--mask",
    type=ExistingPath(),
    help="Inpaint where the mask is white (needs --init-image).",
)
@click.option(
    "--strength", type=float, default=None, help="img2img/inpaint strength, 0..1 (default 0.75)."
)
@click.option(
    "-o",
    "--output",
    default=None,
    help="Output file (.png, .jpg, .webp), default sdkit.png. With -n > 1, '-1', '-2'… are "
    "added before the suffix. With --prompts: an existing folder, default the current one.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "jpeg", "webp"]),
    default=None,
    help="File format with --prompts (default png); otherwise the format follows -o's suffix.",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=95,
    show_default=True,
    help="JPEG / WebP quality (ignored for PNG).",
)
@click.option("--overwrite", is_flag=True, help="Replace existing files.")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="With --prompts: where the images are made. ray: on a Ray cluster, one actor per GPU "
    '(pip install "sdkit[ray]"; docs/scale-out.md). Same files either way.',
)
@click.option(
    "--address",
    default=None,
    metavar="ADDR",
    help="With --engine ray: an existing cluster (ray://HOST:10001, auto). Default: a local one.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="With --engine ray: skip the files an interrupted run of the same command wrote "
    "(each checked against the run's ledger in -o/.sdkit-run).",
)
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
    type=click.Path(),
    envvar="SDKIT_SIGNING_CERT",
    show_envvar=True,
    help="PEM certificate chain (signer first) for the C2PA manifest. Default: your "
    "development credentials (`sdkit keys init`), trusted by nobody else.",
)
@click.option(
    "--signing-key",
    type=click.Path(),
    envvar="SDKIT_SIGNING_KEY",
    show_envvar=True,
    help="PEM private key of --signing-cert.",
)
@click.option(
    "--key-password",
    envvar="SDKIT_SIGNING_KEY_PASSWORD",
    show_envvar=True,
    default=None,
    help="Password of an encrypted --signing-key. Default: asked for (hidden) when the key is "
    "encrypted and stdin is a terminal. A flag is visible to other users of this machine "
    "(ps): prefer the variable or the prompt.",
)
@click.option(
    "--timestamp-url",
    envvar="SDKIT_TIMESTAMP_URL",
    show_envvar=True,
    default=None,
    metavar="URL",
    help="RFC 3161 time-stamp authority that countersigns each manifest (any credentials). "
    "If it cannot be reached, nothing is written (exit 5).",
)
@click.option(
    "--store",
    type=click.Path(dir_okay=False),
    envvar="SDKIT_STORE",
    show_envvar=True,
    help="Manifest store (SQLite) that keeps each manifest under its watermark, so that "
    "`sdkit verify --store` can re-link copies whose metadata was stripped.",
)
@addon_flags
@click.option("--no-watermark", is_flag=True, help="Do not embed the invisible watermark.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the files and their Recipes as JSON.")
def generate(
    prompt: str | None,
    prompts_file: str | None,
    output: str | None,
    fmt: str | None,
    quality: int,
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
    key_password: str | None,
    timestamp_url: str | None,
    store: str | None,
    no_watermark: bool,
    **options: Any,
) -> None:
    """Generate images from PROMPT (or each line of --prompts FILE), watermarked and signed.

    Each file carries its parameters (A1111-style infotext) and Content Credentials: a signed
    C2PA manifest with the Recipe, the watermark payload and a fingerprint of the pixels.
    Check one with `sdkit verify FILE`.

    \b
    Exit code: 0 done, 2 invalid option (or line of --prompts), 4 an input missing or an
    output that cannot be written, 5 signing credentials, their password, the time-stamp
    authority or the store unusable, 6 model not loadable, 8 another error, 130
    interrupted or cancelled (the table: `sdkit --help`).
    """
    if (signing_cert is None) != (signing_key is None):
        raise click.UsageError("--signing-cert and --signing-key go together")
    if (prompt is None) == (prompts_file is None):
        raise click.UsageError("give a PROMPT or --prompts FILE (one of the two)")
    if fmt is not None and prompts_file is None:
        raise click.UsageError("--format goes with --prompts; otherwise -o's suffix names it")
    engine, address, resume = options.pop("engine"), options.pop("address"), options.pop("resume")
    if engine == "ray" and prompts_file is None:
        raise click.UsageError("--engine ray goes with --prompts FILE")
    if engine == "local" and (address is not None or resume):
        raise click.UsageError("--address and --resume go with --engine ray")
    width, height = size if size else (None, None)
    vae, refiner, dirs = pop_addon_flags(options)
    jobs: list[BatchPrompt] = []
    try:  # before the model loads: a bad line or -o costs nothing
        if prompts_file is not None:
            from ..batch import output_paths  # torch loads here, not for `sdkit --help`
            from ..options import first_seed
            from .batch import read_prompts

            defaults = {**options, "width": width, "height": height}
            jobs = read_prompts(Path(prompts_file), defaults)
            counts = [j.num_images or options["num_images"] for j in jobs]
            first = first_seed(options.pop("seed"), sum(counts))
            folder = Path(output or ".")
            paths = output_paths(
                jobs, folder, num_images=options["num_images"], seed=first, fmt=fmt or "png"
            )
            if folder.exists() and not folder.is_dir():
                raise OutputError(
                    f"{folder} is not a folder", path=folder, hint="give -o a folder."
                )
        else:
            paths = _output_paths(Path(output or "sdkit.png"), options["num_images"])
        _check_outputs(paths, overwrite=overwrite or resume)  # --resume: the ledger decides
    except SdkitError as exc:
        raise error(exc) from None
    if engine == "ray":
        ray_run = {"address": address, "resume": resume, "quiet": quiet, "as_json": as_json}
        signing = (signing_cert, signing_key, key_password, timestamp_url)
        load: dict[str, Any] = {"device": device, "dtype": dtype, "memory": memory}
        load |= {"optimize": optimize, "vae": vae, "refiner": refiner, **dirs}
        load |= {"allow_pickle": allow_pickle, "local_files_only": True if offline else None}
        provenance = {"store": store, "watermark": not no_watermark}
        run = {"seed": first, "fmt": fmt or "png", "quality": quality, "overwrite": overwrite}
        run |= {"width": width, "height": height, **options, **provenance}
        check = functools.partial(_credentials, *signing)
        generate_on_ray(jobs, folder, model, signing, load, run, check_credentials=check, **ray_run)
        return
    before = {p: _identity(p) for p in paths}
    written: list[Path] = []
    try:
        _quiet_libraries()
        from ..generator import Generator

        credentials = _credentials(signing_cert, signing_key, key_password, timestamp_url)

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
            vae=vae,
            refiner=refiner,
            lora_dirs=dirs["lora_dirs"],
            embedding_dirs=dirs["embedding_dirs"],
        )
        if gen.source.kind == "default" and not quiet:
            click.echo(
                "note: the default model is a small demonstration model (one coloured shape on "
                "a plain background, 256x256); pass --model for real pictures (docs/guide.md).",
                err=True,
            )
        started = time.monotonic()
        if jobs:
            written = gen.generate_many(
                jobs,
                folder,
                seed=first,
                fmt=fmt or "png",
                quality=quality,
                overwrite=overwrite,
                width=width,
                height=height,
                **options,
            )
        else:
            result = gen(prompt or "", width=width, height=height, **options)
            for im, path in zip(result.images, paths, strict=True):
                written.append(im.save(path, overwrite=overwrite, quality=quality))
    except (SdkitError, ProvenanceError) as exc:
        raise error(exc) from None
    except KeyboardInterrupt:
        # files are written whole or not at all (temp file + link): nothing partial is left
        done = ", ".join(str(p) for p in written or _finished(before))
        click.echo(f"\ninterrupted: {f'kept {done}' if done else 'no file written'}", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    elapsed = time.monotonic() - started
    if jobs:
        echo_batch(jobs, written, options["num_images"], first, elapsed=elapsed, as_json=as_json)
        return
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


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file: a file replaced since has another one."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _finished(before: dict[Path, tuple[int, int] | None]) -> list[Path]:
    """The files of ``before`` written since (new, or replaced with --overwrite)."""
    return [p for p, old in before.items() if (now := _identity(p)) is not None and now != old]


def _credentials(
    cert: str | None, key: str | None, password: str | None, timestamp_url: str | None
) -> Credentials | None:
    """The signing credentials the flags (or their variables) name, checked before any model work.

    ``None`` leaves the choice to the Generator (development credentials) when nothing is
    given; a time-stamp URL alone applies to those development credentials.

    Raises:
        SigningError: a file is missing, the key's password is missing or wrong, the
            certificate breaks the C2PA profile, or the URL is not http(s) (exit 5).
    """
    from provenance.credentials import Credentials, default_credentials, key_is_encrypted

    timestamp_url = timestamp_url or None  # SDKIT_TIMESTAMP_URL= (empty) means none
    if cert is None or key is None:
        return None if timestamp_url is None else default_credentials(timestamp_url=timestamp_url)
    if password is None and _interactive():
        try:
            encrypted = key_is_encrypted(Path(key).read_bytes())
        except OSError:
            encrypted = False  # from_files names the problem
        if encrypted:
            password = click.prompt(f"password of the signing key {key}", hide_input=True, err=True)
    return Credentials.from_files(cert, key, None, timestamp_url, password=password)


def _interactive() -> bool:
    """Whether a password can be asked for: stdin is a terminal."""
    return sys.stdin is not None and sys.stdin.isatty()


def _check_outputs(paths: Sequence[Path], *, overwrite: bool) -> None:
    """Refuse outputs that could not be written, before any model work.

    Raises:
        InvalidOptionError: the suffix is not an image format sdkit writes (exit 2).
        OutputError: a name is a folder or exists (without ``overwrite``), or its folder is
            missing or not writable (exit 4).
    """
    from ..images import FORMATS

    probed: set[Path] = set()
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
        if folder in probed:
            continue
        probed.add(folder)
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
