"""VAE: the swapped VAE is the one used (pixels of plain diffusers with ``vae=``), from a
diffusers folder and from an A1111-style single file; records; a VAE that does not fit."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline
from ldm_export import vae_to_ldm
from PIL import Image
from safetensors.torch import save_file
from tiny_models import _vae

from sdkit import Generator, ModelLoadError, ModelNotFoundError


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny VAE of the tiny models' architecture (other random weights)."""
    torch.manual_seed(42)
    vae = _vae()
    out = tmp_path_factory.mktemp("vaes") / "other-vae"
    vae.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def vae_file(vae_folder: Path) -> Path:
    """The same VAE as one A1111-style file (LDM key names, as A1111's VAE folder holds)."""
    vae = AutoencoderKL.from_pretrained(vae_folder)
    state = vae_to_ldm(vae.state_dict(), dict(vae.config))
    path = vae_folder.parent / "other-vae.vae.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_folder_vae_pixels_equal_plain_diffusers_with_vae(
    tiny_sd_path: Path, vae_folder: Path
) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_sd_path, vae=AutoencoderKL.from_pretrained(vae_folder)
    )
    pipe.set_progress_bar_config(disable=True)
    want = pipe("a boat", num_inference_steps=2, guidance_scale=7.0,
                generator=torch.Generator("cpu").manual_seed(4)).images[0]  # fmt: skip
    gen = Generator(tiny_sd_path, device="cpu", progress=False, vae=vae_folder)
    got = gen("a boat", steps=2, guidance_scale=7.0, seed=4)
    np.testing.assert_array_equal(_pixels(got.image.image), _pixels(want))
    plain = Generator(tiny_sd_path, device="cpu", progress=False)("a boat", steps=2,
                                                                  guidance_scale=7.0, seed=4)  # fmt: skip
    assert not np.array_equal(_pixels(plain.image.image), _pixels(want))
    (record,) = got.image.recipe.addons
    weights = vae_folder / "diffusion_pytorch_model.safetensors"
    assert (record.kind, record.name, record.source) == ("vae", "other-vae", str(vae_folder))
    assert record.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert got.image.recipe.model_sha256 == plain.image.recipe.model_sha256  # the base's


def test_single_file_vae_is_the_same_vae(
    tiny_sd_path: Path, vae_folder: Path, vae_file: Path
) -> None:
    from_folder = Generator(tiny_sd_path, device="cpu", progress=False, vae=vae_folder)
    from_file = Generator(tiny_sd_path, device="cpu", progress=False, vae=vae_file)
    a = from_folder("a boat", steps=1, seed=9).image
    b = from_file("a boat", steps=1, seed=9).image
    np.testing.assert_array_equal(_pixels(a.image), _pixels(b.image))
    (record,) = b.recipe.addons
    assert record.name == "other-vae.vae"
    assert record.sha256 == hashlib.sha256(vae_file.read_bytes()).hexdigest()


def test_vae_that_does_not_fit_is_refused(tiny_sd_path: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    _vae(latent_channels=3).save_pretrained(tmp_path / "three", safe_serialization=True)
    with pytest.raises(ModelLoadError, match="makes 3-channel latents; this model's UNet takes 4"):
        Generator(tiny_sd_path, device="cpu", progress=False, vae=tmp_path / "three")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a diffusers AutoencoderKL folder"):
        Generator(tiny_sd_path, device="cpu", progress=False, vae=tmp_path / "empty")
    with pytest.raises(ModelNotFoundError):
        Generator(tiny_sd_path, device="cpu", progress=False, vae=tmp_path / "nowhere.safetensors")
    # HF_HUB_OFFLINE=1 in the tests: a hub id not in the cache is named, not fetched
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        Generator(tiny_sd_path, device="cpu", progress=False, vae="madebyollin/sdxl-vae-fp16-fix")
    junk = tmp_path / "junk.safetensors"
    save_file({"weight": torch.zeros(2)}, junk)
    with pytest.raises(ModelLoadError, match="could not load"):
        Generator(tiny_sd_path, device="cpu", progress=False, vae=junk)
