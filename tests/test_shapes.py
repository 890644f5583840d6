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
