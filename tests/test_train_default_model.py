"""Parts of tools/train_default_model.py: the analytic autoencoder, timesteps, loss weights,
caption labels."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import shapes  # noqa: E402
import train_default_model as train  # noqa: E402


def test_analytic_autoencoder_has_four_channels_the_last_their_mean() -> None:
    vae = train.build_vae()
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mean
        decoded = vae.decode(latents).sample
    means = train.block_means(pixels)
    assert latents.shape == (2, 4, 8, 8)
    assert torch.allclose(means[:, 3], means[:, :3].mean(dim=1))
    assert torch.allclose(latents, means, atol=1e-3)
    # the decoder paints the r, g, b block means and ignores the fourth channel
    blocks = torch.nn.functional.interpolate(means[:, :3], scale_factor=8)
    assert torch.allclose(decoded, blocks, atol=1e-3)
    latents[:, 3] = 5.0
    with torch.no_grad():
        assert torch.allclose(vae.decode(latents).sample, blocks, atol=1e-3)


def test_timesteps_lean_to_the_noisy_half() -> None:
    t = train.sample_timesteps(20000, 0.5, torch.Generator().manual_seed(0))
    assert int(t.min()) >= 0 and int(t.max()) <= 999
    noisy = float((t >= 400).float().mean())
    assert abs(noisy - (0.5 + 0.5 * 0.6)) < 0.02  # half from [400, 1000), half uniform
    uniform = train.sample_timesteps(20000, 0.0, torch.Generator().manual_seed(0))
    assert abs(float((uniform >= 400).float().mean()) - 0.6) < 0.02


def test_caption_labels_name_each_attribute() -> None:
    scene = shapes.Scene("star", "pink", "black", "top left", "small")
    texts = ["a tiny pink star at the top left on a black background", "pink star top left"]
    labels = train._attribute_labels([scene, scene], texts)
    classes = train.ATTRIBUTE_CLASSES
    assert classes["shape"][int(labels["shape"][0])] == "star"
    assert classes["colour"][int(labels["colour"][0])] == "pink"
    assert classes["background"][int(labels["background"][0])] == "black"
    assert classes["position"][int(labels["position"][0])] == "top left"
    # the size counts only when the caption says it
    assert [classes["size"][int(i)] for i in labels["size"]] == ["small", "unsaid"]


def test_timesteps_in_a_chosen_band() -> None:
    t = train.sample_timesteps(5000, 1.0, torch.Generator().manual_seed(0), (150, 750))
    assert int(t.min()) >= 150 and int(t.max()) < 750
    assert int(t.min()) < 170 and int(t.max()) > 730  # the whole band, not a corner of it
    # the default band is the one the base model trained with: the same draws
    same = train.sample_timesteps(500, 0.5, torch.Generator().manual_seed(3))
    band = train.sample_timesteps(500, 0.5, torch.Generator().manual_seed(3), (400, 1000))
    assert torch.equal(same, band)


def test_loss_weights_on_the_shape_and_along_its_outline() -> None:
    latents = torch.zeros(1, 4, 9, 9)
    latents[:, :, 3:6, 3:6] = 1.0  # a 3 x 3 shape on a flat background
    plain = train.foreground_weights(latents, 8.0)
    assert float(plain[0, 4, 4]) == 9.0 and float(plain[0, 3, 3]) == 9.0
    assert float(plain[0, 2, 2]) == 1.0 and float(plain.sum()) == 81 + 8 * 9
    ringed = train.foreground_weights(latents, 8.0, outline=16.0)
    expected = torch.ones(9, 9)
    expected[2:7, 2:7] += 16.0  # the ring: one pixel out (dilated) ...
    expected[4, 4] -= 16.0  # ... minus one pixel in (eroded): the centre stays inside
    expected[3:6, 3:6] += 8.0
    assert torch.equal(ringed[0], expected)
    assert torch.equal(train.foreground_weights(latents, 8.0, outline=0.0), plain)


def test_a_continuation_starts_from_the_shipped_model_on_its_latent_scale(tmp_path: Path) -> None:
    # a continuation may train on other data (the shipped one drew small shapes larger than
    # its base), but its latents are scaled as its base's were: the scale is read from the log
    folder = ROOT / "sdkit" / "default_model"
    base = train.base_log(folder)
    assert base == json.loads((folder / "training_log.json").read_text())
    assert base["vae_scaling_factor"] == base["base"]["vae_scaling_factor"]
    text_encoder, unet = train.load_base(folder)
    assert unet.config.in_channels == 4 and next(unet.parameters()).dtype == torch.float32
    assert not text_encoder.training
    with pytest.raises(SystemExit, match=r"has no training_log\.json"):
        train.base_log(tmp_path)


def test_saved_folders_carry_the_generation_defaults_the_shipped_one_has() -> None:
    from sdkit.models import DEFAULT_MODEL_DIR, model_defaults, resolve_source

    shipped = json.loads((DEFAULT_MODEL_DIR / "sdkit.json").read_text())
    assert shipped == {"defaults": train.GENERATION_DEFAULTS}
    found = model_defaults(resolve_source(None))
    assert (found.steps, found.guidance_scale) == (25, 3.0)
