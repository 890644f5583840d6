"""The model sdkit ships (issue 7): a small model, trained by tools/train_default_model.py."""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from sdkit import Generator
from sdkit.cli import cli
from sdkit.models import DEFAULT_MODEL_DIR

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import shapes  # noqa: E402

# Of these 12, at its defaults (CFG 3, Karras sigmas) the shipped model gets 12 backgrounds, 12
# shape colours, 12 positions and 11 shapes right (over 200 prompts, tools/eval_default_model.py:
# 100 %, 98.5 %, 100 %, 87.5 %). A model that ignores the text gets about 1.5 of 12 colours, 1.3
# positions and 2.4 shapes. (The judge before the half-contrast outline and the radial spectrum
# read 7 of these shapes right, and 61.5 % of the 200.)
AT_LEAST = {"background": 11, "colour": 10, "position": 11, "shape": 9}

# Prompts in phrasings never seen in training (shapes.HELDOUT_TEMPLATES), with fixed seeds.
PROMPTS = [
    (shapes.Scene("circle", "red", "blue", "center", "large"), 11),
    (shapes.Scene("square", "yellow", "purple", "top left", "large"), 12),
    (shapes.Scene("triangle", "white", "green", "bottom right", "large"), 13),
    (shapes.Scene("star", "pink", "black", "top", "large"), 14),
    (shapes.Scene("cross", "orange", "blue", "left", "large"), 15),
    (shapes.Scene("circle", "green", "white", "bottom left", "small"), 16),
]


@pytest.fixture(scope="module")
def generator() -> Generator:
    return Generator(progress=False)


@pytest.fixture(scope="module")
def judge() -> shapes.Judge:
    return shapes.Judge(seed=0, samples=600)


