"""``sdkit verify --probe P --small upscale|error``: images smaller than the detector's crop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_detector import TINY, _register  # the tiny open_clip model of the detector's tests

from provenance.detector import Backbone, LinearProbe
from sdkit.cli import cli


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A probe on a tiny random CLIP checkpoint whose path it records."""
    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("clip")
    _register(folder, TINY, 32)
    torch.manual_seed(0)
    checkpoint = folder / "tiny.pt"
    torch.save(open_clip.create_model(TINY).state_dict(), checkpoint)
    backbone = Backbone(TINY, None, checkpoint=checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    linear = LinearProbe(
        weight=rng.normal(size=backbone.dim),
        bias=0.0,
        mean=np.zeros(backbone.dim),
        scale=np.ones(backbone.dim),
        metadata={
            "backbone": {**backbone.id.to_dict(), "checkpoint_path": backbone.checkpoint_path}
        },
    )
    return linear.save(folder / "probe.safetensors")


@pytest.fixture
def small_image(tmp_path: Path) -> Path:
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 100), "teal").save(path)
    return path


@pytest.mark.parametrize("option", ["--probe", "--detector"])
def test_small_images_are_upscaled_by_default(probe: Path, small_image: Path, option: str) -> None:
    result = CliRunner().invoke(cli, ["verify", str(small_image), option, str(probe), "--json"])
    assert result.exit_code == 3, result.output  # no provenance, and a score
    assert 0.0 <= json.loads(result.output)["detector_score"] <= 1.0


def test_small_error_refuses_them_with_a_hint(probe: Path, small_image: Path) -> None:
    args = ["verify", str(small_image), "--detector", str(probe), "--small", "error"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 4, result.output  # a file that could not be read (the table)
    assert "100x100" in result.output and "--small upscale" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 4 and "100x100" in json.loads(result.output)["error"]


def test_small_takes_only_its_two_values(probe: Path, small_image: Path) -> None:
    args = ["verify", str(small_image), "--probe", str(probe), "--small", "pad"]
    assert CliRunner().invoke(cli, args).exit_code == 2
