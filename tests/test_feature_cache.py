"""feature_cache=N: DeepCache-style reuse of the UNet's deep features (lossy, recorded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdkit import Generator, Recipe
from sdkit.errors import InvalidOptionError
from sdkit.feature_cache import FeatureCache
from sdkit.images import read_infotext


@pytest.fixture(scope="module")
def gen(tiny_sd_path: Path) -> Generator:
    return Generator(tiny_sd_path, progress=False)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_deep_blocks_run_every_nth_step_only(gen: Generator) -> None:
    unet = gen.pipe.unet
    calls = {"mid": 0, "first": 0}
    hooks = [
        unet.mid_block.resnets[0].register_forward_hook(lambda *_: calls.__setitem__("mid", calls["mid"] + 1)),
        unet.down_blocks[0].resnets[0].register_forward_hook(lambda *_: calls.__setitem__("first", calls["first"] + 1)),
    ]  # fmt: skip
    try:
        gen("a red circle", sampler="Euler", seed=1, steps=7, feature_cache=3)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"mid": 3, "first": 7}  # steps 0, 3, 6 in full; the first block every step
    assert "forward" not in vars(unet.mid_block)  # the UNet is as before afterwards
    plain = gen("a red circle", seed=1, steps=7).image.image
    again = gen("a red circle", seed=1, steps=7).image.image
    assert np.array_equal(np.asarray(plain), np.asarray(again))


def test_pixels_change_a_little_and_the_recipe_says_why(gen: Generator, tmp_path: Path) -> None:
    exact = gen("a red circle", seed=4, steps=12, watermark_payloads=None).image
    cached = gen("a red circle", seed=4, steps=12, feature_cache=2).image
    a, b = np.asarray(exact.image), np.asarray(cached.image)
    assert not np.array_equal(a, b)
    assert _psnr(a, b) > 15
    assert cached.recipe.feature_cache == 2 and exact.recipe.feature_cache is None
    path = cached.save(tmp_path / "cached.png")
    assert Recipe.from_infotext(read_infotext(path) or "") == cached.recipe
    assert "Feature cache: 2" in (read_infotext(path) or "")


def test_replay_reproduces_a_cached_image(tiny_sd_path: Path, tmp_path: Path) -> None:
    gen = Generator(tiny_sd_path, progress=False)
    image = gen("a blue star", seed=9, steps=6, width=256, height=256, feature_cache=3).image
    path = image.save(tmp_path / "star.png")
    assert gen.replay(path).exact


@pytest.mark.parametrize("bad", [0, 1, 51, 2.5, True, "3"])
def test_bad_intervals_are_refused(gen: Generator, bad: object) -> None:
    with pytest.raises(InvalidOptionError) as info:
        gen("a red circle", steps=2, feature_cache=bad)  # type: ignore[arg-type]
    assert info.value.option == "feature_cache"
    with pytest.raises(InvalidOptionError):
        FeatureCache(gen.pipe.unet, bad)  # type: ignore[arg-type]
