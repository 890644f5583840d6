"""Detector: a frozen CLIP backbone plus a calibrated linear probe.

Usage (with a probe from ``sdkit detect train``)::

    det = Detector.load("probe.safetensors")
    det.score(["photo.jpg", "generated.png"])      # array([0.03, 0.97]): P(AI-generated)
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from ..errors import DetectorError, MissingWeightsError
from .backbone import Backbone, ImageLike, SmallPolicy, load_image
from .default import CLIP_HUB_REPO, FETCH_COMMAND, default_probe, univfd_probe
from .probe import LinearProbe

__all__ = ["Augmentation", "Detector", "DetectorMetrics", "SourceMetrics"]

Images = Sequence[ImageLike]
Sourced = Images | Mapping[str, Images]


@dataclass(frozen=True)
class Augmentation:
    """UnivFD-style training augmentation (Wang et al. 2020, "Blur+JPEG").

    Each image is blurred with probability ``blur_prob`` (Gaussian, sigma uniform in
    ``blur_sigma``) and re-encoded as JPEG with probability ``jpeg_prob`` (quality uniform in
    ``jpeg_quality``), so that the probe does not learn the compression of its training set.
    """

    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)
    copies: int = 1

    def apply(self, image: Image.Image, rng: random.Random) -> Image.Image:
        out = image
        if rng.random() < self.blur_prob:
            out = out.filter(ImageFilter.GaussianBlur(rng.uniform(*self.blur_sigma)))
        if rng.random() < self.jpeg_prob:
            buffer = io.BytesIO()
            out.save(buffer, format="JPEG", quality=rng.randint(*self.jpeg_quality))
            buffer.seek(0)
            with Image.open(buffer) as decoded:
                out = decoded.convert("RGB")
        return out


@dataclass(frozen=True)
class SourceMetrics:
    """How the detector does on one source of images (e.g. one generator)."""

    n: int
    accuracy: float
    mean_score: float
    average_precision: float | None = None
    roc_auc: float | None = None


@dataclass(frozen=True)
class DetectorMetrics:
    """Evaluation on labelled images; AI-generated is the positive class.

    Attributes:
        average_precision: AP of the scores (threshold-free).
        roc_auc: area under the ROC curve.
        accuracy: share of images classified right at the stored threshold.
        real_accuracy: share of real images called real.
        fake_accuracy: share of AI-generated images called AI-generated.
        threshold: the probe's threshold.
        n_real: real images.
        n_fake: AI-generated images.
        per_source: the same per source (fake sources against all real images).
    """

    average_precision: float
    roc_auc: float
    accuracy: float
    real_accuracy: float
    fake_accuracy: float
    threshold: float
    n_real: int
    n_fake: int
    per_source: dict[str, SourceMetrics] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Detector:
    """Scores how likely images are AI-generated.

    Args:
        backbone: the feature extractor.
        probe: a fitted probe, or ``None`` until :meth:`fit`.
    """

    def __init__(self, backbone: Backbone, probe: LinearProbe | None = None) -> None:
        self.backbone = backbone
        self.probe = probe
        if probe is not None:
            _check_pair(backbone, probe)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        probe_path: str | os.PathLike[str],
        *,
        backbone: Backbone | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        small: SmallPolicy = "error",
        progress: bool = True,
    ) -> Detector:
        """Load a saved probe and the backbone it was trained on.

        Args:
            probe_path: a probe written by :meth:`save`.
            backbone: an already-built backbone (must match the probe's).
            checkpoint: local weights for the probe's backbone (instead of the hub).
        """
        probe = LinearProbe.load(probe_path)
        if backbone is None:
            meta = probe.metadata.get("backbone") or {}
            if "model" not in meta:
                raise DetectorError(
                    f"{probe_path} does not name its backbone", path=str(probe_path)
                )
            recorded = meta.get("checkpoint_path")
            if checkpoint is None and meta.get("checkpoint_sha256"):
                if not recorded or not Path(recorded).is_file():
                    raise DetectorError(
                        f"{probe_path} was trained on local weights "
                        f"(sha256 {meta['checkpoint_sha256'][:12]}…) that are not at "
                        f"{recorded or 'a recorded path'}",
                        path=str(probe_path),
                        hint="pass checkpoint=PATH (CLI: --checkpoint) to those weights.",
                    )
                checkpoint = recorded
            backbone = Backbone(
                meta["model"],
                meta.get("pretrained"),
                checkpoint=checkpoint,
                feature=meta.get("feature", "projected"),
                device=device,
                batch_size=batch_size,
                small=small,
                progress=progress,
            )
        return cls(backbone, probe)

    @classmethod
    def from_univfd(
        cls,
        fc_weights: str | os.PathLike[str],
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        small: SmallPolicy = "error",
        backbone: Backbone | None = None,
    ) -> Detector:
        """Use UnivFD's published linear layer (``fc_weights.pth``) with CLIP ViT-L/14 (OpenAI).

        The file is a PyTorch state dict ``{"weight": (1, 768), "bias": (1,)}``; it is read with
        ``weights_only=True``, so it cannot run code. Scores are ``sigmoid(fc(features))`` as in
        UnivFD, threshold 0.5. ``checkpoint`` points at local ViT-L/14 OpenAI weights when they
        are not in the Hugging Face cache; ``backbone`` overrides the backbone altogether (its
        projected features must be 768-d).
        """
        probe = univfd_probe(fc_weights)
        if backbone is None:
            backbone = _vit_l14(checkpoint, device, small)
        _check_univfd_width(backbone)
        meta = {**probe.metadata, "backbone": backbone.id.to_dict()}
        return cls(backbone, replace(probe, metadata=meta))

    @classmethod
    def default(
        cls,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        small: SmallPolicy = "error",
        progress: bool = True,
        backbone: Backbone | None = None,
    ) -> Detector:
        """The detector sdkit ships: UnivFD's published head on CLIP ViT-L/14 (OpenAI).

        The head is read from the package (:data:`provenance.detector.default.DEFAULT_HEAD`,
        safetensors); the CLIP weights from the Hugging Face cache, downloaded there on first
        use when there is network (a progress bar on stderr). Scores are UnivFD's
        ``sigmoid(w · f + b)``, threshold 0.5 (not calibrated by sdkit).

        Args:
            checkpoint: a local copy of OpenAI's ViT-L/14 weights instead of the cache.
            backbone: an already-built backbone (768-d projected features).

        Raises:
            MissingWeightsError: the weights are not cached and cannot be fetched (offline);
                the hint names ``sdkit detect fetch-weights``.
        """
        probe = default_probe()
        if backbone is None:
            try:
                backbone = _vit_l14(checkpoint, device, small, progress=progress)
            except MissingWeightsError as exc:
                raise MissingWeightsError(
                    "the default detector's CLIP ViT-L/14 (OpenAI) weights are not in the "
                    f"Hugging Face cache and cannot be fetched here ({CLIP_HUB_REPO})",
                    hint=f"run `{FETCH_COMMAND}` once where there is network (about 1.7 GB "
                    "into the Hugging Face cache), or pass checkpoint=PATH (CLI: --checkpoint) "
                    "to a local copy of OpenAI's ViT-L/14 weights.",
                ) from exc
        else:  # a stand-in backbone (tests, a local copy): the head follows it
            _check_univfd_width(backbone)
            probe = replace(probe, metadata={**probe.metadata, "backbone": backbone.id.to_dict()})
        return cls(backbone, probe)

    # -- use --------------------------------------------------------------------------------

    def score(self, images: Images) -> np.ndarray:
        """Probability that each image is AI-generated (calibrated for trained probes)."""
        probe = self._require_probe()
        if len(images) == 0:
            return np.zeros(0)
        return probe.probabilities(self.backbone.features(images))

    def predict(self, images: Images) -> np.ndarray:
        """True where the score reaches the stored threshold."""
        return self.score(images) >= self._require_probe().threshold

    def fit(
        self,
        real: Images,
        fake: Images,
        *,
        augment: Augmentation | None = None,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> LinearProbe:
        """Train the probe on real and AI-generated images (the backbone stays frozen)."""
        rng = random.Random(seed)
        real_x = self._train_features(real, augment, rng)
        fake_x = self._train_features(fake, augment, rng)
        meta = {
            "backbone": {
                **self.backbone.id.to_dict(),
                "checkpoint_path": self.backbone.checkpoint_path,
            },
            "preprocessing": {
                "crop": self.backbone.image_size,
                "resize": False,
                "normalize": "clip",
                "small": self.backbone.small,
            },
            "augmentation": asdict(augment) if augment else None,
        }
        self.probe = LinearProbe.fit(
            real_x, fake_x, val_fraction=val_fraction, seed=seed, metadata=meta
        )
        return self.probe

    def evaluate(self, real: Sourced, fake: Sourced) -> DetectorMetrics:
        """AP, ROC AUC and accuracies; pass ``{source: images}`` for a per-source breakdown."""
        from sklearn.metrics import average_precision_score, roc_auc_score

        probe = self._require_probe()
        real_sets = _by_source(real, "real")
        fake_sets = _by_source(fake, "fake")
        scores = {name: self.score(items) for name, items in {**real_sets, **fake_sets}.items()}
        real_scores = np.concatenate([scores[n] for n in real_sets])
        fake_scores = np.concatenate([scores[n] for n in fake_sets])
        if len(real_scores) == 0 or len(fake_scores) == 0:
            raise DetectorError("evaluation needs both real and AI-generated images")
        t = probe.threshold

        def ranked(fakes: np.ndarray) -> tuple[float, float]:
            y = np.concatenate([np.zeros(len(real_scores)), np.ones(len(fakes))])
            s = np.concatenate([real_scores, fakes])
            return float(average_precision_score(y, s)), float(roc_auc_score(y, s))

        per_source: dict[str, SourceMetrics] = {}
        for name in real_sets:
            s = scores[name]
            per_source[name] = SourceMetrics(len(s), float((s < t).mean()), float(s.mean()))
        for name in fake_sets:
            s = scores[name]
            ap, auc = ranked(s)
            per_source[name] = SourceMetrics(
                len(s), float((s >= t).mean()), float(s.mean()), ap, auc
            )
        ap, auc = ranked(fake_scores)
        real_acc = float((real_scores < t).mean())
        fake_acc = float((fake_scores >= t).mean())
        n = len(real_scores) + len(fake_scores)
        return DetectorMetrics(
            average_precision=ap,
            roc_auc=auc,
            accuracy=(real_acc * len(real_scores) + fake_acc * len(fake_scores)) / n,
            real_accuracy=real_acc,
            fake_accuracy=fake_acc,
            threshold=t,
            n_real=len(real_scores),
            n_fake=len(fake_scores),
            per_source=per_source if isinstance(real, Mapping) or isinstance(fake, Mapping) else {},
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the probe (the backbone is named, not copied)."""
        return self._require_probe().save(path)

    # -- helpers ----------------------------------------------------------------------------

    def _require_probe(self) -> LinearProbe:
        if self.probe is None:
            raise DetectorError(
                "this detector has no probe yet",
                hint="call fit(real, fake) or Detector.load(path).",
            )
        return self.probe

    def _train_features(
        self, images: Images, augment: Augmentation | None, rng: random.Random
    ) -> np.ndarray:
        if augment is None:
            return self.backbone.features(images)
        copies = [
            augment.apply(load_image(item), rng) for item in images for _ in range(augment.copies)
        ]
        return self.backbone.features(copies)


def _check_pair(backbone: Backbone, probe: LinearProbe) -> None:
    expected = probe.metadata.get("backbone")
    if expected is None:
        return
    actual = backbone.id.to_dict()
    # Architecture, feature and crop must match. Weights: a recorded tag or file hash must
    # match too; a file given for a recorded tag stands in for it (the caller vouches for it).
    keys = ("model", "feature", "image_size")
    mismatched = [k for k in keys if k in expected and expected[k] != actual[k]]
    for key in ("pretrained", "checkpoint_sha256"):
        if expected.get(key) is not None and expected[key] != actual[key]:
            mismatched.append(key)
    if mismatched or probe.dim != backbone.dim:
        raise DetectorError(
            f"the probe was trained on {_describe(expected)}, but the backbone is "
            f"{backbone.id.describe()}",
            hint="load the probe with the backbone it names (Detector.load does this).",
        )


def _describe(meta: Mapping[str, Any]) -> str:
    weights = meta.get("pretrained") or (
        f"checkpoint {str(meta.get('checkpoint_sha256'))[:12]}"
        if meta.get("checkpoint_sha256")
        else "random"
    )
    return f"{meta.get('model')} ({weights}), feature {meta.get('feature')}"


def _by_source(items: Sourced, default: str) -> dict[str, Images]:
    if isinstance(items, Mapping):
        return {str(k): list(v) for k, v in items.items()}
    return {default: list(items)}


def _vit_l14(
    checkpoint: str | os.PathLike[str] | None,
    device: str | torch.device | None,
    small: SmallPolicy,
    *,
    progress: bool = True,
) -> Backbone:
    """CLIP ViT-L/14 (OpenAI), projected features: the backbone UnivFD's head was trained on."""
    return Backbone(
        "ViT-L-14",
        "openai",
        checkpoint=checkpoint,
        feature="projected",
        device=device,
        small=small,
        progress=progress,
    )


def _check_univfd_width(backbone: Backbone) -> None:
    """UnivFD's head is a (1, 768) layer: refuse a backbone of another width."""
    if backbone.dim != 768:
        raise DetectorError(
            f"UnivFD's layer reads 768 features; {backbone.id.describe()} gives {backbone.dim}",
            hint="use CLIP ViT-L/14 with feature='projected'.",
        )
