"""generate_many: provenance in a worker pool while the pipeline denoises the next batch.

Watermarking, encoding and signing are CPU work that releases the GIL (NumPy, Pillow's
encoders, c2pa's native signer), so a thread pool does them for one batch while the pipeline
denoises the next. Each file holds exactly what ``generator(prompt, seed=..., num_images=...)``
and ``image.save`` give. :meth:`sdkit.Generator.generate_many` is this function.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, Unpack

from provenance.watermark import Payload

from .errors import InvalidOptionError, OutputError
from .images import FORMATS, GeneratedImage
from .options import BatchOptions, GenerationOptions, check_int, first_seed

__all__ = ["Denoised", "Renderer", "generate_many"]


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
    prompts: str | Iterable[str],
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
        prompts: one prompt, or several; each makes ``num_images`` images in one batch.
        output_dir: where the files go (created if missing); image ``n`` (counting across
            prompts) is ``{n:05d}-{seed}.{ext}``.
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
        InvalidOptionError: a bad option (before any work).
        OutputError: a name exists (before any work), or a file cannot be written; files
            already written stay, complete and signed.
    """
    from tqdm.auto import tqdm

    # 1. Check the batch's own options, and that no file would be overwritten unasked.
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidOptionError("prompts", prompts, "a prompt or a list of prompts")
    check_int("num_images", num_images, 1, 64)
    check_int("workers", workers, 1, 64)
    key = "." + fmt.lower().lstrip(".")
    if key not in FORMATS:
        raise InvalidOptionError("fmt", fmt, "png, jpeg or webp")
    ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[FORMATS[key]]
    total = len(texts) * num_images
    first = first_seed(seed, total)
    folder = Path(output_dir)
    paths = [folder / f"{n:05d}-{first + n}.{ext}" for n in range(total)]
    taken = [p for p in paths if p.exists()]
    if taken and not overwrite:
        raise OutputError(
            f"{len(taken)} of the {total} files exist, e.g. {taken[0]}",
            path=taken[0],
            hint="choose another folder or pass overwrite=True.",
        )
    # 2. Every generation option, checked before the folder is made: a bad one leaves nothing.
    checked = GenerationOptions.from_kwargs(options, num_images=num_images, seed=first)
    generator._check(texts[0], checked)
    folder.mkdir(parents=True, exist_ok=True)

    def finish(denoised: Denoised, index: int, path: Path) -> Path:
        image = denoised.stamp(index)
        return image.save(path, fmt=FORMATS[key], overwrite=overwrite, quality=quality)

    # 3. Denoise batch after batch; the pool stamps and writes the one before.
    pending: list[Future[Path]] = []
    bar = tqdm(total=total, desc="images", unit="img", disable=not generator.progress)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="sdkit-stamp") as pool:
            for k, text in enumerate(texts):
                base = k * num_images
                batch = dataclasses.replace(checked, seed=first + base)
                denoised = generator._denoise(text, batch)
                for i in range(num_images):
                    future = pool.submit(finish, denoised, i, paths[base + i])
                    future.add_done_callback(lambda _: bar.update())
                    pending.append(future)
                # keep at most two batches in flight: memory stays bounded
                while sum(not f.done() for f in pending) > 2 * num_images + workers:
                    next(f for f in pending if not f.done()).result()
            return [f.result() for f in pending]
    finally:
        bar.close()
