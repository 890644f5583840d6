"""Every script in examples/ runs (with few steps) and does what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdkit import Recipe
from sdkit.images import read_infotext

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, out: Path, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--steps", "2", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_generate_example(tmp_path: Path) -> None:
    stdout = _run("generate.py", tmp_path)
    files = sorted(tmp_path.glob("circle-*.png"))
    assert [f.name for f in files] == ["circle-1234.png", "circle-1235.png"]
    recipe = Recipe.from_infotext(read_infotext(files[1]) or "")
    assert (recipe.seed, recipe.sampler, recipe.schedule) == (1235, "DPM++ 2M", "karras")
    assert "seed 1234" in stdout


@pytest.mark.slow
def test_img2img_inpaint_example(tmp_path: Path) -> None:
    stdout = _run("img2img_inpaint.py", tmp_path)  # the default model: 4 latent channels
    assert "StableDiffusionImg2ImgPipeline" in stdout
    assert "StableDiffusionInpaintPipeline" in stdout
    with Image.open(tmp_path / "img2img.png") as im:
        assert im.size == (256, 256)  # the model's native size
    with Image.open(tmp_path / "inpaint.png") as im:
        inpainted = np.asarray(im.convert("RGB"), dtype=np.int16)
    # the init picture: navy, a red disc in the middle; the mask repaints the left half only
    init = Image.new("RGB", (256, 256), "navy")
    ImageDraw.Draw(init).ellipse((64, 64, 192, 192), "red")
    # the default model's autoencoder keeps 8 x 8 block means: compare with those
    kept = np.asarray(init.resize((32, 32), Image.Resampling.BOX).resize((256, 256)), np.int16)
    right = np.abs(inpainted[:, 136:] - kept[:, 136:]).mean()  # away from the mask's edge
    left = np.abs(inpainted[:, :120] - kept[:, :120]).mean()
    assert right < 6, right  # the watermark's few levels, no more
    assert left > 40, left  # repainted: a green background, not navy and red


@pytest.mark.slow
def test_default_model_example(tmp_path: Path) -> None:
    stdout = _run("default_model.py", tmp_path)
    assert sorted(f.name for f in tmp_path.glob("shapes-?.png")) == [f"shapes-{i}.png" for i in range(6)]  # fmt: skip
    with Image.open(tmp_path / "shapes-sheet.png") as sheet:
        assert sheet.size == (768, 512)
    with Image.open(tmp_path / "shapes-0.png") as first:
        assert first.size == (256, 256)
    assert "shapes-0.png: verified, signed by" in stdout and "watermark found" in stdout
