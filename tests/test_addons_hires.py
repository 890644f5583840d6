"""Hires fix: output size, and the pixels of txt2img + upscale + img2img done by hand.

The oracle is plain diffusers, step by step as AUTOMATIC1111's ``sample_hr_pass`` does it
(modules/processing.py, commit 0027ce1): the first pass at the base size; the upscale
(``"Latent"``: ``F.interpolate(latents, size // 8, mode="bilinear", antialias=False)``;
``"Lanczos"``: PIL's Lanczos on the decoded picture; a model: the model on the decoded
picture); then img2img from fresh noise of the same seed that runs the last ``hires_steps``
steps of an ``int(hires_steps / strength)``-step schedule (``setup_img2img_steps``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spandrel
import torch
from diffusers import (
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact

from sdkit import Generator, InvalidOptionError, ModelLoadError, ModelNotFoundError
from sdkit.addons.hires import hires_size


@pytest.fixture(scope="module")
def sd(tiny_sd_path: Path) -> Generator:
    return Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False)


@pytest.fixture(scope="module")
def upscaler_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny RealESRGAN "Compact" 2x model (random weights) that spandrel recognises."""
    torch.manual_seed(0)
    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2)
    path = tmp_path_factory.mktemp("upscalers") / "tiny-2x.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _seed(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _by_hand(pipe: Any, img2img: Any, upscale: Any, *, latent: bool, steps: int, strength: float,
             hires_steps: int, seed: int) -> Image.Image:  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    img2img.set_progress_bar_config(disable=True)
    first = pipe("a lighthouse", num_inference_steps=steps, guidance_scale=7.0, height=64,
                 width=64, generator=_seed(seed),
                 output_type="latent" if latent else "pil").images  # fmt: skip
    image = upscale(first)
    # A1111: the last hires_steps steps of an int(hires_steps / strength)-step schedule
    total = int(hires_steps / min(strength, 0.999))
    out = img2img("a lighthouse", image=image, strength=hires_steps / total,
                  num_inference_steps=total, guidance_scale=7.0, generator=_seed(seed))  # fmt: skip
    return out.images[0]


def test_latent_hires_equals_txt2img_upscale_img2img_by_hand(
    sd: Generator, tiny_sd_path: Path
) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)

    def bilinear(latents: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(latents, size=(12, 12), mode="bilinear",
                                               antialias=False)  # fmt: skip

    want = _by_hand(pipe, img2img, bilinear, latent=True, steps=2, strength=0.6, hires_steps=2,
                    seed=5)  # fmt: skip
    got = sd("a lighthouse", steps=2, guidance_scale=7.0, seed=5, hires_scale=1.5,
             hires_steps=2, hires_strength=0.6)  # fmt: skip
    assert got.image.image.size == (96, 96) == want.size
    np.testing.assert_array_equal(_pixels(got.image.image), _pixels(want))
    recipe = got.image.recipe
    assert (recipe.width, recipe.height) == (64, 64)  # A1111's "Size" is the first pass'
    assert [(r.kind, r.name, r.sha256) for r in recipe.addons] == [("upscaler", "Latent", "")]


def test_lanczos_hires_equals_by_hand(sd: Generator, tiny_sd_path: Path) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)

    def lanczos(pictures: list[Image.Image]) -> list[Image.Image]:
        return [p.resize((128, 128), Image.Resampling.LANCZOS) for p in pictures]

    want = _by_hand(pipe, img2img, lanczos, latent=False, steps=2, strength=0.5, hires_steps=1,
                    seed=8)  # fmt: skip
    got = sd("a lighthouse", steps=2, guidance_scale=7.0, seed=8, hires_scale=2,
             hires_upscaler="Lanczos", hires_steps=1, hires_strength=0.5)  # fmt: skip
    assert got.image.image.size == (128, 128)
    np.testing.assert_array_equal(_pixels(got.image.image), _pixels(want))


