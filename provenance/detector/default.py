"""The probe sdkit ships: UnivFD's published linear head, and the CLIP weights it reads.

UnivFD (Ojha, Li, Lee, CVPR 2023) publishes one linear layer, ``pretrained_weights/fc_weights.pth``
in github.com/WisconsinAIVision/UniversalFakeDetect (commit 76a0e3e, MIT licence). Its model
(``models/clip_models.py``, class ``CLIPModel``) is ``self.fc(self.model.encode_image(x))`` with
``nn.Linear(768, 1)`` for ``"ViT-L/14"``: the input is OpenAI CLIP ViT-L/14's image embedding
*after* the projection (768-d; the pooled token before it is 1024-d), i.e. sdkit's
``feature="projected"``. Its evaluation (``validate.py``) centre-crops 224x224 without resizing
(``transforms.CenterCrop(224)``) and normalises with CLIP's mean and std, as
:func:`provenance.detector.backbone.preprocess` does, and calls an image fake when
``sigmoid(logit) > 0.5``.

sdkit converted that file once (:func:`convert_univfd`, the only place that calls
``torch.load``, with ``weights_only=True``) into ``heads/univfd-vit-l-14.safetensors``, stored as
sdkit stores its probes (:class:`provenance.detector.probe.LinearProbe`: mean 0, scale 1,
calibration (1, 0), threshold 0.5), with ``heads/univfd-vit-l-14.json`` naming the source and
licence and ``heads/LICENSE.univfd`` (UnivFD's licence, unchanged). At run time only the
safetensors file is read.

The backbone is open_clip's ``ViT-L-14`` with the ``openai`` weights, from the Hugging Face hub
repository :data:`CLIP_HUB_REPO` through the Hugging Face cache. :func:`fetch_weights` downloads
them (a progress bar on stderr); offline without them, building the backbone raises
:class:`provenance.errors.MissingWeightsError` naming :data:`FETCH_COMMAND`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DetectorError
from .probe import LinearProbe

__all__ = [
    "CLIP_HUB_REPO",
    "DEFAULT_HEAD",
    "FETCH_COMMAND",
    "UNIVFD_SOURCE",
    "convert_univfd",
    "default_probe",
    "fetch_weights",
    "head_metadata",
    "univfd_probe",
]

#: The shipped head (safetensors, read at run time) and its metadata for people.
DEFAULT_HEAD = Path(__file__).with_name("heads") / "univfd-vit-l-14.safetensors"
#: Where open_clip fetches ViT-L-14 / openai from (``open_clip.get_pretrained_cfg``).
CLIP_HUB_REPO = "timm/vit_large_patch14_clip_224.openai"
#: The one command that puts the default detector's CLIP weights in the Hugging Face cache.
FETCH_COMMAND = "sdkit detect fetch-weights"
#: Where the head comes from (stored in the head's metadata).
UNIVFD_SOURCE: dict[str, str] = {
    "name": "UnivFD linear head",
    "repository": "https://github.com/WisconsinAIVision/UniversalFakeDetect",
    "file": "pretrained_weights/fc_weights.pth",
    "commit": "76a0e3e60a8a06458707a625d269ba815a2e5919",
    "licence": "MIT (heads/LICENSE.univfd)",
    "paper": "Ojha, Li, Lee. Towards Universal Fake Image Detectors that Generalize Across "
    "Generative Models. CVPR 2023. arXiv:2302.10174",
    "feature_source": "models/clip_models.py: fc(model.encode_image(x)), nn.Linear(768, 1)",
    "preprocessing_source": "validate.py: CenterCrop(224), ToTensor, Normalize(CLIP mean, std)",
}
_BACKBONE = {
    "model": "ViT-L-14",
    "pretrained": "openai",
    "checkpoint_sha256": None,
    "feature": "projected",
    "image_size": 224,
}


def univfd_probe(fc_weights: str | os.PathLike[str]) -> LinearProbe:
    """UnivFD's ``fc_weights.pth`` as a :class:`LinearProbe` (read with ``weights_only=True``).

    Raises:
        DetectorError: the file cannot be read, or is not a (1, 768) linear layer.
    """
    import torch

    path = Path(fc_weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        raise DetectorError(f"cannot read {path} as UnivFD weights: {exc}", path=str(path)) from exc
    if isinstance(state, Mapping) and "weight" not in state:
        state = {str(k).split(".")[-1]: v for k, v in state.items()}
    weight = state.get("weight") if isinstance(state, Mapping) else None
    bias = state.get("bias") if isinstance(state, Mapping) else None
    if (
        not isinstance(weight, torch.Tensor)
        or not isinstance(bias, torch.Tensor)
        or tuple(weight.shape) != (1, 768)
        or bias.numel() != 1
    ):
        raise DetectorError(
            f"{path} is not UnivFD's fc layer (expected weight (1, 768) and bias (1,))",
            path=str(path),
        )
    return LinearProbe(
        weight=weight[0].double().numpy(),
        bias=float(bias.reshape(-1)[0]),
        mean=np.zeros(768),
        scale=np.ones(768),
        metadata={"backbone": dict(_BACKBONE), "source": "UnivFD fc_weights.pth"},
    )


def convert_univfd(fc_weights: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Write UnivFD's ``fc_weights.pth`` as an sdkit probe file (how the shipped head was made).

    Example (the shipped head was made this way, from ``../shared/third_party/univfd``)::

        python -c "from provenance.detector.default import convert_univfd; \\
            convert_univfd('fc_weights.pth', 'provenance/detector/heads/univfd-vit-l-14')"
    """
    import hashlib

    probe = univfd_probe(fc_weights)
    sha = hashlib.sha256(Path(fc_weights).read_bytes()).hexdigest()
    meta = {
        "backbone": dict(_BACKBONE),
        "preprocessing": {"crop": 224, "resize": False, "normalize": "clip", "small": "error"},
        "source": {**UNIVFD_SOURCE, "sha256": sha},
        "calibration": "none: sigmoid of UnivFD's logit, threshold 0.5, as in UnivFD's validate.py",
    }
    return LinearProbe(probe.weight, probe.bias, probe.mean, probe.scale, metadata=meta).save(dest)


def default_probe() -> LinearProbe:
    """The shipped head (:data:`DEFAULT_HEAD`)."""
    return LinearProbe.load(DEFAULT_HEAD)


def head_metadata() -> dict[str, Any]:
    """The shipped head's metadata (source, licence, backbone)."""
    data: dict[str, Any] = json.loads(DEFAULT_HEAD.with_suffix(".json").read_text())
    return data


def fetch_weights() -> Path:
    """Download the default backbone's weights into the Hugging Face cache (progress bar on
    stderr); return the cached file. With the weights already cached, nothing is downloaded.

    Raises:
        MissingWeightsError: no network (or ``HF_HUB_OFFLINE=1``) and nothing cached.
    """
    import open_clip

    from ..errors import MissingWeightsError

    cfg = open_clip.get_pretrained_cfg("ViT-L-14", "openai")
    try:
        return Path(open_clip.download_pretrained(cfg))
    except Exception as exc:  # huggingface_hub raises many types when offline
        raise MissingWeightsError(
            f"cannot fetch the CLIP ViT-L/14 (OpenAI) weights from {CLIP_HUB_REPO}: {exc}",
            hint="run this where there is network (HF_HUB_OFFLINE unset), or copy a Hugging Face "
            "cache that has them here.",
        ) from exc
