"""Writing images: atomic, never clobbering, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdkit import GeneratedImage, OutputError, Recipe
from sdkit.images import read_infotext

RECIPE = Recipe(
    prompt="p",
    model="m",
    model_sha256="0" * 64,
    pipeline="StableDiffusionPipeline",
    scheduler="EulerDiscreteScheduler",
    steps=1,
    guidance_scale=7.0,
    seed=1,
    width=16,
    height=16,
)


def _image() -> GeneratedImage:
    pixels = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    return GeneratedImage(image=Image.fromarray(pixels), recipe=RECIPE)


def test_png_is_lossless_and_carries_infotext(tmp_path: Path) -> None:
    im = _image()
    path = im.save(tmp_path / "a.png")
    with Image.open(path) as back:
        np.testing.assert_array_equal(np.asarray(back), np.asarray(im.image))
    assert read_infotext(path) == RECIPE.to_infotext()


def test_jpeg_is_444(tmp_path: Path) -> None:
    path = _image().save(tmp_path / "a.jpg")
    with Image.open(path) as back:
        # 4:4:4: every component samples at 1x1
        assert [f[1:3] for f in back.layer] == [(1, 1), (1, 1), (1, 1)]  # type: ignore[attr-defined]


def test_never_overwrites_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"original")
    with pytest.raises(OutputError) as info:
        _image().save(path)
    assert info.value.path == str(path)
    assert path.read_bytes() == b"original"
    _image().save(path, overwrite=True)
    assert path.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temp file left


def test_unknown_format_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(OutputError):
        _image().save(tmp_path / "a.gif")
    with pytest.raises(OutputError):
        _image().save(tmp_path / "missing" / "a.png")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder() -> None:
    # /proc refuses new files even for root.
    with pytest.raises(OutputError) as info:
        _image().save("/proc/sdkit-test.png")
    assert "cannot write" in info.value.message


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OutputError):
        _image().save(tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []
