"""Frozen CLIP image encoders (open_clip) as feature extractors, and the preprocessing they need.

Feature choices (``feature=``):

* ``"projected"``: the image embedding after CLIP's projection (768-d for ViT-L/14). This is what
  UnivFD (Ojha, Li, Lee, CVPR 2023) feeds its linear layer.
* ``"pooled"``: the pooled class token before the projection (1024-d for ViT-L/14), i.e. the
  network's next-to-last layer; Cozzolino et al. 2024 build on these features (their released
  code sets the projection aside).
* ``"layer:N"``: the class token after transformer block N (0-based; negative counts from the
  end, so ``"layer:-2"`` is the block before the last), for probing intermediate layers.

Preprocessing follows UnivFD: centre-crop 224x224 **without resizing** (resizing blurs away the
high-frequency traces generators leave), then CLIP's mean/std normalisation. An image smaller
than the crop is never silently zero-padded: ``small="error"`` (default) refuses it,
``small="upscale"`` resizes its short side up to the crop size (bicubic) and says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from ..errors import DetectorError, MissingWeightsError

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "Backbone",
    "ImageLike",
    "load_image",
    "preprocess",
    "quiet_open_clip",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ImageLike = Image.Image | str | os.PathLike[str]
SmallPolicy = Literal["error", "upscale"]


def load_image(item: ImageLike) -> Image.Image:
    """Open ``item`` (a path or an image) as RGB; unreadable files raise DetectorError."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    try:
        with Image.open(item) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DetectorError(
            f"cannot read image {os.fspath(item)}: {exc}", path=os.fspath(item)
        ) from exc