def test_shipped_folder_is_a_stable_diffusion_folder() -> None:
    index = json.loads((DEFAULT_MODEL_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    weights = sorted(DEFAULT_MODEL_DIR.rglob("*.safetensors"))
    assert {w.parent.name for w in weights} == {"unet", "vae", "text_encoder"}
    assert not list(DEFAULT_MODEL_DIR.rglob("*.bin")) and not list(DEFAULT_MODEL_DIR.rglob("*.pt"))
    assert sum(w.stat().st_size for w in weights) <= 25 * 2**20
    assert not (DEFAULT_MODEL_DIR / "PLACEHOLDER").exists()
    log = json.loads((DEFAULT_MODEL_DIR / "training_log.json").read_text())
    # the shipped weights come from a base run and a continuation of it (its log, under "base")
    runs = [log["base"], log] if "base" in log else [log]
    losses = [row["loss"] for run in runs for row in run["log"] if row.get("phase") == "denoiser"]
    assert len(losses) >= 40 and np.mean(losses[-10:]) < 0.5 * np.mean(losses[:3])


def test_generator_loads_it_through_the_ordinary_path(generator: Generator) -> None:
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    assert generator.source.kind == "default"
    assert type(generator.pipe) is StableDiffusionPipeline
    assert generator.native_size == (256, 256)
    tokenizer = generator.pipe.tokenizer
    assert isinstance(tokenizer, CLIPTokenizer) and len(tokenizer) == 49408
    # the real CLIP BPE vocabulary: any prompt tokenizes, with no unknown tokens
    ids = tokenizer("an astronaut riding a horse on Mars, 4k, trending").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and tokenizer.unk_token_id not in ids[1:-1]
    assert tokenizer.convert_ids_to_tokens(ids[1:3]) == ["an</w>", "astronaut</w>"]


def test_autoencoder_is_the_block_mean_and_its_inverse(generator: Generator) -> None:
    vae = generator.pipe.vae
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mean
        pooled = F.avg_pool2d(x, 8)
        # r, g, b block means and a fourth channel, their mean (4 channels: inpainting works)
        assert latents.shape == (2, 4, 8, 8)
        assert torch.allclose(latents[:, :3], pooled, atol=1e-3)
        assert torch.allclose(latents[:, 3], pooled.mean(dim=1), atol=1e-3)
        decoded = vae.decode(latents).sample
    assert torch.allclose(decoded, F.interpolate(pooled, scale_factor=8), atol=1e-3)


def test_calls_default_to_cfg_3_and_karras_from_the_folder(generator: Generator) -> None:
    # the shipped model follows prompts best at a low CFG (its model card), not sdkit's general
    # 7, and samples with Karras sigmas: the folder's own scheduler, as sampler="Euler",
    # schedule="karras" sets it
    assert (generator.defaults.steps, generator.defaults.guidance_scale) == (25, 3.0)
    prompt = "a small red star at the top left on a blue background"
    made = generator(prompt, seed=3).image
    assert (made.recipe.steps, made.recipe.guidance_scale) == (25, 3.0)
    assert made.recipe.scheduler_config["use_karras_sigmas"] is True
    same = generator(prompt, seed=3, sampler="Euler", schedule="karras", guidance_scale=3).image
    assert made.recipe.scheduler_config == same.recipe.scheduler_config


def test_same_seed_same_pixels() -> None:
    generator = Generator(progress=False, watermark=False)  # each watermark payload is new
    prompt = "a small green star at the top left on a white background"
    first = np.asarray(generator(prompt, seed=5).image.image)
    again = np.asarray(generator(prompt, seed=5).image.image)
    other = np.asarray(generator(prompt, seed=6).image.image)
    assert first.shape == (256, 256, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_follows_the_prompts(generator: Generator, judge: shapes.Judge) -> None:
    # Background, shape colour, shape and position follow prompts in held-out phrasings.
    rng = random.Random(0)
    right = dict.fromkeys(AT_LEAST, 0)
    for k, (scene, seed) in enumerate(PROMPTS * 2):
        prompt = shapes.caption(scene, rng, shapes.HELDOUT_TEMPLATES)
        reading = judge.read(generator(prompt, seed=seed + 100 * (k // len(PROMPTS))).image.image)
        for attribute in right:
            right[attribute] += getattr(reading, attribute) == getattr(scene, attribute)
    assert all(right[a] >= AT_LEAST[a] for a in AT_LEAST), right


def test_the_prompt_steers_the_same_noise(generator: Generator, judge: shapes.Judge) -> None:
    # one seed (the same starting noise), two prompts: the prompt decides the background
    a = judge.read(generator("a red square in the center on a yellow background", seed=3).image.image)  # fmt: skip
    b = judge.read(generator("a white circle in the center on a blue background", seed=3).image.image)  # fmt: skip
    assert (a.background, b.background) == ("yellow", "blue")


def test_cli_main_job(tmp_path: Path, judge: shapes.Judge) -> None:
    runner = CliRunner()
    out = tmp_path / "circle.png"
    args = ["generate", "a red circle on a blue background", "--seed", "1", "-o", str(out), "-q"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    image = Image.open(out)
    assert image.size == (256, 256)
    reading = judge.read(image)
    assert (reading.background, reading.colour, reading.shape) == ("blue", "red", "circle")
    verified = runner.invoke(cli, ["verify", str(out), "--json"])
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.output)
    report = report[0] if isinstance(report, list) else report
    assert report["verdict"] == "verified" and report["watermark"] is not None


def _weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _plain_diffusers() -> Any:
    """The shipped folder as plain diffusers loads it: no dtype, no sdkit code."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(DEFAULT_MODEL_DIR)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_plain_diffusers_loads_and_runs_it_on_a_cpu() -> None:
    """Issue 20: the text encoder loaded as fp16 beside an fp32 UNet and the call failed."""
    pipe = _plain_diffusers()
    assert {p.dtype for p in pipe.components["text_encoder"].parameters()} == {torch.float32}
    assert pipe.unet.dtype == pipe.vae.dtype == torch.float32 and pipe.device.type == "cpu"
    prompt = "a small yellow star at the top left on a purple background"
    seed = torch.Generator("cpu").manual_seed(3)
    plain = pipe(prompt, num_inference_steps=2, height=64, width=64, guidance_scale=3.0, generator=seed, output_type="np").images[0]  # fmt: skip
    assert plain.shape == (64, 64, 3) and np.isfinite(plain).all() and plain.std() > 0.05
    # sdkit's own loading and call (the folder's scheduler, seed 3 on the CPU, CFG 3, "" as the
    # negative prompt; a prompt without weights embeds as diffusers embeds it): the same pixels
    ours = Generator(progress=False, watermark=False)
    made = ours(prompt, seed=3, steps=2, width=64, height=64, guidance_scale=3.0).image
    assert made.recipe.scheduler_config["use_karras_sigmas"] is pipe.scheduler.config.use_karras_sigmas is True  # fmt: skip
    assert np.array_equal(np.asarray(made.image), pipe.numpy_to_pil(plain)[0])


def test_the_model_cards_plain_diffusers_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    # the builder copies its card into the folder it writes: the two must not drift
    assert card == (ROOT / "tools" / "default_model_card.md").read_text()
    blocks = re.findall(r"^ *```python\n(.*?)^ *```$", card, flags=re.S | re.M)
    assert len(blocks) == 1 and '"sdkit/default_model"' in blocks[0]
    code = textwrap.dedent(blocks[0]).replace('"sdkit/default_model"', repr(str(DEFAULT_MODEL_DIR)))
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(code, scope)  # our own documentation
    saved = np.asarray(Image.open(tmp_path / "star.png").convert("RGB"))
    assert saved.shape == (256, 256, 3)
    # what the card says: sdkit's defaults for this model give the same pixels
    made = Generator(progress=False, watermark=False)("a small yellow star at the top left on a purple background", seed=3)  # fmt: skip
    assert (made.image.recipe.steps, made.image.recipe.guidance_scale) == (25, 3.0)
    assert np.array_equal(np.asarray(made.image.image), saved)


@pytest.mark.slow
def test_training_is_reproducible(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        command = [sys.executable, str(ROOT / "tools" / "train_default_model.py"), "--out", str(out)]  # fmt: skip
        small = ["--images", "48", "--text-steps", "5", "--text-batch", "8", "--unet-steps", "3"]
        small += ["--batch", "4", "--device", "cpu"]
        done = subprocess.run([*command, *small], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(out)
    assert _weights_digest(runs[0]) == _weights_digest(runs[1])
    log = json.loads((runs[0] / "training_log.json").read_text())
    assert [row["step"] for row in log["log"] if row.get("phase") == "denoiser"] == [0, 2]
    assert json.loads((runs[0] / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"  # fmt: skip
    assert json.loads((runs[0] / "sdkit.json").read_text()) == {"defaults": {"steps": 25, "guidance_scale": 3.0}}  # fmt: skip

    # a continuation (how the shipped model's small shapes were retrained): the base's frozen
    # text encoder, its latent scale kept though the data differ, its log kept under "base"
    more = tmp_path / "more"
    options = ["--out", str(more), "--init-from", str(runs[0]), "--small-radius", "0.2"]
    options += ["--images", "48", "--unet-steps", "2", "--batch", "4", "--device", "cpu"]
    train = [sys.executable, str(ROOT / "tools" / "train_default_model.py")]
    done = subprocess.run([*train, *options], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    continued = json.loads((more / "training_log.json").read_text())
    assert continued["base"] == log and continued["settings"]["small_radius"] == 0.2
    assert continued["vae_scaling_factor"] == log["vae_scaling_factor"]
    own = next(row["scaling_factor"] for row in continued["log"] if row["phase"] == "data")
    assert own != log["vae_scaling_factor"]  # larger small shapes: other latents
    assert (more / "text_encoder" / "model.safetensors").read_bytes() == (runs[0] / "text_encoder" / "model.safetensors").read_bytes()  # fmt: skip
    assert "_name_or_path" not in json.loads((more / "unet" / "config.json").read_text())
    # fp16 on disk, but plain diffusers must load the text encoder as float32 (issue 20)
    for run in (runs[0], more):
        assert json.loads((run / "text_encoder" / "config.json").read_text())["dtype"] == "float32"
    assert _weights_digest(more / "unet") != _weights_digest(runs[0] / "unet")
    # a folder this script did not write is refused before the data are made
    done = subprocess.run([*train, "--init-from", str(tmp_path), "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode != 0 and "has no training_log.json" in done.stderr
    assert "rendered" not in done.stdout and not (tmp_path / "x").exists()


def test_probe_measures_how_much_the_shape_word_matters() -> None:
    import probe_default_model as probe

    scene = shapes.Scene("star", "pink", "black", "top", "small")
    assert [probe.wrong_shape(scene, i).shape for i in range(5)] == [
        "circle", "square", "triangle", "cross", "circle",
    ]  # fmt: skip
    rows = probe.probe(DEFAULT_MODEL_DIR, scenes=8, timesteps=(500,))
    ratio = {row["size"]: row["ratio"] for row in rows}
    assert [(row["size"], row["t"]) for row in rows] == [("small", 500), ("large", 500)]
    assert all(row["ratio"] == round(row["wrong"] / row["right"], 3) for row in rows)
    # Naming another shape raises the shipped model's error on a large shape 2.3-fold (2.59 over
    # 48 scenes) and on a small one 1.45-fold (1.64); the weights before it, which drew every
    # small shape as the same dot, gave small shapes 1.06 here (1.15 over 48)
    assert ratio["large"] > 2.0 and 1.3 < ratio["small"] < ratio["large"]
