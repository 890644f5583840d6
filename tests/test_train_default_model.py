"""Parts of tools/train_default_model.py: the analytic autoencoder, timesteps, caption labels."""

from __future__ import annotations

import sys
from pathlib import Path

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
