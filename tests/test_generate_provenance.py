"""Every Generator output carries a watermark and Content Credentials; replay re-renders it."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from provenance.credentials import Credentials, init_development_credentials
from provenance.store import ManifestStore
from provenance.verify import verify
from provenance.watermark import extract
from sdkit import Generator, ReplayError
from sdkit.cli import cli

SIZE = {"width": 256, "height": 256, "steps": 2, "seed": 11}


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Credentials, Path]:
    paths = init_development_credentials(tmp_path_factory.mktemp("creds"))
    return Credentials.from_files(paths.certificate_chain, paths.private_key), paths.ca_certificate


@pytest.fixture(scope="module")
def gen(tiny_sd_path: Path, creds: tuple[Credentials, Path]) -> Generator:
    return Generator(tiny_sd_path, device="cpu", progress=False, credentials=creds[0])


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_saved_files_are_watermarked_and_signed(
    gen: Generator, creds: tuple[Credentials, Path], tmp_path: Path, suffix: str
) -> None:
    image = gen("a red circle", **SIZE).image
    assert image.watermark is not None and image.watermark.embedded
    found = extract(image.image)
    assert found is not None and found.payload == image.payload
    path = image.save(tmp_path / f"out{suffix}")
    report = verify(path, trust_anchors=creds[1])
    assert (report.verdict, report.c2pa_state) == ("verified", "trusted")
    assert report.digital_source_type == "trainedAlgorithmicMedia"
    assert report.recipe == json.loads(image.recipe.to_json())
    assert report.watermark_matches_manifest and report.fingerprint_matches
    assert report.infotext == image.infotext  # infotext written before signing, still there


def test_small_images_are_signed_without_a_watermark(gen: Generator, tmp_path: Path) -> None:
    image = gen("a blue square", width=64, height=64, steps=1, seed=1).image
    assert image.watermark is not None and not image.watermark.embedded
    report = verify(image.to_bytes("png"))
    assert report.verdict == "verified"
    assert any("too small" in note for note in report.notes)


def test_img2img_records_its_parent(gen: Generator, tmp_path: Path) -> None:
    parent = gen("a red circle", **SIZE).image.save(tmp_path / "parent.png")
    child = gen("a red circle", init_image=parent, strength=0.5, steps=2, seed=3).image
    report = verify(child.to_bytes("jpeg"))
    assert report.digital_source_type == "compositeWithTrainedAlgorithmicMedia"
    assert report.ingredients == (
        {"title": "parent.png", "relationship": "parentOf", "has_manifest": True},
    )


def test_replay_reproduces_the_pixels(gen: Generator, tmp_path: Path) -> None:
    image = gen("a green star", sampler="Euler a", **SIZE).image
    png = image.save(tmp_path / "a.png")
    result = gen.replay(png)
    assert result.exact and result.matches and result.max_abs_diff == 0
    assert result.recipe_source == "manifest" and result.recipe == image.recipe
    assert result.image.payload == image.payload
    jpeg = gen.replay(image.to_bytes("jpeg"))
    assert jpeg.matches and jpeg.psnr_db >= 40
    # an edited file no longer matches its Recipe
    edited = Image.open(png).rotate(180)
    buffer = io.BytesIO()
    edited.save(buffer, "PNG", pnginfo=None)
    buffer_bytes = buffer.getvalue()
    with pytest.raises(ReplayError, match="no Recipe"):
        gen.replay(buffer_bytes)  # PIL dropped the manifest and the infotext


def test_replay_refuses_what_it_cannot_reproduce(
    gen: Generator, tiny_sdxl_path: Path, tmp_path: Path
) -> None:
    other = Generator(tiny_sdxl_path, device="cpu", progress=False, watermark=False)
    foreign = other("x", width=64, height=64, steps=1, seed=1).image.to_bytes("png")
    with pytest.raises(ReplayError, match="another model"):
        gen.replay(foreign)
    init = Image.new("RGB", (64, 64), (200, 0, 0))
    edit = gen("x", init_image=init, strength=0.5, steps=2, seed=1).image.to_bytes("png")
    with pytest.raises(ReplayError, match="needs the image it started from"):
        gen.replay(edit)
    assert gen.replay(edit, init_image=init).exact
    with pytest.raises(ReplayError, match="not the one"):
        gen.replay(edit, init_image=Image.new("RGB", (64, 64), (0, 200, 0)))


def test_store_recovers_a_stripped_copy(tiny_sd_path: Path, tmp_path: Path) -> None:
    db = tmp_path / "manifests.db"
    gen = Generator(tiny_sd_path, device="cpu", progress=False, store=db)
    image = gen("a yellow triangle", **SIZE).image
    signed = image.to_bytes("png")
    stripped = io.BytesIO()
    Image.open(io.BytesIO(signed)).save(stripped, "JPEG", quality=80)
    report = verify(stripped.getvalue(), store=ManifestStore(db))
    assert report.recovered_from_store and report.verdict == "similar"
    assert report.recipe is not None and report.recipe["prompt"] == "a yellow triangle"


def test_development_credentials_are_announced_once(
    tiny_sd_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import provenance.credentials as credentials

    monkeypatch.setattr(credentials, "_announced", False)
    gen = Generator(tiny_sd_path, device="cpu", progress=False)
    with caplog.at_level(logging.WARNING, logger="provenance"):
        for seed in (1, 2):
            gen("x", width=64, height=64, steps=1, seed=seed).image.to_bytes("png")
    messages = [r.getMessage() for r in caplog.records if "development credentials" in r.message]
    assert len(messages) == 1 and "nobody else trusts them" in messages[0]


def test_save_never_clobbers_and_writes_nothing_on_failure(gen: Generator, tmp_path: Path) -> None:
    image = gen("x", width=64, height=64, steps=1, seed=1).image
    path = tmp_path / "taken.png"
    path.write_bytes(b"original")
    with pytest.raises(Exception, match="exists"):
        image.save(path)
    assert path.read_bytes() == b"original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.png"]


def test_cli_generate_then_verify(tiny_sd_path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli.png"
    db = tmp_path / "m.db"
    args = ["generate", "a red circle", "-m", str(tiny_sd_path), "-o", str(out), "--size"]
    result = runner.invoke(cli, [*args, "256x256", "--steps", "2", "-q", "--store", str(db)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(cli, ["verify", str(out)]).exit_code == 0
    copy = tmp_path / "copy.jpg"
    Image.open(out).save(copy, quality=85)  # metadata stripped
    assert runner.invoke(cli, ["verify", str(copy)]).exit_code == 1  # watermark, no manifest
    recovered = runner.invoke(cli, ["verify", str(copy), "--store", str(db)])
    assert recovered.exit_code == 7, recovered.output  # similar: recovered, no hash binding
    assert "manifest recovered from store" in recovered.output
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    again = runner.invoke(cli, [*args, "64x64", "--steps", "1", "-q"])
    assert again.exit_code == 4 and hashlib.sha256(out.read_bytes()).hexdigest() == digest


def test_cli_signs_with_the_given_certificate(tiny_sd_path: Path, tmp_path: Path) -> None:
    paths = init_development_credentials(tmp_path / "mine")
    out = tmp_path / "signed.webp"
    args = ["generate", "x", "-m", str(tiny_sd_path), "-o", str(out), "--size", "64x64", "-q"]
    args += ["--steps", "1", "--signing-cert", str(paths.certificate_chain)]
    result = CliRunner().invoke(cli, [*args, "--signing-key", str(paths.private_key)])
    assert result.exit_code == 0, result.output
    report = verify(out, trust_anchors=paths.ca_certificate)
    assert report.verdict == "verified" and report.trusted  # signed by this CA, not the default
    lonely = CliRunner().invoke(cli, [*args])  # a certificate without its key
    assert lonely.exit_code == 2 and "go together" in lonely.output
