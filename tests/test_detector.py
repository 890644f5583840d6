"""The AI-image detector on tiny open_clip models built here (random weights, real classes)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from skimage import data
from sklearn.datasets import load_sample_images

from provenance.detector import Augmentation, Backbone, Detector, LinearProbe, preprocess
from provenance.detector.backbone import CLIP_MEAN, CLIP_STD
from provenance.errors import DetectorError
from sdkit.cli import cli

TINY = "sdkit-tiny-vit"
TINY_768 = "sdkit-tiny-vit-768"


FIXTURES = Path(__file__).parent / "fixtures" / "c2pa-interop"


def _register(folder: Path, name: str, embed_dim: int) -> None:
    cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": 224,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny CLIP checkpoints (different random weights) and a 768-d one, saved to disk."""
    folder = tmp_path_factory.mktemp("clip")
    _register(folder, TINY, 32)
    _register(folder, TINY_768, 768)
    out = {}
    for key, name, seed in (("a", TINY, 0), ("b", TINY, 1), ("768", TINY_768, 2)):
        torch.manual_seed(seed)
        model = open_clip.create_model(name)
        out[key] = folder / f"{key}.pt"
        torch.save(model.state_dict(), out[key])
    return out


def _photos() -> list[np.ndarray]:
    retina = data.retina()[::2, ::2]
    named = [
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.hubble_deep_field(),
    ]
    return [*named, data.immunohistochemistry(), retina, *load_sample_images().images]


def _crops(photos: list[np.ndarray], n: int, rng: random.Random) -> list[Image.Image]:
    out = []
    for k in range(n):
        im = Image.fromarray(photos[k % len(photos)][..., :3])
        x, y = rng.randrange(im.width - 224 + 1), rng.randrange(im.height - 224 + 1)
        out.append(im.crop((x, y, x + 224, y + 224)))
    return out


def _upsampling_traces(image: Image.Image, amplitude: int = 4) -> Image.Image:
    """The period-2 checkerboard that transposed-convolution upsampling leaves (Odena et al.)."""
    a = np.asarray(image, dtype=np.int16)
    yy, xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    pattern = np.where((yy % 2) ^ (xx % 2), amplitude, -amplitude)[..., None]
    return Image.fromarray(np.clip(a + pattern, 0, 255).astype(np.uint8))


@pytest.mark.parametrize(("feature", "dim"), [("projected", 32), ("pooled", 64), ("layer:-2", 64)])
def test_feature_shapes(tiny_checkpoints: dict[str, Path], feature: str, dim: int) -> None:
    backbone = Backbone(TINY, None, checkpoint=tiny_checkpoints["a"], feature=feature, device="cpu")
    feats = backbone.features([Image.new("RGB", (256, 256), c) for c in ("red", "blue", "white")])
    assert feats.shape == (3, dim) and backbone.dim == dim
    assert np.isfinite(feats).all() and not np.allclose(feats[0], feats[1])
    assert backbone.id.feature == (feature if feature != "layer:-2" else "layer:0")


def test_bad_features_are_refused(tiny_checkpoints: dict[str, Path]) -> None:
    for feature in ("cls", "layer:5", "layer:x"):
        with pytest.raises(DetectorError):
            Backbone(TINY, None, checkpoint=tiny_checkpoints["a"], feature=feature, device="cpu")


def test_preprocessing_crops_without_resizing() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(260, 300, 3), dtype=np.uint8)
    x = preprocess(Image.fromarray(pixels)).numpy()
    top, left = (260 - 224) // 2, (300 - 224) // 2
    crop = pixels[top : top + 224, left : left + 224].astype(np.float32) / 255
    expected = (
        (crop - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    ).transpose(2, 0, 1)
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-6)


