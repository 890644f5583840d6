"""What docs/guide.md says about the pixels of ``stream()``, batches and single calls.

With the watermark on, each call embeds a new random payload, so one seed does not give the
same pixels twice; ``replay`` (the payload from the manifest) and ``watermark=False`` do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdkit import Generator
from sdkit.images import GeneratedImage

PROMPT = "a small red circle at the top left on a blue background"
STEPS = 2


def _pixels(image: GeneratedImage) -> np.ndarray:
    return np.asarray(image.image.convert("RGB"), dtype=np.int16)


def _differ(a: GeneratedImage, b: GeneratedImage) -> int:
    return int((_pixels(a) != _pixels(b)).any(axis=-1).sum())


@pytest.mark.slow
def test_without_the_watermark_stream_batch_and_single_calls_are_equal() -> None:
    gen = Generator(device="cpu", progress=False, watermark=False)
    single = [gen(PROMPT, seed=seed, steps=STEPS).image for seed in (5, 6)]
    streamed = list(gen.stream(PROMPT, num_images=2, seed=5, steps=STEPS))
    batch = list(gen(PROMPT, seed=5, num_images=2, steps=STEPS))
    assert [im.seed for im in streamed] == [im.seed for im in batch] == [5, 6]
    for one, from_stream, from_batch in zip(single, streamed, batch, strict=True):
        assert _differ(one, from_stream) == 0  # exactly, as the guide says
        assert _differ(one, from_batch) == 0  # on the CPU: measured equal, as the guide says


@pytest.mark.slow
def test_with_the_watermark_one_seed_differs_and_replay_reproduces(tmp_path: Path) -> None:
    gen = Generator(device="cpu", progress=False)
    first = gen(PROMPT, seed=5, steps=STEPS).image
    streamed = next(gen.stream(PROMPT, num_images=1, seed=5, steps=STEPS))
    assert first.recipe.seed == streamed.recipe.seed == 5
    assert first.watermark.embedded and streamed.watermark.embedded
    # a new random payload each call: many pixels move by a few levels
    assert _differ(first, streamed) > 1000
    assert int(np.abs(_pixels(first) - _pixels(streamed)).max()) <= 16
    path = first.save(tmp_path / "first.png")
    replayed = gen.replay(path)
    assert replayed.exact  # the payload from the manifest: the same pixels
