"""ControlNet: per-call control models and images, run through diffusers' ControlNet pipelines.

A call's ``control=[(model, image, scale), ...]`` (or :class:`ControlSpec` items, which add the
start and end of guidance and a preprocessor) becomes diffusers'
``StableDiffusion[XL]ControlNet{,Img2Img,Inpaint}Pipeline``, built with ``from_pipe`` from the
loaded model so that no base weights are loaded again; several ControlNets run as diffusers'
``MultiControlNetModel``. ``start`` / ``end`` are diffusers' ``control_guidance_start`` /
``control_guidance_end`` (A1111's "Guidance Start" / "Guidance End", fractions of the steps).

Preprocessors: ``"canny"`` is OpenCV's ``cv2.Canny`` with A1111's ControlNet defaults (low
threshold 100, high 200), on the image as 8-bit RGB, the edges repeated over three channels;
``"none"`` passes the image as it is (a ready edge map, depth map, pose...).

Each ControlNet used is recorded as an ``AddonRecord("controlnet", ...)`` with settings
``{index, scale, start, end, preprocessor}``, and its image as ``AddonRecord("control_image",
...)`` with settings ``{index}``: the SHA-256 of the file's bytes, or of the pixels as PNG when
an image was given.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from .._option_values import ImageInput, check_float, load_image
from ..errors import InvalidOptionError, ModelLoadError
from ..modes import Mode
from ._load import Loaded, load_component
from ._record import AddonRecord

__all__ = [
    "CANNY_THRESHOLDS",
    "ControlInput",
    "ControlNets",
    "ControlSpec",
    "PreparedControl",
    "Preprocessor",
    "canny",
    "check_control",
    "control_family",
]

Preprocessor = Literal["canny", "none"]
PREPROCESSORS: tuple[Preprocessor, ...] = ("canny", "none")
#: A1111 ControlNet's Canny defaults (sd-webui-controlnet, scripts/processor.py ``canny``:
#: ``low_threshold=100, high_threshold=200``).
CANNY_THRESHOLDS = (100, 200)
MAX_CONTROLS = 8
#: A1111 ControlNet's "Control Weight" slider runs 0..2.
MAX_SCALE = 2.0


@dataclass(frozen=True)
class ControlSpec:
    """One ControlNet of a call.

    Attributes:
        model: a ControlNet: diffusers folder, single ``.safetensors`` file, hub id, or a loaded
            ``diffusers.ControlNetModel``.
        image: the control image (PIL image or path).
        scale: ``controlnet_conditioning_scale`` (A1111's "Control Weight"), 0..2.
        start: fraction of the steps where guidance starts (0..1).
        end: fraction of the steps where it ends (``start < end <= 1``).
        preprocessor: ``"canny"`` (OpenCV edges) or ``"none"`` (the image as is).
    """

    model: Any
    image: ImageInput
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    preprocessor: Preprocessor = "none"


#: What ``control=`` takes per item: a spec, or ``(model, image)`` / ``(model, image, scale)``.
ControlInput = ControlSpec | tuple[Any, ImageInput] | tuple[Any, ImageInput, float]


def check_control(value: Any) -> tuple[ControlSpec, ...]:
    """``control=`` as specs, every value checked (no file is read).

    Raises:
        InvalidOptionError: not a list of specs or tuples, a scale outside 0..2, start/end
            outside 0..1 or not ``start < end``, an unknown preprocessor, more than 8 items.
    """
    if value is None:
        return ()
    if isinstance(value, (ControlSpec, tuple)) and not _is_list_of_items(value):
        value = [value]
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise InvalidOptionError(
            "control", type(value).__name__, "a list of (model, image, scale) or ControlSpec"
        )
    if len(value) > MAX_CONTROLS:
        raise InvalidOptionError("control", f"{len(value)} items", f"at most {MAX_CONTROLS}")
    specs = []
    for item in value:
        if isinstance(item, tuple) and len(item) in (2, 3):
            spec = ControlSpec(*item)
        elif isinstance(item, ControlSpec):
            spec = item
        else:
            raise InvalidOptionError(
                "control",
                repr(item)[:80],
                "(model, image), (model, image, scale) or a ControlSpec",
            )
        check_float("control scale", spec.scale, 0.0, MAX_SCALE)
        check_float("control start", spec.start, 0.0, 1.0)
        check_float("control end", spec.end, 0.0, 1.0)
        if not spec.start < spec.end:
            raise InvalidOptionError(
                "control end",
                spec.end,
                f"greater than start ({spec.start})",
                hint="guidance runs from start to end, fractions of the steps.",
            )
        if spec.preprocessor not in PREPROCESSORS:
            raise InvalidOptionError("control preprocessor", spec.preprocessor, PREPROCESSORS)
        if spec.image is None:
            raise InvalidOptionError("control image", None, "a PIL image or an image path")
        specs.append(spec)
    return tuple(specs)


def _is_list_of_items(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, (tuple, ControlSpec)) for v in value)


def canny(image: Image.Image, thresholds: tuple[int, int] = CANNY_THRESHOLDS) -> Image.Image:
    """OpenCV's Canny edges of ``image`` (as 8-bit RGB), white on black, three channels."""
    import cv2

    edges = cv2.Canny(np.asarray(image.convert("RGB")), *thresholds)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def control_family(config: Any) -> str:
    """A UNet's or ControlNet's family from its config: ``"SDXL"``, ``"SD 1.x"``, ``"SD 2.x"``."""
    if getattr(config, "addition_embed_type", None) == "text_time":
        return "SDXL"
    dim = getattr(config, "cross_attention_dim", None)
    if dim == 1024:
        return "SD 2.x"
    if dim == 768:
        return "SD 1.x"
    return f"SD (cross-attention width {dim})"


def _same_family(unet: Any, net: Any) -> bool:
    a, b = unet.config, net.config
    return (getattr(a, "addition_embed_type", None) == "text_time") == (
        getattr(b, "addition_embed_type", None) == "text_time"
    ) and getattr(a, "cross_attention_dim", None) == getattr(b, "cross_attention_dim", None)


@dataclass(frozen=True)
class PreparedControl:
    """A call's ControlNets, loaded and checked, with their images ready.

    Attributes:
        nets: the loaded ControlNets, in order.
        images: each one's control image (after the preprocessor).
        specs: the checked specs.
        records: ``controlnet`` and ``control_image`` records, in order.
    """

    nets: tuple[Any, ...]
    images: tuple[Image.Image, ...]
    specs: tuple[ControlSpec, ...]
    records: tuple[AddonRecord, ...]

    def pipeline(self, base: Any, mode: Mode) -> Any:
        """The ControlNet pipeline for ``mode`` sharing ``base``'s components (``from_pipe``)."""
        import diffusers

        xl = "XL" if hasattr(base, "text_encoder_2") else ""
        suffix = {"txt2img": "", "img2img": "Img2Img", "inpaint": "Inpaint"}[mode]
        cls = getattr(diffusers, f"StableDiffusion{xl}ControlNet{suffix}Pipeline")
        net: Any = self.nets[0]
        if len(self.nets) > 1:
            net = diffusers.MultiControlNetModel(list(self.nets))
        return cls.from_pipe(base, controlnet=net)

    def kwargs(self, mode: Mode, width: int, height: int) -> dict[str, Any]:
        """The ControlNet pipeline's own arguments (beside the plain pipeline's)."""
        one = len(self.nets) == 1

        def pick(values: list[Any]) -> Any:
            return values[0] if one else values

        key = "image" if mode == "txt2img" else "control_image"
        return {
            key: pick(list(self.images)),
            "controlnet_conditioning_scale": pick([float(s.scale) for s in self.specs]),
            "control_guidance_start": pick([float(s.start) for s in self.specs]),
            "control_guidance_end": pick([float(s.end) for s in self.specs]),
            "height": height,
            "width": width,
        }


class ControlNets:
    """The ControlNets a Generator has loaded, kept by path so a call does not reload them."""

    def __init__(self, *, device: torch.device, dtype: torch.dtype) -> None:
        self.device = device
        self.dtype = dtype
        self._loaded: dict[str, Loaded] = {}

    def prepare(self, specs: Sequence[ControlSpec], unet: Any) -> PreparedControl:
        """Load each spec's model (checked against ``unet``'s family) and read its image.

        Raises:
            InvalidOptionError: a control image that cannot be read.
            ModelLoadError: a model that is not a ControlNet, or one of another family.
            ModelNotFoundError: a path that does not exist.
        """
        images = [_control_image(i, spec) for i, spec in enumerate(specs)]
        nets, records = [], []
        for index, (spec, (_, digest, source)) in enumerate(zip(specs, images, strict=True)):
            loaded = self._load(spec.model)
            if not _same_family(unet, loaded.module):
                raise ModelLoadError(
                    f"control {index}: ControlNet {loaded.name!r} is for "
                    f"{control_family(loaded.module.config)}; this model is "
                    f"{control_family(unet.config)}",
                    source=loaded.source or loaded.name,
                    hint=f"use a ControlNet made for {control_family(unet.config)}.",
                )
            nets.append(loaded.module)
            settings = {
                "index": index,
                "scale": float(spec.scale),
                "start": float(spec.start),
                "end": float(spec.end),
                "preprocessor": spec.preprocessor,
            }
            records.append(
                AddonRecord("controlnet", loaded.name, loaded.sha256, loaded.source, settings)
            )
            name = Path(source).name if source else f"control_image_{index}"
            records.append(AddonRecord("control_image", name, digest, source, {"index": index}))
        prepared = [image for image, _, _ in images]
        return PreparedControl(tuple(nets), tuple(prepared), tuple(specs), tuple(records))

    def _load(self, ref: Any) -> Loaded:
        from diffusers import ControlNetModel

        key = f"id:{id(ref)}" if isinstance(ref, ControlNetModel) else os.fspath(ref)
        if key not in self._loaded:
            loaded = load_component(ControlNetModel, ref, what="control", torch_dtype=self.dtype)
            loaded.module.to(self.device, self.dtype)
            self._loaded[key] = loaded
        return self._loaded[key]


def _control_image(index: int, spec: ControlSpec) -> tuple[Image.Image, str, str]:
    """The control image after its preprocessor, its SHA-256 and its path ("" if given)."""
    value = spec.image
    image = load_image(f"control image {index}", value, "RGB")
    assert image is not None  # check_control refuses None
    if isinstance(value, (str, os.PathLike)):
        digest = hashlib.sha256(Path(value).read_bytes()).hexdigest()
        source = os.fspath(value)
    else:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()
        source = ""
    if spec.preprocessor == "canny":
        image = canny(image)
    return image, digest, source
