"""The sdkit command line, driven through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from sdkit import Recipe
from sdkit.cli import cli
from sdkit.images import read_infotext


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_generate_writes_images_with_recipes(
    runner: CliRunner, tiny_sd_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "img.png"
    args = ["generate", "a red circle", "-n", "2", "--sampler", "DPM++ 2M Karras", "--steps", "3"]
    args += ["--seed", "5", "--size", "72x64", "--model", str(tiny_sd_path), "-o", str(out), "-q"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    files = [tmp_path / "img-1.png", tmp_path / "img-2.png"]
    for i, path in enumerate(files):
        recipe = Recipe.from_infotext(read_infotext(path) or "")
        assert recipe.seed == 5 + i
        assert (recipe.sampler, recipe.schedule, recipe.steps) == ("DPM++ 2M", "karras", 3)
        with Image.open(path) as im:
            assert im.size == (72, 64)


def test_generate_json_output(runner: CliRunner, tiny_sd_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.webp"
    result = runner.invoke(
        cli,
        [
            "generate",
            "x",
            "--steps",
            "1",
            "--seed",
            "3",
            "-m",
            str(tiny_sd_path),
            "-o",
            str(out),
            "-q",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data[0]["path"] == str(out) and data[0]["recipe"]["seed"] == 3
    assert out.read_bytes()[8:12] == b"WEBP"


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--size", "100x64"], 2, "width"),
        (["--steps", "0"], 2, "steps"),
        (["--sampler", "Eular a"], 2, "Euler a"),  # the hint suggests the close name
        (["--size", "big"], 2, "WIDTHxHEIGHT"),
        (["--feature-cache", "1"], 2, "feature_cache"),
        (["--feature-cache", "3", "--optimize", "max"], 2, "compile"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(
    runner: CliRunner, tiny_sd_path: Path, tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    result = runner.invoke(
        cli, ["generate", "x", "-m", str(tiny_sd_path), "-o", str(tmp_path / "a.png"), *args]
    )
    assert result.exit_code == code
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "a.png").exists()


def test_missing_model_exits_6(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        cli, ["generate", "x", "-m", "acme/absent", "--offline", "-o", str(tmp_path / "a.png")]
    )
    assert result.exit_code == 6
    assert "acme/absent" in result.output and "Traceback" not in result.output


def test_existing_or_unwritable_output_exits_4(
    runner: CliRunner, tiny_sd_path: Path, tmp_path: Path
) -> None:
    existing = tmp_path / "a.png"
    existing.write_bytes(b"keep me")
    result = runner.invoke(cli, ["generate", "x", "-m", str(tiny_sd_path), "-o", str(existing)])
    assert result.exit_code == 4 and "exists" in result.output
    assert existing.read_bytes() == b"keep me"
    result = runner.invoke(
        cli, ["generate", "x", "-m", str(tiny_sd_path), "--steps", "1", "-o", "/proc/x.png", "-q"]
    )
    assert result.exit_code == 4 and "Traceback" not in result.output


def test_samplers_lists_a1111_and_comfy_names(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["samplers"])
    assert result.exit_code == 0
    for name in ("Euler a", "DPM++ 2M", "DPM++ 2M SDE", "UniPC", "DDIM", "LCM", "dpmpp_2m"):
        assert name in result.output
    data = json.loads(runner.invoke(cli, ["samplers", "--json"]).output)
    assert "karras" in data["schedules"]


def test_models_lists_folders(runner: CliRunner, tiny_sd_path: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        cli, ["models", str(tiny_sd_path.parent), "--cache-dir", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    names = [m["name"] for m in json.loads(result.output)]
    assert str(tiny_sd_path) in names and "sdkit-default" in names


def test_verify_reads_generated_parameters(
    runner: CliRunner, tiny_sd_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "a.png"
    assert (
        runner.invoke(
            cli, ["generate", "x", "-m", str(tiny_sd_path), "--steps", "1", "-o", str(out), "-q"]
        ).exit_code
        == 0
    )
    result = runner.invoke(cli, ["verify", str(out), "--json"])
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["infotext"].startswith("x\n") and "Seed: " in report["infotext"]


def test_generate_feature_cache_is_recorded(
    runner: CliRunner, tiny_sd_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cached.png"
    args = ["generate", "a red circle", "--steps", "4", "--seed", "2", "--feature-cache", "2"]
    result = runner.invoke(cli, [*args, "-m", str(tiny_sd_path), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    recipe = Recipe.from_infotext(read_infotext(out) or "")
    assert recipe.feature_cache == 2


def test_generate_takes_the_models_own_defaults(
    runner: CliRunner, tiny_sd_path: Path, tmp_path: Path
) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_sd_path, model)
    (model / "sdkit.json").write_text('{"defaults": {"steps": 2, "guidance_scale": 3}}')
    base = ["generate", "x", "--seed", "1", "-m", str(model), "-q"]
    assert runner.invoke(cli, [*base, "-o", str(tmp_path / "a.png")]).exit_code == 0
    recipe = Recipe.from_infotext(read_infotext(tmp_path / "a.png") or "")
    assert (recipe.steps, recipe.guidance_scale) == (2, 3.0)
    given = [*base, "--cfg", "5", "--steps", "3", "-o", str(tmp_path / "b.png")]
    assert runner.invoke(cli, given).exit_code == 0
    recipe = Recipe.from_infotext(read_infotext(tmp_path / "b.png") or "")
    assert (recipe.steps, recipe.guidance_scale) == (3, 5.0)
    # a broken file: the model cannot be loaded (exit 6), said plainly, nothing written
    (model / "sdkit.json").write_text('{"defaults": {"steps": "many"}}')
    broken = runner.invoke(cli, [*base, "-o", str(tmp_path / "c.png")])
    assert broken.exit_code == 6 and "sdkit.json" in broken.output
    assert "Traceback" not in broken.output and not (tmp_path / "c.png").exists()
    help_text = runner.invoke(cli, ["generate", "--help"]).output
    assert "the model's own" in help_text and "Turbo" in help_text