def test_small_images_are_never_zero_padded() -> None:
    small = Image.new("RGB", (200, 300), (128, 128, 128))
    with pytest.raises(DetectorError) as info:
        preprocess(small)
    assert "200x300" in str(info.value) and "upscale" in str(info.value.hint)
    x = preprocess(small, small="upscale")
    assert tuple(x.shape) == (3, 224, 224)
    # a flat grey image stays flat when upscaled: no zero (black) border anywhere
    gray = (128 / 255 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    np.testing.assert_allclose(x.numpy().reshape(3, -1).min(axis=1), gray, atol=1e-5)


def test_training_learns_and_probe_round_trips(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    rng = random.Random(0)
    photos = _photos()
    train = _crops(photos[:5], 120, rng)  # training photos
    test = _crops(photos[5:], 60, rng)  # held-out photos
    backbone = Backbone(
        TINY, None, checkpoint=tiny_checkpoints["a"], feature="layer:-2", device="cpu"
    )
    det = Detector(backbone)
    probe = det.fit(train[:60], [_upsampling_traces(im) for im in train[60:]])
    assert 0 < probe.threshold < 1
    metrics = det.evaluate(test[:30], {"upsampler": [_upsampling_traces(im) for im in test[30:]]})
    assert metrics.average_precision >= 0.95
    assert metrics.roc_auc >= 0.95 and metrics.accuracy >= 0.85
    assert metrics.n_real == 30 and metrics.n_fake == 30

    path = det.save(tmp_path / "probe.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["backbone"]["model"] == TINY and meta["backbone"]["feature"] == "layer:0"
    assert meta["preprocessing"] == {
        "crop": 224,
        "resize": False,
        "normalize": "clip",
        "small": "error",
    }
    assert meta["threshold"] == probe.threshold and meta["training"]["n_real"] == 60

    again = Detector.load(path, checkpoint=tiny_checkpoints["a"], device="cpu")
    np.testing.assert_array_equal(again.score(test[:8]), det.score(test[:8]))
    assert again.probe is not None and again.probe.threshold == probe.threshold

    # a different backbone (other weights, or another feature) is refused
    with pytest.raises(DetectorError, match="trained on"):
        Detector.load(path, checkpoint=tiny_checkpoints["b"], device="cpu")
    other = Backbone(TINY, None, checkpoint=tiny_checkpoints["a"], feature="pooled", device="cpu")
    with pytest.raises(DetectorError, match="trained on"):
        Detector(other, LinearProbe.load(path))


def test_scores_are_calibrated_probabilities(tiny_checkpoints: dict[str, Path]) -> None:
    rng = np.random.default_rng(1)
    real = rng.normal(0.0, 1.0, size=(400, 8))
    fake = rng.normal(0.6, 1.0, size=(400, 8))
    probe = LinearProbe.fit(real, fake, val_fraction=0.5)
    probs = np.concatenate([probe.probabilities(real), probe.probabilities(fake)])
    labels = np.concatenate([np.zeros(400), np.ones(400)])
    # reliability: within each score band, the share of fakes matches the mean score
    for low, high in ((0.0, 0.3), (0.3, 0.7), (0.7, 1.0)):
        band = (probs >= low) & (probs < high)
        if band.sum() > 40:
            assert abs(labels[band].mean() - probs[band].mean()) < 0.12


def test_augmentation_changes_pixels() -> None:
    image = Image.fromarray(data.astronaut())
    aug = Augmentation(blur_prob=1.0, jpeg_prob=1.0, jpeg_quality=(30, 30))
    out = aug.apply(image, random.Random(0))
    assert out.size == image.size
    assert np.abs(np.asarray(out, np.int16) - np.asarray(image, np.int16)).mean() > 1


def test_univfd_layer(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(3)
    fc = torch.nn.Linear(768, 1).requires_grad_(False)
    path = tmp_path / "fc_weights.pth"
    torch.save(fc.state_dict(), path)
    backbone = Backbone(TINY_768, None, checkpoint=tiny_checkpoints["768"], device="cpu")
    det = Detector.from_univfd(path, backbone=backbone)
    images = [Image.fromarray(data.astronaut()), Image.fromarray(data.coffee())]
    feats = torch.from_numpy(backbone.features(images)).double()
    expected = torch.sigmoid(feats @ fc.weight.double()[0] + fc.bias.double()).numpy()
    np.testing.assert_allclose(det.score(images), expected, rtol=1e-9)
    bad = tmp_path / "bad.pth"
    torch.save({"weight": torch.zeros(1, 512), "bias": torch.zeros(1)}, bad)
    with pytest.raises(DetectorError, match="768"):
        Detector.from_univfd(bad, backbone=backbone)


def test_missing_weights_offline_say_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(DetectorError) as info:
        Backbone("ViT-B-32", "openai", device="cpu")
    assert "ViT-B-32/openai" in str(info.value)
    assert "hf download timm/vit_base_patch32_clip_224.openai" in str(info.value.hint)


def test_cli_train_eval_score_and_verify(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    rng = random.Random(5)
    photos = _photos()
    folders = {
        name: tmp_path / name for name in ("real", "fake/upsampler", "test_real", "test_fake/up")
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
    for i, im in enumerate(_crops(photos[:5], 40, rng)):
        im.save(
            folders["real" if i % 2 else "fake/upsampler"] / f"{i}.png"
        ) if i % 2 else _upsampling_traces(im).save(folders["fake/upsampler"] / f"{i}.png")
    for i, im in enumerate(_crops(photos[5:], 16, rng)):
        (im if i % 2 else _upsampling_traces(im)).save(
            folders["test_real" if i % 2 else "test_fake/up"] / f"{i}.png"
        )
    runner = CliRunner()
    probe = tmp_path / "probe.safetensors"
    ckpt = str(tiny_checkpoints["a"])
    result = runner.invoke(
        cli,
        [
            "detect",
            "train",
            "--real",
            str(folders["real"]),
            "--fake",
            str(tmp_path / "fake"),
            "-o",
            str(probe),
            "--model",
            TINY,
            "--checkpoint",
            ckpt,
            "--feature",
            "layer:-2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert probe.is_file() and "20 real, 20 fake" in result.output
    again = runner.invoke(
        cli,
        [
            "detect",
            "train",
            "--real",
            str(folders["real"]),
            "--fake",
            str(tmp_path / "fake"),
            "-o",
            str(probe),
            "--model",
            TINY,
            "--checkpoint",
            ckpt,
        ],
    )
    assert again.exit_code == 4  # never overwrites unless asked

    result = runner.invoke(
        cli,
        [
            "detect",
            "eval",
            "--probe",
            str(probe),
            "--real",
            str(folders["test_real"]),
            "--fake",
            str(tmp_path / "test_fake"),
            "--checkpoint",
            ckpt,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["n_real"] == 8 and metrics["n_fake"] == 8 and "up" in metrics["per_source"]
    assert metrics["average_precision"] >= 0.9

    files = sorted(str(p) for p in folders["test_fake/up"].iterdir())[:2]
    result = runner.invoke(
        cli, ["detect", *files, "--probe", str(probe), "--checkpoint", ckpt, "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    summary = rows.pop()["summary"]
    assert [r["path"] for r in rows] == files and all(0 <= r["probe_score"] <= 1 for r in rows)
    assert summary["files"]["total"] == len(files) and summary["by_evidence"]["probe"] == len(files)

    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (100, 100)).save(tiny)
    result = runner.invoke(cli, ["detect", str(tiny), "--probe", str(probe), "--checkpoint", ckpt])
    assert result.exit_code == 4 and "100x100" in result.output and "Traceback" not in result.output


def test_calibrate_against_the_generator_and_verify_with_the_detector(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    for i, im in enumerate(_crops(_photos(), 8, random.Random(2))):
        im.save(real / f"{i}.png")
    probe = tmp_path / "probe.safetensors"
    fakes = tmp_path / "fakes"
    runner = CliRunner()
    args = ["detect", "calibrate", "--real", str(real), "-o", str(probe), "-n", "8", "--steps", "2"]
    args += [
        "--backbone",
        TINY,
        "--checkpoint",
        str(tiny_checkpoints["a"]),
        "--save-fakes",
        str(fakes),
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    meta = json.loads(probe.with_suffix(".json").read_text())
    assert meta["generator"]["model"] == "sdkit-default" and meta["generator"]["n"] == 8
    assert len(list(fakes.glob("*.png"))) == 8

    # the probe remembers where its local backbone weights are: no --checkpoint needed;
    # a file without provenance gets a score
    report = runner.invoke(cli, ["verify", str(real / "0.png"), "--detector", str(probe), "--json"])
    assert report.exit_code == 3, report.output  # no provenance
    data_ = json.loads(report.output)
    assert (
        0.0 <= data_["detector_score"] <= 1.0 and data_["detector_threshold"] == meta["threshold"]
    )
    # files with valid Content Credentials (the signed fakes, a third-party file) are not scored
    for signed in (sorted(fakes.glob("*.png"))[0], FIXTURES / "C.jpg"):
        report = runner.invoke(cli, ["verify", str(signed), "--detector", str(probe), "--json"])
        assert report.exit_code == 0, report.output
        assert json.loads(report.output)["detector_score"] is None


def test_local_file_stands_in_for_a_pretrained_tag(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """Offline, a copy of the tagged weights may replace the hub download; identity holds."""
    rng = np.random.default_rng(0)
    backbone = Backbone(TINY, "mytag", checkpoint=tiny_checkpoints["a"], device="cpu")
    assert backbone.id.pretrained == "mytag" and backbone.id.checkpoint_sha256
    probe = LinearProbe(
        weight=rng.normal(size=backbone.dim),
        bias=0.0,
        mean=np.zeros(backbone.dim),
        scale=np.ones(backbone.dim),
        metadata={"backbone": {**backbone.id.to_dict(), "checkpoint_sha256": None}},
    )
    path = probe.save(tmp_path / "tagged.safetensors")
    det = Detector.load(path, checkpoint=tiny_checkpoints["b"], device="cpu")  # same tag: accepted
    assert det.backbone.id.pretrained == "mytag"
    other = Backbone(TINY, "othertag", checkpoint=tiny_checkpoints["a"], device="cpu")
    with pytest.raises(DetectorError, match="trained on"):
        Detector(other, LinearProbe.load(path))
