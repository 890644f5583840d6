"""The linear probe on CLIP features: fit, calibrate, save and load.

The probe standardises the features (mean/scale from the training set), applies one linear layer
(logistic regression, scikit-learn), then Platt scaling fitted on held-out data so that its
output is a calibrated probability that an image is AI-generated. The decision threshold is
chosen on the held-out data too (best balanced accuracy) and stored with the weights.

File format: one ``.safetensors`` file with tensors ``weight`` (dim), ``bias`` (1), ``mean``
(dim), ``scale`` (dim), ``calibration`` (2: slope, intercept) and the JSON metadata (backbone
id, feature, preprocessing, threshold, training summary) under the ``sdkit_detector`` metadata
key; a ``.json`` file beside it repeats the metadata for people.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import write_atomic
from ..errors import DetectorError

__all__ = ["PROBE_FORMAT", "LinearProbe"]

PROBE_FORMAT = 1
_METADATA_KEY = "sdkit_detector"


@dataclass(frozen=True)
class LinearProbe:
    """``p(fake | x) = sigmoid(a * (w · (x - mean) / scale + b) + c)``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> real, fake = rng.normal(0, 1, (200, 4)), rng.normal(1, 1, (200, 4))
        >>> probe = LinearProbe.fit(real, fake)
        >>> bool(probe.probabilities(fake).mean() > 0.7 > 0.3 > probe.probabilities(real).mean())
        True

    Attributes:
        weight: w, one per feature.
        bias: b.
        mean: feature means subtracted before the layer.
        scale: feature scales divided after centring.
        calibration: (a, c) of Platt scaling.
        threshold: probability above which an image is called AI-generated.
        metadata: backbone id, preprocessing and training summary (JSON-ready).
    """

    weight: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    calibration: tuple[float, float] = (1.0, 0.0)
    threshold: float = 0.5
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Raw (uncalibrated) scores."""
        x = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return np.asarray(x @ self.weight + self.bias, dtype=np.float64)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Calibrated probabilities that each image is AI-generated."""
        a, c = self.calibration
        return _sigmoid(a * self.logits(features) + c)

    # -- training ---------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        real: np.ndarray,
        fake: np.ndarray,
        *,
        val_fraction: float = 0.2,
        c: float = 1.0,
        seed: int = 0,
        metadata: dict[str, Any] | None = None,
    ) -> LinearProbe:
        """Fit on features of real and fake images; calibrate and pick the threshold held out.

        Args:
            real: features of real images (n, dim).
            fake: features of AI-generated images (m, dim).
            val_fraction: share of each class held out for calibration and the threshold.
            c: inverse L2 regularisation strength of the logistic regression.
            seed: split seed.
            metadata: stored with the probe (the Detector adds the backbone id).
        """
        from sklearn.linear_model import LogisticRegression

        real = np.asarray(real, dtype=np.float64)
        fake = np.asarray(fake, dtype=np.float64)
        if len(real) < 4 or len(fake) < 4:
            raise DetectorError(
                f"need at least 4 real and 4 fake images, got {len(real)} and {len(fake)}",
                hint="a useful probe needs hundreds of each.",
            )
        if real.shape[1] != fake.shape[1]:
            raise DetectorError("real and fake features have different sizes")
        rng = np.random.default_rng(seed)
        (real_tr, real_va), (fake_tr, fake_va) = (
            _split(real, val_fraction, rng),
            _split(fake, val_fraction, rng),
        )
        x_tr = np.concatenate([real_tr, fake_tr])
        y_tr = np.concatenate([np.zeros(len(real_tr)), np.ones(len(fake_tr))])
        mean = x_tr.mean(axis=0)
        scale = x_tr.std(axis=0)
        scale[scale < 1e-12] = 1.0
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
        model.fit((x_tr - mean) / scale, y_tr)
        probe = cls(
            weight=model.coef_[0].astype(np.float64),
            bias=float(model.intercept_[0]),
            mean=mean,
            scale=scale,
        )
        x_va = np.concatenate([real_va, fake_va])
        y_va = np.concatenate([np.zeros(len(real_va)), np.ones(len(fake_va))])
        calibration = _platt(probe.logits(x_va), y_va)
        calibrated = cls(probe.weight, probe.bias, mean, scale, calibration)
        probs = calibrated.probabilities(x_va)
        threshold = _best_threshold(probs, y_va)
        summary = {
            "n_real": len(real),
            "n_fake": len(fake),
            "n_train": len(x_tr),
            "n_validation": len(x_va),
            "validation_balanced_accuracy": _balanced_accuracy(probs >= threshold, y_va),
            "c": c,
            "seed": seed,
        }
        meta = {**(metadata or {}), "training": summary}
        return cls(probe.weight, probe.bias, mean, scale, calibration, threshold, meta)

    # -- files ------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (.safetensors) and ``path`` with a .json suffix, atomically."""
        from safetensors.numpy import save

        dest = Path(path)
        if dest.suffix != ".safetensors":
            dest = dest.with_name(dest.name + ".safetensors")
        meta = {**self.metadata, "format": PROBE_FORMAT, "threshold": self.threshold}
        tensors = {
            "weight": self.weight.astype(np.float64),
            "bias": np.asarray([self.bias], dtype=np.float64),
            "mean": self.mean.astype(np.float64),
            "scale": self.scale.astype(np.float64),
            "calibration": np.asarray(self.calibration, dtype=np.float64),
        }
        data = save(tensors, metadata={_METADATA_KEY: json.dumps(meta, sort_keys=True)})
        _write_atomic(dest, data)
        _write_atomic(dest.with_suffix(".json"), json.dumps(meta, indent=2).encode())
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearProbe:
        """Read a probe written by :meth:`save`."""
        from safetensors import SafetensorError, safe_open

        source = Path(path)
        if not source.is_file():
            raise DetectorError(f"no probe file at {source}", path=str(source))
        try:
            with safe_open(str(source), framework="numpy") as f:
                meta_text = (f.metadata() or {}).get(_METADATA_KEY)
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            raise DetectorError(f"{source} is not a probe file: {exc}", path=str(source)) from exc
        if meta_text is None or not {"weight", "bias", "mean", "scale"} <= set(tensors):
            raise DetectorError(
                f"{source} is a safetensors file but not an sdkit detector probe",
                path=str(source),
            )
        meta = json.loads(meta_text)
        if int(meta.get("format", 0)) > PROBE_FORMAT:
            raise DetectorError(
                f"{source} was written by a newer sdkit (probe format {meta['format']})",
                path=str(source),
                hint="upgrade sdkit.",
            )
        calibration = tensors.get("calibration", np.asarray([1.0, 0.0]))
        return cls(
            weight=tensors["weight"].astype(np.float64),
            bias=float(tensors["bias"][0]),
            mean=tensors["mean"].astype(np.float64),
            scale=tensors["scale"].astype(np.float64),
            calibration=(float(calibration[0]), float(calibration[1])),
            threshold=float(meta.get("threshold", 0.5)),
            metadata=meta,
        )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


def _split(
    x: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(len(x))
    n_val = min(max(2, round(len(x) * fraction)), len(x) - 2)
    return x[order[n_val:]], x[order[:n_val]]


def _platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    if len(set(labels.tolist())) < 2:
        return (1.0, 0.0)
    model = LogisticRegression(C=1e4, max_iter=1000)
    model.fit(logits.reshape(-1, 1), labels)
    slope = float(model.coef_[0][0])
    if slope <= 0:  # the held-out data disagree with the probe: keep it uncalibrated
        return (1.0, 0.0)
    return (slope, float(model.intercept_[0]))


def _balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    real = labels == 0
    fake = labels == 1
    return float(0.5 * ((~predicted[real]).mean() + predicted[fake].mean()))


def _best_threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    candidates = np.unique(np.concatenate([probs, [0.5]]))
    scores = [(_balanced_accuracy(probs >= t, labels), -abs(t - 0.5), t) for t in candidates]
    return float(max(scores)[2])


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path`` atomically (:func:`provenance._fs.write_atomic`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(path, data, overwrite=True)
    except OSError as exc:
        raise DetectorError(f"cannot write {path}: {exc}", path=str(path)) from exc
