"""``sdkit generate --prompts FILE --engine ray`` (the run on a Ray cluster), and the rows that
a ``--prompts`` run prints, on Ray or not.

:func:`generate_on_ray` runs :func:`sdkit.distributed.generate_many_ray` with the credentials
passed by path; :func:`echo_batch` prints one row per file written (or them as JSON).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from provenance.cli._common import ExitCode
from provenance.errors import ProvenanceError

from ..errors import SdkitError
from ._group import error

if TYPE_CHECKING:
    from ..batch import BatchPrompt

__all__ = ["batch_rows", "echo_batch", "generate_on_ray"]


def batch_rows(
    jobs: Sequence[BatchPrompt], written: Sequence[Path], n: int, first: int
) -> list[dict[str, Any]]:
    """One row per file of a --prompts run: its path, prompt and seed (as generate_many
    numbers them: image ``k`` of the run gets ``first + k`` unless its line gives a seed)."""
    rows: list[dict[str, Any]] = []
    files = iter(written)
    for job in jobs:
        start = first + len(rows) if job.seed is None else job.seed
        for i in range(job.num_images or n):
            rows.append({"path": str(next(files)), "prompt": job.text, "seed": start + i})
    return rows


def echo_batch(
    jobs: Sequence[BatchPrompt],
    written: Sequence[Path],
    n: int,
    first: int,
    *,
    elapsed: float,
    as_json: bool,
) -> None:
    """Print the rows of a --prompts run (:func:`batch_rows`) as text, or as JSON."""
    rows = batch_rows(jobs, written, n, first)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['path']}  seed {row['seed']}")
    click.echo(f"{len(written)} image(s), {len(jobs)} prompt(s), {elapsed:.1f} s", err=True)


def generate_on_ray(
    jobs: list[BatchPrompt],
    folder: Path,
    model: str | None,
    signing: tuple[str | None, str | None, str | None, str | None],
    load: dict[str, Any],
    run: dict[str, Any],
    *,
    check_credentials: Callable[[], object],
    address: str | None,
    resume: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """``--engine ray``: the run on a Ray cluster (:mod:`sdkit.distributed`), then its rows.

    The workers load the credentials by path (``signing``: cert, key, password, time-stamp
    URL), after the driver has checked them; a key's password reaches them as the
    ``SDKIT_SIGNING_KEY_PASSWORD`` variable of a local cluster (set it on a remote one).
    """
    try:
        from ..distributed import CredentialsRef, default_credentials_ref, generate_many_ray

        cert, key, password, timestamp_url = signing
        check_credentials()  # the signing flags checked here: exit 5 before any work
        ref = default_credentials_ref()
        if cert is not None and key is not None:
            if password is not None:
                os.environ["SDKIT_SIGNING_KEY_PASSWORD"] = password
            env = "SDKIT_SIGNING_KEY_PASSWORD" if password is not None else None
            ref = CredentialsRef(
                os.path.abspath(cert), os.path.abspath(key), env, timestamp_url=timestamp_url or None
            )  # fmt: skip
        if not quiet:
            click.echo(f"starting Ray ({address or 'a local cluster'}) …", err=True)
        started = time.monotonic()
        written = generate_many_ray(
            model, jobs, folder, address=address, load_options=load,
            resume=resume, credentials=ref, **run,
        )  # fmt: skip
    except (SdkitError, ProvenanceError) as exc:
        raise error(exc) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted: run again with --resume to finish", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    elapsed = time.monotonic() - started
    echo_batch(jobs, written, run["num_images"], run["seed"], elapsed=elapsed, as_json=as_json)
