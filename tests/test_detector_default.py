"""The detector sdkit ships: UnivFD's head on CLIP ViT-L/14, with no flags.

The CLIP weights are stand-ins: random weights of open_clip's real ViT-L-14 architecture (as
OpenAI's, QuickGELU), made here once per session and saved (fp16, 0.86 GB) where open_clip and
huggingface_hub look for ``ViT-L-14`` / ``openai`` in a temporary Hugging Face cache, offline.
The score must equal ``sigmoid(w · f + b)`` with ``w, b`` read from the shipped head file and
``f`` computed here, independently of sdkit: open_clip's ``encode_image`` on UnivFD's
preprocessing written with torchvision (``validate.py``: CenterCrop(224), ToTensor, Normalize).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.numpy import load_file
from safetensors.torch import save_file
from skimage import data
from torchvision import transforms

from provenance.detector import Detector
from provenance.detector.default import CLIP_HUB_REPO, DEFAULT_HEAD, FETCH_COMMAND
from provenance.errors import MissingWeightsError
from sdkit.cli import cli

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # UnivFD validate.py MEAN["clip"]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@pytest.fixture(scope="session")
def stand_in_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """(HF cache folder, a 512x384 photo, the photo's ViT-L/14 features computed here)."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-L-14", force_quick_gelu=True).eval()
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    snapshot = root / f"models--{CLIP_HUB_REPO.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "open_clip_model.safetensors"))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    model.load_state_dict({k: v.float() for k, v in state.items()})  # the fp16-rounded weights
    photo = root / "photo.png"
    Image.fromarray(data.astronaut()[64:448]).save(photo)  # 512 wide, 384 high
    univfd = transforms.Compose(
        [
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    with torch.no_grad():
        x = univfd(Image.open(photo).convert("RGB"))[None]
        features = model.encode_image(x)[0].double().numpy()
    del model, state
    return root, photo, features


@pytest.fixture
def offline_cache(
    monkeypatch: pytest.MonkeyPatch, stand_in_cache: tuple[Path, Path, np.ndarray]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(stand_in_cache[0]))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(stand_in_cache[0]))


def test_the_shipped_head_is_univfds_layer_with_its_source_and_licence() -> None:
    tensors = load_file(str(DEFAULT_HEAD))
    assert tensors["weight"].shape == (768,) and tensors["bias"].shape == (1,)
    assert tensors["mean"].tolist() == [0.0] * 768 and tensors["scale"].tolist() == [1.0] * 768
    assert tensors["calibration"].tolist() == [1.0, 0.0]
    # fc_weights.pth: float32, so float64 copies of float32 numbers
    assert np.array_equal(
        tensors["weight"].astype(np.float32).astype(np.float64), tensors["weight"]
    )
    meta = json.loads(DEFAULT_HEAD.with_suffix(".json").read_text())
    assert meta["source"]["repository"].endswith("WisconsinAIVision/UniversalFakeDetect")
    assert meta["source"]["sha256"] == (
        "477100745713bcc957beb2b40859536859b6483fd6301b3b9293151b194c7847"
    )
    assert meta["backbone"]["feature"] == "projected" and meta["threshold"] == 0.5
    assert "MIT License" in (DEFAULT_HEAD.parent / "LICENSE.univfd").read_text()


@pytest.mark.slow
def test_detect_with_no_flags_scores_with_the_shipped_head(
    stand_in_cache: tuple[Path, Path, np.ndarray], offline_cache: None
) -> None:
    _, photo, features = stand_in_cache
    head = load_file(str(DEFAULT_HEAD))
    expected = 1 / (1 + np.exp(-(features @ head["weight"] + head["bias"][0])))
    result = CliRunner().invoke(cli, ["detect", str(photo), "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.splitlines()[-1])
    assert row["verdict"] in ("likely_ai", "not_flagged") and row["decided_by"] == ["probe"]
    assert row["probe_score"] == pytest.approx(float(expected), abs=1e-5)
    assert row["probe"].startswith("UnivFD on ViT-L-14 (openai)")


def test_offline_without_weights_exit_6_names_the_fetch_command(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray(data.astronaut()).save(photo)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")}
    run = subprocess.run(
        [sys.executable, "-c", "from sdkit.cli import main; main()", "detect", str(photo)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 6, run.stderr
    assert f"`{FETCH_COMMAND}`" in run.stderr and "Traceback" not in run.stderr
    assert "ERROR:root" not in run.stderr + run.stdout
    assert "WARNING:root" not in run.stderr + run.stdout
    # declarations and watermarks were still checked and reported
    assert "NO EVIDENCE FOUND" in run.stdout and "pixel probe did not run" in run.stdout


def test_default_offline_raises_the_typed_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(MissingWeightsError) as info:
        Detector.default(device="cpu")
    assert FETCH_COMMAND in str(info.value.hint)
