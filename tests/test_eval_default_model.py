"""tools/eval_default_model.py: its prompt sets and its scoring, with stand-in generators."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import shapes  # noqa: E402
from eval_default_model import ATTRIBUTES, evaluate, prompt_set  # noqa: E402


@pytest.fixture(scope="module")
def judge() -> shapes.Judge:
    return shapes.Judge(seed=0, samples=600)


class Painter:
    """Stands in for a Generator: draws the scene behind each prompt (or a fixed one)."""

    def __init__(self, scenes: dict[str, shapes.Scene], fixed: shapes.Scene | None = None):
        self.scenes, self.fixed, self.calls = scenes, fixed, []

    def __call__(self, prompt: str, **options: Any) -> Any:
        self.calls.append((prompt, options))
        scene = self.fixed or self.scenes[prompt]
        picture = shapes.render(scene, random.Random(options["seed"]))
        return SimpleNamespace(image=SimpleNamespace(image=picture))


def test_prompt_sets_are_fixed_and_keep_their_promises() -> None:
    heldout = prompt_set(40, unseen=False, seed=1)
    assert heldout == prompt_set(40, unseen=False, seed=1)  # the same prompts every run
    assert heldout[:10] == prompt_set(10, unseen=False, seed=1)  # a prefix of the larger set
    assert not any((s.colour, s.shape) in shapes.HELDOUT_PAIRS for s, _, _ in heldout)
    unseen = prompt_set(40, unseen=True, seed=2)
    assert all((s.colour, s.shape) in shapes.HELDOUT_PAIRS for s, _, _ in unseen)
    seeds = [seed for _, _, seed in heldout + unseen]
    assert len(set(seeds)) == len(seeds) and min(seeds) >= 1_000_000  # far from training's
    # the held-out phrasings only: a capitalised position first, or "on a ... background" first
    assert all(p[0].isupper() or p.startswith("on ") for _, p, _ in heldout + unseen)


def test_a_generator_that_draws_the_prompt_scores_full_marks(judge: shapes.Judge) -> None:
    prompts = prompt_set(12, unseen=False, seed=1)
    painter = Painter({prompt: scene for scene, prompt, _ in prompts})
    result = evaluate(painter, judge, prompts, steps=25, guidance=3.0)
    assert result["n"] == 12
    assert result["accuracy"] == dict.fromkeys(ATTRIBUTES, 1.0)
    assert result["colour_and_shape"] == 1.0 and result["all"] == 1.0
    # each prompt went through with its own seed and the settings asked for
    assert [(p, o["seed"], o["steps"], o["guidance_scale"]) for p, o in painter.calls] == [
        (prompt, seed, 25, 3.0) for _, prompt, seed in prompts
    ]


def test_a_generator_that_ignores_the_prompt_is_scored_by_what_it_drew(
    judge: shapes.Judge, tmp_path: Path
) -> None:
    prompts = prompt_set(20, unseen=False, seed=1)
    fixed = shapes.Scene("circle", "red", "blue", "center", "large")
    result = evaluate(Painter({}, fixed), judge, prompts, save=tmp_path, label="x_")
    expected = {a: sum(getattr(s, a) == getattr(fixed, a) for s, _, _ in prompts) / 20 for a in ATTRIBUTES}  # fmt: skip
    assert result["accuracy"] == expected
    assert result["accuracy"]["shape"] < 0.5
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert len(saved) == 20 and saved[0].startswith("x_000_")
    # the file name marks each attribute right (+) or wrong (-), in ATTRIBUTES order
    scene = prompts[0][0]
    marks = "".join("+" if getattr(scene, a) == getattr(fixed, a) else "-" for a in ATTRIBUTES)
    assert saved[0] == f"x_000_{marks}.png"
    with Image.open(tmp_path / saved[0]) as picture:
        assert picture.size == (256, 256)
