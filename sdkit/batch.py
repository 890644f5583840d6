"""generate_many: provenance in a worker pool while the pipeline denoises the next batch.

Watermarking, encoding and signing are CPU work that releases the GIL (NumPy, Pillow's
encoders, c2pa's native signer), so a thread pool does them for one batch while the pipeline
denoises the next. Each file holds exactly what ``generator(prompt, seed=..., num_images=...)``
and ``image.save`` give. :meth:`sdkit.Generator.generate_many` is this function.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Unpack

from provenance.watermark import Payload

from .errors import InvalidOptionError, OutputError
from .images import FORMATS, GeneratedImage
from .options import BatchOptions, GenerationOptions, check_int, first_seed

__all__ = ["BatchPrompt", "Denoised", "Renderer", "generate_many", "output_paths"]


@dataclass(frozen=True)
class BatchPrompt:
    """One prompt of :func:`generate_many` with options of its own.

    Attributes:
        text: the prompt.
        options: options for this prompt only, as for ``Generator.__call__`` (``steps``,
            ``sampler``, ``width``…); they override the call's ``**options``.
        num_images: images for this prompt; ``None``: the call's ``num_images``.
        seed: the seed of this prompt's first image; ``None``: the call's sequence
            (image ``n`` of the run gets ``seed + n``).
    """

    text: str
    options: Mapping[str, Any] = field(default_factory=dict)
    num_images: int | None = None
    seed: int | None = None


class Denoised(Protocol):
    """One batch's pictures, denoised and decoded, waiting for the watermark."""

    def stamp(self, index: int, payload: Payload | None = None) -> GeneratedImage: ...


class Renderer(Protocol):
    """What :func:`generate_many` needs of a :class:`sdkit.Generator`."""

    progress: bool

    def _check(self, prompt: str, options: GenerationOptions) -> object: ...

    def _denoise(self, prompt: str, options: GenerationOptions) -> Denoised: ...


def generate_many(
    generator: Renderer,
    prompts: str | Iterable[str | BatchPrompt],
    output_dir: str | os.PathLike[str],
    *,
    num_images: int = 1,
    seed: int | None = None,
    fmt: str = "png",
    quality: int = 95,
    workers: int = 2,
    overwrite: bool = False,
    **options: Unpack[BatchOptions],
) -> list[Path]:
    """Make images for many prompts and write them as signed files as they are ready.

    Provenance stays off the critical path: while the pipeline denoises the next prompt, a
    pool of ``workers`` threads watermarks, encodes, signs and writes the images before it
    (NumPy, Pillow's encoders and c2pa's native signer release the GIL). Each file holds
    exactly what ``generator(prompt, seed=..., num_images=...)`` and ``image.save`` give.

    Args:
        generator: the :class:`sdkit.Generator` (this is its ``generate_many`` method).
        prompts: one prompt, or several; each makes ``num_images`` images in one batch. A
            :class:`BatchPrompt` carries options, an image count or a seed of its own.
        output_dir: where the files go (created if missing; checked writable before any
            work); image ``n`` (counting across prompts) is ``{n:05d}-{seed}.{ext}``.
        num_images: images per prompt (one batch).
        seed: the first seed; image ``n`` gets ``seed + n``. ``None`` draws one.
        fmt: ``"png"``, ``"jpeg"`` or ``"webp"``; ``quality`` for the last two.
        quality: JPEG / WebP quality.
        workers: threads that stamp and write (>= 1).
        overwrite: replace existing files; by default an existing name stops the call
            before any work.
        **options: as for ``Generator.__call__`` (``steps``, ``sampler``, ``width``…).

    Returns:
        The written paths, in order.

    Raises:
        InvalidOptionError: a bad option of any prompt (before any work).
        OutputError: a name exists, or the folder is a file, cannot be made or is not
            writable (all before any work), or a file cannot be written; files already
            written stay, complete and signed.
    """
    from tqdm.auto import tqdm

    # 1. Check the batch's own options, and that no file would be overwritten unasked.
    check_int("workers", workers, 1, 64)
    jobs = _jobs(prompts, num_images)
    counts = [num_images if j.num_images is None else j.num_images for j in jobs]
    total = sum(counts)
    first = first_seed(seed, total)
    paths = output_paths(jobs, output_dir, num_images=num_images, seed=first, fmt=fmt)
    starts = [0, *itertools.accumulate(counts)][:-1]
    seeds = [
        first + base if j.seed is None else j.seed for j, base in zip(jobs, starts, strict=True)
    ]
    folder = Path(output_dir)
    fmt_key = FORMATS["." + fmt.lower().lstrip(".")]
    taken = [p for p in paths if p.exists() or p.is_symlink()]
    if taken and not overwrite:
        raise OutputError(
            f"{len(taken)} of the {total} files exist, e.g. {taken[0]}",
            path=taken[0],
            hint="choose another folder or pass overwrite=True.",
        )
    # 2. Every prompt's options, checked before the folder is made: a bad one leaves nothing.
    batches = []
    for job, n, job_seed in zip(jobs, counts, seeds, strict=True):
        merged = {**options, **job.options}
        checked = GenerationOptions.from_kwargs(merged, num_images=n, seed=job_seed)
        generator._check(job.text, checked)
        batches.append(checked)
    _writable_folder(folder)

    def finish(denoised: Denoised, index: int, path: Path) -> Path:
        image = denoised.stamp(index)
        return image.save(path, fmt=fmt_key, overwrite=overwrite, quality=quality)

    # 3. Denoise batch after batch; the pool stamps and writes the one before.
    pending: list[Future[Path]] = []
    bar = tqdm(total=total, desc="images", unit="img", disable=not generator.progress)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="sdkit-stamp") as pool:
            for job, batch, base, n in zip(jobs, batches, starts, counts, strict=True):
                denoised = generator._denoise(job.text, batch)
                for i in range(n):
                    future = pool.submit(finish, denoised, i, paths[base + i])
                    future.add_done_callback(lambda _: bar.update())
                    pending.append(future)
                # keep at most two batches in flight: memory stays bounded
                while sum(not f.done() for f in pending) > 2 * max(counts) + workers:
                    next(f for f in pending if not f.done()).result()
            return [f.result() for f in pending]
    finally:
        bar.close()


