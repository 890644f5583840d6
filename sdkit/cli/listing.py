"""``sdkit samplers`` and ``sdkit models``: what --sampler, --schedule and --model accept."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ._group import cli

__all__ = ["models_command", "samplers_command"]


@cli.command("samplers")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def samplers_command(as_json: bool) -> None:
    """List the sampler names and schedule types --sampler/--schedule accept."""
    from ..samplers import SAMPLERS, SCHEDULES

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
@click.option(
    "--lora-dir", "lora_dirs", multiple=True, help="A LoRA folder (default $SDKIT_LORA_DIRS)."
)
@click.option(
    "--embeddings",
    "embedding_dirs",
    multiple=True,
    help="An embeddings folder (default $SDKIT_EMBEDDING_DIRS).",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models_command(
    dirs: tuple[str, ...],
    cache_dir: str | None,
    lora_dirs: tuple[str, ...],
    embedding_dirs: tuple[str, ...],
    as_json: bool,
) -> None:
    """List models that load offline: the default, the hub cache, and DIRS; then the LoRAs and
    textual-inversion embeddings in --lora-dir / --embeddings.

    DIRS are scanned two levels deep for diffusers folders and .safetensors files; the
    SDKIT_MODELS environment variable adds more (separated by the path separator). A LoRA's
    family is read from its keys (no tensor is loaded), when they tell.
    """
    import os

    from ..local_models import list_local_models

    extra = [d for d in os.environ.get("SDKIT_MODELS", "").split(os.pathsep) if d]
    found = list_local_models([*dirs, *extra], cache_dir=cache_dir)
    addons = _addon_rows(lora_dirs, embedding_dirs)
    if as_json:
        click.echo(json.dumps([m.to_dict() for m in found] + addons, indent=2))
        return
    if not found:
        click.echo("no models found offline")
    else:
        _table(
            ("model", "kind", "family", "size"),
            [(m.name, m.kind, m.family, _human(m.size_bytes)) for m in found],
        )
    if addons:
        click.echo("")
        _table(
            ("add-on", "kind", "family", "size"),
            [(a["name"], a["kind"], a["family"], _human(a["size_bytes"])) for a in addons],
        )


def _addon_rows(lora_dirs: Sequence[str], embedding_dirs: Sequence[str]) -> list[dict[str, Any]]:
    """LoRAs and embeddings found, as ``sdkit models --json`` rows (``kind`` says which)."""
    from ..addons._files import folders, listing
    from ..addons.embeddings import EMBEDDING_SUFFIXES
    from ..addons.lora import DIFFUSERS_WEIGHTS, LORA_SUFFIXES, lora_family
    from ..errors import SdkitError

    rows: list[dict[str, Any]] = []
    loras = listing(folders(lora_dirs or None, "SDKIT_LORA_DIRS"), LORA_SUFFIXES)
    for name, path in loras.items():
        weights = path / DIFFUSERS_WEIGHTS if path.is_dir() else path
        family = "?"
        if weights.suffix == ".safetensors":
            try:
                family = lora_family(path) or "?"
            except SdkitError:
                family = "not a LoRA"
        rows.append(_row(name, "lora", family, weights))
    embeddings = listing(
        folders(embedding_dirs or None, "SDKIT_EMBEDDING_DIRS"), EMBEDDING_SUFFIXES
    )
    rows += [_row(name, "embedding", "?", path) for name, path in embeddings.items()]
    return rows


def _row(name: str, kind: str, family: str, path: Path) -> dict[str, Any]:
    size = path.stat().st_size if path.is_file() else 0
    return {"name": name, "kind": kind, "family": family, "size_bytes": size, "location": str(path)}


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