def test_model_upscaler_equals_by_hand(
    sd: Generator, tiny_sd_path: Path, upscaler_file: Path
) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    model = spandrel.ModelLoader().load_from_file(upscaler_file)
    assert model.scale == 2

    def run_model(pictures: list[Image.Image]) -> list[Image.Image]:
        out = []
        for picture in pictures:
            x = torch.from_numpy(np.asarray(picture, np.float32) / 255).permute(2, 0, 1)[None]
            with torch.no_grad():
                y = model(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()
            out.append(Image.fromarray((y * 255).round().astype(np.uint8)))
        return out

    want = _by_hand(pipe, img2img, run_model, latent=False, steps=2, strength=0.7, hires_steps=2,
                    seed=2)  # fmt: skip
    got = sd("a lighthouse", steps=2, guidance_scale=7.0, seed=2, hires_scale=2,
             hires_upscaler=str(upscaler_file), hires_strength=0.7, hires_steps=2)  # fmt: skip
    np.testing.assert_array_equal(_pixels(got.image.image), _pixels(want))
    (record,) = got.image.recipe.addons
    assert record.kind == "upscaler" and record.name == "tiny-2x"
    assert record.sha256 == hashlib.sha256(upscaler_file.read_bytes()).hexdigest()


def test_sdxl_latent_hires_equals_by_hand(tiny_sdxl_path: Path) -> None:
    gen = Generator.from_pretrained(tiny_sdxl_path, device="cpu", progress=False)
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path)
    img2img = StableDiffusionXLImg2ImgPipeline(**pipe.components)

    def bilinear(latents: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(latents, size=(16, 16), mode="bilinear",
                                               antialias=False)  # fmt: skip

    want = _by_hand(pipe, img2img, bilinear, latent=True, steps=2, strength=0.7, hires_steps=2,
                    seed=1)  # fmt: skip
    got = gen("a lighthouse", steps=2, guidance_scale=7.0, seed=1, hires_scale=2,
              hires_steps=2, hires_strength=0.7)  # fmt: skip
    assert got.image.image.size == (128, 128)
    np.testing.assert_array_equal(_pixels(got.image.image), _pixels(want))


def test_size_is_a1111s_rounded_to_the_latent_grid(sd: Generator) -> None:
    # A1111: int(64 * 1.3) = 83 px wanted, 83 // 8 = 10 latents: 80 px
    assert hires_size(64, 64, 1.3) == (80, 80)
    assert hires_size(64, 48, 2.5) == (160, 120)
    got = sd("x", steps=1, seed=0, width=64, height=48, hires_scale=1.3, hires_steps=1)
    assert got.image.image.size == (80, 56)  # int(62.4) = 62 -> 56


def test_typed_errors_before_any_work(sd: Generator, tmp_path: Path) -> None:
    init = Image.new("RGB", (64, 64))
    for options, option in [
        ({"hires_scale": 1.0}, "hires_scale"),
        ({"hires_scale": 9}, "hires_scale"),
        ({"hires_scale": "2"}, "hires_scale"),
        ({"hires_scale": 2, "hires_strength": 0}, "hires_strength"),
        ({"hires_scale": 2, "hires_strength": 1.5}, "hires_strength"),
        ({"hires_scale": 2, "hires_steps": 0}, "hires_steps"),
        ({"hires_steps": 4}, "hires_steps"),
        ({"hires_upscaler": "Lanczos"}, "hires_upscaler"),
        ({"hires_scale": 2, "init_image": init}, "hires_scale"),
    ]:
        with pytest.raises(InvalidOptionError) as info:
            sd("x", steps=1, **options)
        assert info.value.option == option, options
    with pytest.raises(ModelNotFoundError, match="no upscaler named 'ESRGAN_4x'"):
        sd("x", steps=1, hires_scale=2, hires_upscaler="ESRGAN_4x")
    pickle = tmp_path / "model.pth"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(ModelLoadError, match=r"not a \.safetensors file"):
        sd("x", steps=1, hires_scale=2, hires_upscaler=str(pickle))
    other = tmp_path / "not-an-upscaler.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, other)
    with pytest.raises(ModelLoadError, match="not an upscaler model spandrel recognises"):
        sd("x", steps=1, hires_scale=2, hires_upscaler=str(other))


def test_cli_hires_flags(tiny_sd_path: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sdkit.cli import cli

    out = tmp_path / "big.png"
    args = ["generate", "a tree", "--model", str(tiny_sd_path), "--steps", "2", "--seed", "1",
            "--hires", "1.5", "--hires-steps", "1", "--hires-strength", "0.5",
            "--hires-upscaler", "Lanczos", "-o", str(out), "-q"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    with Image.open(out) as written:
        assert written.size == (96, 96)
    bad = CliRunner().invoke(cli, [*args[:-3], "--hires", "0.5", "-o", str(tmp_path / "x.png")])
    assert bad.exit_code == 2 and "hires_scale" in bad.output


def test_recipe_infotext_and_replay_carry_the_hires_fix(sd: Generator, tmp_path: Path) -> None:
    from sdkit import Recipe

    got = sd("a tree", steps=2, seed=6, hires_scale=1.5, hires_steps=1, hires_strength=0.6)
    recipe = got.image.recipe
    (record,) = recipe.addons
    assert dict(record.settings) == {"scale": 1.5, "steps": 1, "strength": 0.6}
    text = recipe.to_infotext()
    # A1111's own fields (modules/processing.py extra_generation_params)
    for field in ("Hires upscale: 1.5", "Hires steps: 1", "Hires upscaler: Latent",
                  "Denoising strength: 0.6", "Size: 64x64"):  # fmt: skip
        assert field in text, field
    assert Recipe.from_infotext(text) == recipe
    options = recipe.to_options()
    assert (options.hires_scale, options.hires_upscaler, options.hires_steps) == (1.5, "Latent", 1)
    assert options.hires_strength == 0.6 and options.strength is None
    path = got.image.save(tmp_path / "tree.png")
    replayed = sd.replay(path)
    assert replayed.exact and replayed.image.image.size == (96, 96)
