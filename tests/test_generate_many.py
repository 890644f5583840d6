"""Generator.generate_many: signed files streamed out while the next batch denoises."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from provenance import verify
from sdkit import Generator
from sdkit.errors import InvalidOptionError, OutputError

PROMPTS = ["a red circle", "a blue square", "a green star"]


@pytest.fixture(scope="module")
def plain(tiny_sd_path: Path) -> Generator:
    return Generator(tiny_sd_path, progress=False, watermark=False)


def test_files_hold_what_single_calls_make(plain: Generator, tmp_path: Path) -> None:
    paths = plain.generate_many(PROMPTS, tmp_path / "out", num_images=2, seed=40, steps=2)
    assert [p.name for p in paths] == [f"{n:05d}-{40 + n}.png" for n in range(6)]
    for k, prompt in enumerate(PROMPTS):
        direct = plain(prompt, seed=40 + 2 * k, num_images=2, steps=2)
        for i, image in enumerate(direct):
            with Image.open(paths[2 * k + i]) as written:
                assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(image.image))
            assert image.recipe.prompt == prompt and image.recipe.seed == 40 + 2 * k + i


def test_files_are_watermarked_and_signed(tiny_sd_path: Path, tmp_path: Path) -> None:
    gen = Generator(tiny_sd_path, progress=False)
    paths = gen.generate_many(PROMPTS[:2], tmp_path, seed=3, steps=2, width=256, height=256, fmt="jpeg", workers=3)  # fmt: skip
    assert [p.suffix for p in paths] == [".jpg", ".jpg"]
    payloads = set()
    for path in paths:
        report = verify(path)
        assert report.verdict == "verified" and report.watermark is not None, report.problems
        assert report.watermark_matches_manifest and report.recipe is not None
        payloads.add(report.watermark["payload"]["content_id"])
    assert len(payloads) == 2  # one payload per image


def test_existing_names_stop_it_before_any_work(plain: Generator, tmp_path: Path) -> None:
    taken = tmp_path / "00001-11.png"
    taken.write_bytes(b"mine")
    with pytest.raises(OutputError, match="exist"):
        plain.generate_many(PROMPTS, tmp_path, seed=10, steps=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00001-11.png"]
    assert hashlib.sha256(taken.read_bytes()).hexdigest() == hashlib.sha256(b"mine").hexdigest()
    paths = plain.generate_many(PROMPTS, tmp_path, seed=10, steps=2, overwrite=True)
    assert taken.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(paths) == 3


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"steps": 0}, "steps"),
        ({"stepz": 2}, "stepz"),
        ({"workers": 0}, "workers"),
        ({"fmt": "gif"}, "fmt"),
        ({"seed": -1}, "seed"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"width": 100}, "width"),
        ({"feature_cache": 0}, "feature_cache"),
    ],
)
def test_bad_options_are_refused_before_any_file(
    plain: Generator, tmp_path: Path, options: dict[str, object], name: str
) -> None:
    with pytest.raises(InvalidOptionError) as info:
        plain.generate_many(PROMPTS, tmp_path / "out", **options)  # type: ignore[arg-type]
    assert info.value.option == name
    assert not (tmp_path / "out").exists()  # not even the folder
