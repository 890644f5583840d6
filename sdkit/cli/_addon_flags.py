"""The add-on flags of ``sdkit generate`` and what they become: call options and load options.

``--vae``, ``--control`` (with ``--control-preprocessor``), ``--hires*``, ``--refiner*``,
``--lora`` / ``--lora-dir``, ``--embeddings`` and ``--fuse-loras``: :func:`addon_flags` adds
them to the command (in this order, the order of its help), and :func:`pop_addon_flags` turns
their values into ``Generator(...)`` arguments and call options.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["addon_flags", "control_specs", "lora_weights", "pop_addon_flags"]

_Command = TypeVar("_Command", bound=Callable[..., Any])

_FLAGS = [
    click.option(
        "--vae",
        default=None,
        metavar="FILE|FOLDER|HUB_ID",
        help="Another VAE: an A1111-style .safetensors file, a diffusers folder or a hub id.",
    ),
    click.option(
        "--control",
        nargs=2,
        multiple=True,
        metavar="MODEL IMAGE[:SCALE]",
        help="A ControlNet (folder, .safetensors or hub id) and its control image, optionally "
        "with its weight (0..2, default 1). Repeat for several.",
    ),
    click.option(
        "--control-preprocessor",
        type=click.Choice(["none", "canny"]),
        default="none",
        show_default=True,
        help="Applied to every --control image: canny = OpenCV edges (100/200).",
    ),
    click.option(
        "--hires",
        "hires_scale",
        type=float,
        default=None,
        metavar="SCALE",
        help="Hires fix (A1111): generate, upscale by SCALE (e.g. 2), then img2img.",
    ),
    click.option(
        "--hires-steps", type=int, default=None, help="Hires pass steps (default: --steps)."
    ),
    click.option(
        "--hires-strength", type=float, default=None, help="Hires pass denoising strength (0.7)."
    ),
    click.option(
        "--hires-upscaler",
        default=None,
        metavar="Latent|Lanczos|FILE",
        help="Latent (default), Lanczos, or a super-resolution model .safetensors (ESRGAN…).",
    ),
    click.option(
        "--refiner",
        default=None,
        metavar="MODEL",
        help="An SDXL refiner (hub id, folder or file) that finishes each picture.",
    ),
    click.option(
        "--refiner-switch", type=float, default=None, help="Where the refiner takes over (0.8)."
    ),
    click.option(
        "--lora",
        "lora_specs",
        multiple=True,
        metavar="NAME[:W]",
        help="A LoRA by name (in --lora-dir / $SDKIT_LORA_DIRS) or path, at weight W (default 1). "
        "Repeat for several; <lora:name:w> in the prompt works too.",
    ),
    click.option(
        "--lora-dir",
        "lora_dirs",
        multiple=True,
        metavar="DIR",
        help="A folder of LoRAs (repeatable; default $SDKIT_LORA_DIRS).",
    ),
    click.option(
        "--embeddings",
        "embedding_dirs",
        multiple=True,
        metavar="DIR",
        help="A folder of textual-inversion embeddings: each file's stem is a prompt word "
        "(repeatable; default $SDKIT_EMBEDDING_DIRS).",
    ),
    click.option(
        "--fuse-loras", is_flag=True, help="Merge the LoRAs into the weights: faster steps."
    ),
]


def addon_flags(command: _Command) -> _Command:
    """Add the add-on flags to ``command``, as if each were one of its decorators."""
    for flag in reversed(_FLAGS):
        command = flag(command)
    return command


def pop_addon_flags(options: dict[str, Any]) -> tuple[Any, Any, dict[str, list[str] | None]]:
    """Take the add-on flags out of ``options`` (the command's other keywords).

    ``--lora`` and ``--control`` go back in as the call options ``loras`` and ``control``
    (when given); the rest is returned for the Generator: ``(vae, refiner, dirs)``, ``dirs``
    its ``lora_dirs`` and ``embedding_dirs``.

    Raises:
        click.BadParameter: a ``--lora`` weight or ``--control`` scale is not a number.
    """
    vae, refiner = options.pop("vae"), options.pop("refiner")
    dirs = {k: list(options.pop(k)) or None for k in ("lora_dirs", "embedding_dirs")}
    loras = lora_weights(options.pop("lora_specs"))
    if loras:
        options["loras"] = loras
    controls, preprocessor = options.pop("control"), options.pop("control_preprocessor")
    if controls:
        options["control"] = control_specs(controls, preprocessor)
    return vae, refiner, dirs


def lora_weights(specs: Sequence[str]) -> dict[str, float]:
    """``--lora NAME[:W]`` as ``loras=`` (a path that holds a colon stays a path)."""
    weights: dict[str, float] = {}
    for spec in specs:
        name, weight = spec, 1.0
        head, _, tail = spec.rpartition(":")
        if head and not Path(spec).exists():
            try:
                name, weight = head, float(tail)
            except ValueError:
                raise click.BadParameter(
                    f"{spec!r}: W after the last ':' is not a number", param_hint="--lora"
                ) from None
        weights[name] = weight
    return weights


def control_specs(controls: Sequence[tuple[str, str]], preprocessor: str) -> list[Any]:
    """``--control MODEL IMAGE[:SCALE]`` as ControlSpecs (a path with a colon is a path)."""
    from ..addons.control import ControlSpec  # torch loads here, not for `sdkit --help`

    specs = []
    for model, image in controls:
        scale = 1.0
        head, _, tail = image.rpartition(":")
        if head and not Path(image).exists():
            try:
                scale = float(tail)
            except ValueError:
                raise click.BadParameter(
                    f"{image!r}: SCALE after the last ':' is not a number", param_hint="--control"
                ) from None
            image = head
        specs.append(ControlSpec(model, image, scale, preprocessor=preprocessor))  # type: ignore[arg-type]
    return specs