def output_paths(
    prompts: str | Iterable[str | BatchPrompt],
    output_dir: str | os.PathLike[str],
    *,
    num_images: int = 1,
    seed: int,
    fmt: str = "png",
) -> list[Path]:
    """The files :func:`generate_many` writes for these arguments (``seed`` drawn already).

    Image ``n`` of the run (counting across prompts) is ``{n:05d}-{its seed}.{ext}``.

    Example:
        >>> [p.name for p in output_paths(["a", BatchPrompt("b", seed=7)], "out", seed=100)]
        ['00000-100.png', '00001-7.png']

    Raises:
        InvalidOptionError: bad prompts, ``num_images`` or ``fmt``.
    """
    jobs = _jobs(prompts, num_images)
    key = "." + fmt.lower().lstrip(".")
    if key not in FORMATS:
        raise InvalidOptionError("fmt", fmt, "png, jpeg or webp")
    ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[FORMATS[key]]
    paths: list[Path] = []
    n = 0
    for job in jobs:
        first = (seed + n) if job.seed is None else job.seed
        for i in range(num_images if job.num_images is None else job.num_images):
            paths.append(Path(output_dir) / f"{n:05d}-{first + i}.{ext}")
            n += 1
    return paths


def _jobs(prompts: str | Iterable[str | BatchPrompt], num_images: int) -> list[BatchPrompt]:
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    jobs = [BatchPrompt(t) if isinstance(t, str) else t for t in items]
    if not jobs or not all(isinstance(j, BatchPrompt) and isinstance(j.text, str) for j in jobs):
        raise InvalidOptionError("prompts", prompts, "a prompt or a list of prompts")
    check_int("num_images", num_images, 1, 64)
    for job in jobs:
        if job.num_images is not None:
            check_int("num_images", job.num_images, 1, 64)
    return jobs


def _writable_folder(folder: Path) -> None:
    """Make ``folder`` if missing and check that files can be written in it.

    Raises:
        OutputError: it is a file, cannot be made, or is not writable.
    """
    if folder.exists() and not folder.is_dir():
        raise OutputError(
            f"{folder} is not a folder", path=folder, hint="give output_dir a folder."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".sdkit-", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:  # the one sure test of "writable" (permissions, read-only mounts)
        raise OutputError(
            f"cannot write in {folder}: {exc.strerror or exc}",
            path=folder,
            hint="choose a folder you may write to.",
        ) from None
