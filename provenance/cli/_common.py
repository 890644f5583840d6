"""What every command of the CLI shares: the error edge, and helpers for image folders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from ..errors import ProvenanceError

__all__ = ["IMAGE_SUFFIXES", "fail", "list_images"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})


def fail(exc: ProvenanceError, code: int = 3) -> NoReturn:
    """Print a provenance error (and its hint) for people and exit with ``code``."""
    click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)
    sys.exit(code)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted."""
    root = Path(folder)
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