def preprocess(
    image: Image.Image, *, size: int = 224, small: SmallPolicy = "error", name: str = "image"
) -> torch.Tensor:
    """Centre-crop ``size`` x ``size`` without resizing and normalise as CLIP does.

    Returns:
        A float tensor (3, size, size).

    Raises:
        DetectorError: the image is smaller than ``size`` and ``small="error"``.

    Example:
        >>> x = preprocess(Image.new("RGB", (300, 260), (255, 0, 0)))
        >>> tuple(x.shape), round(float(x[0, 0, 0]), 4)
        ((3, 224, 224), 1.9303)
    """
    rgb = image.convert("RGB")
    w, h = rgb.size
    if min(w, h) < size:
        if small != "upscale":
            raise DetectorError(
                f"{name} is {w}x{h}, smaller than the {size}x{size} crop the detector reads",
                path=name if name != "image" else None,
                hint="pass small='upscale' (CLI: --small upscale) to resize it up; "
                "scores on upscaled images are less reliable.",
            )
        scale = size / min(w, h)
        rgb = rgb.resize(
            (max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC
        )
        w, h = rgb.size
    left, top = (w - size) // 2, (h - size) // 2
    crop = np.asarray(rgb.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    mean = np.asarray(CLIP_MEAN, dtype=np.float32)
    std = np.asarray(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(((crop - mean) / std).transpose(2, 0, 1).copy())


@dataclass(frozen=True)
class BackboneId:
    """What a probe must be paired with: architecture, weights and feature."""

    model: str
    pretrained: str | None
    checkpoint_sha256: str | None
    feature: str
    image_size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "pretrained": self.pretrained,
            "checkpoint_sha256": self.checkpoint_sha256,
            "feature": self.feature,
            "image_size": self.image_size,
        }

    def describe(self) -> str:
        weights = self.pretrained or (
            f"checkpoint {self.checkpoint_sha256[:12]}" if self.checkpoint_sha256 else "random"
        )
        return f"{self.model} ({weights}), feature {self.feature}"


class Backbone:
    """A frozen open_clip image encoder that turns images into feature vectors.

    Args:
        model: open_clip architecture name (``"ViT-L-14"``, ``"ViT-B-32"``, …).
        pretrained: open_clip pretrained tag (``"openai"``, ``"laion2b_s32b_b82k"``), or
            ``None`` for random weights (speed tests) or when ``checkpoint`` is given.
        checkpoint: a local weights file for ``model`` (open_clip or OpenAI format). With a
            ``pretrained`` tag too, the file stands in for those weights (e.g. OpenAI's
            ViT-L-14 weights copied to an offline machine): the id keeps the tag.
        feature: ``"projected"``, ``"pooled"`` or ``"layer:N"`` (see the module docs).
        device: ``"cpu"``, ``"cuda"``… (default: CUDA when present).
        batch_size: images per forward pass.
        small: what to do with images smaller than the crop (``"error"`` or ``"upscale"``).
        progress: show a progress bar when there is more than one batch.
    """

    def __init__(
        self,
        model: str = "ViT-L-14",
        pretrained: str | None = "openai",
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        feature: str = "projected",
        device: str | torch.device | None = None,
        batch_size: int = 32,
        small: SmallPolicy = "error",
        progress: bool = True,
    ) -> None:
        import open_clip

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.small: SmallPolicy = small
        self.progress = progress
        checkpoint_sha = None
        source = pretrained
        if checkpoint is not None:
            path = Path(checkpoint)
            if not path.is_file():
                raise DetectorError(f"no checkpoint file at {path}", path=str(path))
            checkpoint_sha = _sha256(path)
            source = str(path)
        if model not in open_clip.list_models():
            raise DetectorError(
                f"unknown open_clip model {model!r}",
                hint="see open_clip.list_models(), e.g. 'ViT-L-14' or 'ViT-B-32'.",
            )
        # OpenAI's weights (and some others) were trained with QuickGELU: open_clip's tag
        # says so, but create_model keeps the architecture's plain GELU unless told (it only
        # warns), and the features would then be wrong.
        tag_cfg = open_clip.get_pretrained_cfg(model, pretrained) if pretrained else {}
        quick_gelu = bool((tag_cfg or {}).get("quick_gelu", False))
        try:
            with quiet_open_clip():
                clip = open_clip.create_model(
                    model, pretrained=source, device=self.device, force_quick_gelu=quick_gelu
                )
        except Exception as exc:  # open_clip raises many types for missing/bad weights
            raise _weights_error(model, pretrained, checkpoint, exc) from exc
        self.visual = clip.visual.eval().requires_grad_(False)
        del clip  # the text tower is not needed
        self.image_size = _image_size(self.visual)
        self._hook_block: int | None = None
        self.feature = self._setup_feature(feature)
        self.id = BackboneId(model, pretrained, checkpoint_sha, self.feature, self.image_size)
        #: where the weights were read from (a hint for reloading; identity is the SHA-256)
        self.checkpoint_path = str(Path(checkpoint).resolve()) if checkpoint is not None else None
        self.dim = int(self.features([Image.new("RGB", (self.image_size,) * 2)]).shape[1])

    def _setup_feature(self, feature: str) -> str:
        blocks = self.visual.transformer.resblocks
        if feature in ("projected", "pooled"):
            if feature == "pooled":
                self.visual.proj = None  # encode without the projection
            return feature
        if feature.startswith("layer:"):
            try:
                index = int(feature.split(":", 1)[1])
            except ValueError:
                index = len(blocks)  # out of range: refused below
            if not -len(blocks) <= index < len(blocks):
                raise DetectorError(
                    f"feature {feature!r}: the model has {len(blocks)} blocks",
                    hint=f"use layer:0 .. layer:{len(blocks) - 1}, or a negative index.",
                )
            self._hook_block = index % len(blocks)
            return f"layer:{self._hook_block}"
        raise DetectorError(
            f"unknown feature {feature!r}", hint="use 'projected', 'pooled' or 'layer:N'."
        )

    @torch.no_grad()
    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """Features of a preprocessed batch (n, 3, size, size) -> (n, dim), float32 on CPU."""
        batch = batch.to(self.device)
        if self._hook_block is None:
            result: torch.Tensor = self.visual(batch).float().cpu()
            return result
        captured: list[torch.Tensor] = []
        block = self.visual.transformer.resblocks[self._hook_block]
        handle = block.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.visual(batch)
        finally:
            handle.remove()
        tokens = captured[0]
        if not getattr(self.visual.transformer, "batch_first", True):
            tokens = tokens.transpose(0, 1)
        return tokens[:, 0].float().cpu()

    def features(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Preprocess and embed ``images`` in batches -> array (n, dim)."""
        from tqdm.auto import tqdm

        out: list[torch.Tensor] = []
        starts = range(0, len(images), self.batch_size)
        bar = tqdm(
            starts, desc="features", unit="batch", disable=not self.progress or len(starts) < 2
        )
        for start in bar:
            chunk = images[start : start + self.batch_size]
            tensors = [
                preprocess(
                    load_image(item),
                    size=self.image_size,
                    small=self.small,
                    name=_name(item, start + i),
                )
                for i, item in enumerate(chunk)
            ]
            out.append(self.embed(torch.stack(tensors)))
        if not out:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        return torch.cat(out).numpy()


@contextlib.contextmanager
def quiet_open_clip() -> Iterator[list[logging.LogRecord]]:
    """Keep open_clip's log lines (``ERROR:root:Failed to download…``, ``WARNING:root:No
    pretrained weights loaded…``) out of the user's terminal while it builds a model.

    open_clip logs through the root logger with ``logging.error``, which calls
    ``logging.basicConfig()`` when the root logger has no handler: that prints the line and
    leaves a handler behind. Here the root logger gets a filter that keeps open_clip's records
    (collected in the yielded list; sdkit's errors say the same in words) and, for the
    duration, a do-nothing handler so that ``basicConfig`` does not run. Records from other
    loggers pass as before.
    """
    root = logging.getLogger()
    kept: list[logging.LogRecord] = []
    marker = f"{os.sep}open_clip{os.sep}"

    def drop_open_clip(record: logging.LogRecord) -> bool:
        if marker in record.pathname:
            kept.append(record)
            return False
        return True

    placeholder = logging.NullHandler()
    root.addFilter(drop_open_clip)
    root.addHandler(placeholder)
    try:
        yield kept
    finally:
        root.removeHandler(placeholder)
        root.removeFilter(drop_open_clip)


def _image_size(visual: Any) -> int:
    size = getattr(visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _name(item: ImageLike, index: int) -> str:
    return os.fspath(item) if not isinstance(item, Image.Image) else f"image #{index}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_error(
    model: str, pretrained: str | None, checkpoint: Any, exc: Exception
) -> DetectorError:
    if checkpoint is not None:
        return DetectorError(
            f"cannot load {checkpoint} as {model}: {exc}",
            path=os.fspath(checkpoint),
            hint="check that the file holds weights for this architecture.",
        )
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, pretrained or "") or {}
    hub = str(cfg.get("hf_hub", "")).rstrip("/")
    where = f"`hf download {hub}`" if hub else "open_clip with network access"
    return MissingWeightsError(
        f"weights {model}/{pretrained} are not available offline: {exc}",
        hint=f"fetch them once where there is network ({where}) and copy the Hugging Face cache "
        "here, or pass checkpoint=PATH to a local weights file.",
    )
