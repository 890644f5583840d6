"""The default model's synthetic world (tools/shapes.py): captions and the independent judge."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from PIL import ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import shapes


@pytest.fixture(scope="module")
def judge() -> shapes.Judge:
    return shapes.Judge(seed=0, samples=600)


def test_judge_reads_renders_back(judge: shapes.Judge) -> None:
    rng = random.Random(7)
    wrong = []
    for i in range(60):
        scene = shapes.random_scene(rng, heldout=None)
        image = shapes.render(scene, rng)
        if i % 2:  # generated pictures are softer than renders
            image = image.filter(ImageFilter.GaussianBlur(1.5))
        reading = judge.read(image)
        got = (reading.background, reading.colour, reading.shape, reading.position)
        if got != (scene.background, scene.colour, scene.shape, scene.position):
            wrong.append((scene, got))
    assert len(wrong) <= 1, wrong


def test_judge_sees_no_shape_on_a_flat_picture(judge: shapes.Judge) -> None:
    from PIL import Image

    reading = judge.read(Image.new("RGB", (256, 256), shapes.COLOURS["blue"]))
    assert (reading.background, reading.shape, reading.colour) == ("blue", None, None)


def test_heldout_pairs_and_phrasings_stay_out_of_training() -> None:
    rng = random.Random(0)
    scenes = [shapes.random_scene(rng) for _ in range(2000)]
    assert not any((s.colour, s.shape) in shapes.HELDOUT_PAIRS for s in scenes)
    assert all(s.background != s.colour for s in scenes)
    held = shapes.random_scene(rng, heldout=True)
    assert (held.colour, held.shape) in shapes.HELDOUT_PAIRS
    assert not set(shapes.TRAIN_TEMPLATES) & set(shapes.HELDOUT_TEMPLATES)
    text = shapes.caption(scenes[0], random.Random(1))
    assert scenes[0].colour in text and scenes[0].shape in text and scenes[0].background in text
    assert " a orange" not in " ".join(shapes.caption(s, rng) for s in scenes[:300])


def test_judge_reads_pixelated_small_shapes(judge: shapes.Judge) -> None:
    # The default model's autoencoder paints 8 x 8 blocks: a small star then has no block of
    # pure colour, and its colour must be read from blends of shape and background.
    rng = random.Random(11)
    wrong = []
    for _ in range(60):
        scene = shapes.random_scene(rng, heldout=None)
        scene = shapes.Scene(scene.shape, scene.colour, scene.background, scene.position, "small")
        reading = judge.read(shapes.pixelate(shapes.render(scene, rng), 8))
        got = (reading.background, reading.colour, reading.position)
        if got != (scene.background, scene.colour, scene.position):
            wrong.append((scene, got))
    assert len(wrong) <= 1, wrong


def test_mixed_colour_unmixes_blends() -> None:
    white, black = shapes.COLOURS["white"], shapes.COLOURS["black"]
    # greys between black and white: white on black, not pink (the nearest colour of a grey)
    greys = [[round(b + a * (w - b)) for w, b in zip(white, black, strict=True)] for a in (0.3, 0.5, 0.7)]  # fmt: skip
    import numpy as np

    assert shapes.nearest_colour(np.array(greys[1])) != "white"
    assert shapes.mixed_colour(np.array(greys), np.array(black), exclude="black") == "white"
