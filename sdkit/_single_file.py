"""Load one original-format (LDM / A1111 / Civitai) checkpoint, offline.

diffusers converts the keys (``DiffusionPipeline.from_single_file``) once it is given a *local*
diffusers-format folder of configs (``config=``). Without one it fetches configs from the Hub, so
sdkit ships those folders (``sdkit/configs/<family>``, JSON only) and writes the CLIP tokenizer
files next to them in a per-user cache on first use. What could still reach the network, and why
it does not:

* the checkpoint path is checked to be a local file (diffusers treats anything else as a URL);
* ``config`` is always an existing local folder with ``model_index.json`` (a repo id that is not
  in the cache makes diffusers retry with ``local_files_only=False``);
* ``original_config``, ``prediction_type=`` and ``load_safety_checker`` are never passed to
  diffusers (they switch on its legacy loaders, which read configs from the Hub); a prediction-type
  override is a scheduler object built here from the local config instead.

Example:
    >>> from sdkit._single_file import FAMILIES
    >>> FAMILIES["sdxl"].native_size
    1024
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from provenance._fs import atomic_folder, cache_dir

from ._json import read_json
from ._safetensors import read_safetensors_header
from .errors import (
    InvalidOptionError,
    ModelLoadError,
    ModelNotFoundError,
    SdkitError,
    UnsafeCheckpointError,
)

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

__all__ = [
    "FAMILIES",
    "FamilyInfo",
    "config_dir",
    "detect_family",
    "load_single_file",
    "read_checkpoint_header",
    "read_checkpoint_metadata",
]

Header = dict[str, tuple[str, list[int]]]

_EOT = "<|endoftext|>"  # OpenAI CLIP pads with its end token, OpenCLIP with "!" (token 0)
_PREDICTIONS = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class FamilyInfo:
    """One checkpoint family sdkit can load from a single file.

    Attributes:
        name: the key in :data:`FAMILIES` (``"sd1"``, ``"sdxl"``...).
        pipeline_class: the diffusers pipeline class name its ``model_index.json`` names.
        config_folder: the folder under ``sdkit/configs``.
        native_size: the training resolution in pixels (square).
        prediction_type: what the UNet predicts, ``"epsilon"`` or ``"v_prediction"``.
        description: the public model the configs are taken from.
        tokenizers: ``(subfolder, pad_token)`` for each CLIP tokenizer to write.
    """

    name: str
    pipeline_class: str
    config_folder: str
    native_size: int
    prediction_type: str
    description: str
    tokenizers: tuple[tuple[str, str], ...]


_L = (("tokenizer", _EOT),)
_H = (("tokenizer", "!"),)
_XL = (("tokenizer", _EOT), ("tokenizer_2", "!"))
_SD, _EPS, _V = "StableDiffusion", "epsilon", "v_prediction"

# fmt: off
FAMILIES: Mapping[str, FamilyInfo] = MappingProxyType({f.name: f for f in (
    FamilyInfo("sd1", f"{_SD}Pipeline", "sd1", 512, _EPS,
               "Stable Diffusion 1.5 (CLIP ViT-L/14)", _L),
    FamilyInfo("sd1_inpaint", f"{_SD}InpaintPipeline", "sd1_inpaint", 512, _EPS,
               "Stable Diffusion 1.5 inpainting (9-channel UNet)", _L),
    FamilyInfo("sd2", f"{_SD}Pipeline", "sd2", 768, _V,
               "Stable Diffusion 2.1 768-v (OpenCLIP ViT-H)", _H),
    FamilyInfo("sd2_base", f"{_SD}Pipeline", "sd2_base", 512, _EPS,
               "Stable Diffusion 2.1-base 512 (OpenCLIP ViT-H)", _H),
    FamilyInfo("sdxl", f"{_SD}XLPipeline", "sdxl", 1024, _EPS,
               "SDXL base 1.0 (CLIP ViT-L + OpenCLIP bigG)", _XL),
    FamilyInfo("sdxl_refiner", f"{_SD}XLImg2ImgPipeline", "sdxl_refiner", 1024, _EPS,
               "SDXL refiner 1.0 (OpenCLIP bigG only)", _XL[1:]),
    FamilyInfo("sdxl_inpaint", f"{_SD}XLInpaintPipeline", "sdxl_inpaint", 1024, _EPS,
               "SDXL 1.0 inpainting 0.1 (9-channel UNet)", _XL),
)})

# (cross-attention width, has SDXL's label_emb) -> (base family, inpainting family or None,
# key prefixes of the text encoders the family needs).
_UNET_KINDS: Mapping[tuple[int, bool], tuple[str, str | None, tuple[str, ...]]] = {
    (768, False): ("sd1", "sd1_inpaint", ("cond_stage_model.transformer.",)),
    (1024, False): ("sd2", None, ("cond_stage_model.model.",)),
    (2048, True): ("sdxl", "sdxl_inpaint",
                   ("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model.")),
    (1280, True): ("sdxl_refiner", None, ("conditioner.embedders.0.model.",)),
}
# fmt: on
_UNET = "model.diffusion_model."
_CONV_IN = _UNET + "input_blocks.0.0.weight"
_HEADER = "<checkpoint header>"
_LABEL_EMB = _UNET + "label_emb.0.0.weight"
_FAMILY_HINT = f"pass family= (one of {', '.join(FAMILIES)}) or config=<a diffusers folder>."


def _error(message: str, source: str | Path, hint: str) -> ModelLoadError:
    return ModelLoadError(message, source=source, hint=hint)


# -- reading a checkpoint without loading it --------------------------------------------------


def read_checkpoint_header(path: str | os.PathLike[str]) -> Header:
    """Read tensor names, dtypes and shapes from a ``.safetensors`` header (no tensor data).

    Every rule of the format is checked first (``sdkit._safetensors``): a hostile header is a
    :class:`~sdkit.errors.ModelLoadError`, never a raw exception.

    Args:
        path: the checkpoint file.

    Returns:
        ``{key: (dtype, shape)}``, e.g. ``{"model.diffusion_model.out.2.bias": ("F16", [4])}``.

    Raises:
        ModelNotFoundError: no file at ``path``.
        ModelLoadError: the file is not a valid safetensors file.
    """
    tensors, _ = read_safetensors_header(path)
    return {key: (dtype, shape) for key, (dtype, shape, _) in tensors.items()}


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the free-form ``__metadata__`` strings of a ``.safetensors`` file (may be empty)."""
    return read_safetensors_header(path)[1]


def _pickle_header(path: Path) -> Header:
    import torch

    try:
        state: Any = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    while isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {
        k: (str(v.dtype), list(v.shape)) for k, v in state.items() if isinstance(v, torch.Tensor)
    }


# -- recognising the family --------------------------------------------------------------------


def _context_width(header: Mapping[str, tuple[str, list[int]]]) -> int | None:
    for key in sorted(header):
        shape = header[key][1]
        if key.startswith(_UNET) and key.endswith("attn2.to_k.weight") and shape:
            return shape[-1]
    return None


def _declared_prediction(header: Mapping[str, Any], metadata: Mapping[str, str]) -> str | None:
    if "v_pred" in header:  # the A1111 / ComfyUI marker of a v-prediction checkpoint
        return "v_prediction"
    declared = metadata.get("modelspec.prediction_type") or metadata.get("modelspec.predict_key")
    if declared in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    return "epsilon" if declared == "epsilon" else None


def detect_family(
    header: Mapping[str, tuple[str, list[int]]], metadata: Mapping[str, str] | None = None
) -> str:
    """Tell which family a checkpoint belongs to from its tensor names and shapes.

    The UNet's cross-attention width (768 SD 1.x, 1024 SD 2.x, 2048 SDXL, 1280 SDXL refiner),
    SDXL's ``label_emb`` and the input channels of ``conv_in`` (9 for inpainting) decide; the
    text encoder the family needs must be present too. SD 2.x 768-v and 512-base have the same
    tensors: ``"sd2"`` (v-prediction) unless a ``v_pred`` key, the SAI model-spec metadata or
    ``modelspec.architecture`` say otherwise.

    Args:
        header: ``{key: (dtype, shape)}`` as :func:`read_checkpoint_header` returns.
        metadata: the safetensors ``__metadata__``, if any.

    Returns:
        A key of :data:`FAMILIES`.

    Raises:
        ModelLoadError: the checkpoint is not one of the families.
    """
    meta = metadata or {}
    width = _context_width(header)
    kind = _UNET_KINDS.get((width or 0, _LABEL_EMB in header))
    if kind is None:
        what = "no Stable Diffusion UNet" if width is None else f"context width {width}"
        hint = "LoRA, VAE and embedding files are not full checkpoints; otherwise " + _FAMILY_HINT
        raise _error(f"unrecognised checkpoint ({what}): not SD 1.x, 2.x or XL", _HEADER, hint)
    base, inpaint, prefixes = kind
    conv_in = header[_CONV_IN][1] if _CONV_IN in header else [0, 4]
    channels = conv_in[1] if len(conv_in) > 1 else 0
    if channels == 9 and inpaint is not None:
        family = inpaint
    elif channels == 4:
        family = base
    else:
        hint = "sdkit knows txt2img (4) and SD 1.5 / SDXL inpainting (9); " + _FAMILY_HINT
        raise _error(f"unsupported {base} variant: {channels} UNet input channels", _HEADER, hint)
    missing = [p for p in prefixes if not any(k.startswith(p) for k in header)]
    if missing:
        message = f"checkpoint looks like {family} but has no text encoder under {missing[0]!r}"
        raise _error(message, _HEADER, "UNet-only files are not supported: use a full checkpoint.")
    if family == "sd2":
        arch = meta.get("modelspec.architecture", "")
        if _declared_prediction(header, meta) == "epsilon" or arch.startswith(
            "stable-diffusion-v2-512"
        ):
            family = "sd2_base"
    return family


# -- the local config folders --------------------------------------------------------------------


def _files(node: Traversable, rel: str = "") -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        name = f"{rel}{child.name}"
        if child.is_dir():
            found += _files(child, name + "/")
        elif child.name.endswith(".json"):
            found.append((name, child.read_bytes()))
    return found


def _cache_roots() -> list[Path]:
    home = cache_dir()
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return [home / "configs", Path(tempfile.gettempdir()) / f"sdkit-{user}" / "configs"]


def config_dir(family: str) -> Path:
    """Materialise the diffusers config folder of ``family`` (with tokenizer files); return it.

    The shipped JSON plus the CLIP tokenizer files are written once per sdkit version and content
    to ``$SDKIT_CACHE/configs`` (default ``~/.cache/sdkit/configs``) through a temporary folder and
    an atomic rename, so concurrent processes never see a half-written folder.

    Raises:
        InvalidOptionError: ``family`` is not a key of :data:`FAMILIES`.
        ModelLoadError: no cache folder is writable.
    """
    if family not in FAMILIES:
        raise InvalidOptionError("family", family, list(FAMILIES))
    info = FAMILIES[family]
    from . import _clip_vocab

    shipped = _files(resources.files("sdkit") / "configs" / info.config_folder)
    try:
        version = importlib.metadata.version("sdkit")
    except importlib.metadata.PackageNotFoundError:  # running from a source checkout
        version = "source"
    digest = hashlib.sha256(version.encode())
    digest.update(Path(_clip_vocab.__file__).read_bytes())
    for rel, data in shipped:
        digest.update(rel.encode() + b"\0" + data)
    name = f"{family}-{digest.hexdigest()[:16]}"
    errors: list[str] = []
    for root in _cache_roots():
        final = root / name
        if (final / "model_index.json").is_file():
            return final
        try:
            root.mkdir(parents=True, exist_ok=True)
            with atomic_folder(final) as tmp:
                for rel, data in shipped:
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / rel).write_bytes(data)
                for sub, pad in info.tokenizers:
                    _clip_vocab.write_clip_tokenizer_files(tmp / sub, pad_token=pad)
        except OSError as exc:
            if (final / "model_index.json").is_file():  # another process finished first
                return final
            errors.append(f"{root}: {exc}")
            continue
        return final
    message = f"could not write the {family} config folder ({'; '.join(errors)})"
    raise _error(message, family, "set SDKIT_CACHE to a writable folder.")


# -- loading --------------------------------------------------------------------------------------


def _pipeline_class(name: str | type[Any], source: Path) -> type[Any]:
    import diffusers

    cls = getattr(diffusers, name, None) if isinstance(name, str) else name
    if not (isinstance(cls, type) and hasattr(cls, "from_single_file")):
        hint = "use a StableDiffusion*Pipeline or StableDiffusionXL*Pipeline class."
        raise _error(f"{name!r} is not a diffusers pipeline that loads single files", source, hint)
    return cls


def _index_class(folder: Path, source: Path) -> str:
    """The pipeline class ``folder/model_index.json`` names (a small JSON file, checked)."""
    index_file = folder / "model_index.json"
    try:
        index = read_json(index_file)
    except ValueError as exc:
        hint = "pass a folder saved with save_pretrained."
        raise _error(f"{index_file} is not readable JSON ({exc})", source, hint) from None
    name = index.get("_class_name") if isinstance(index, dict) else None
    if not isinstance(name, str):
        hint = "pass a folder saved with save_pretrained."
        raise _error(f'{index_file} names no pipeline ("_class_name")', source, hint)
    return name


def _scheduler_override(folder: Path, prediction: str | None, zero_snr: bool) -> Any | None:
    # diffusers' own prediction_type= switches to its legacy scheduler loader; build it here.
    import diffusers

    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    cls = getattr(diffusers, config["_class_name"])
    changes: dict[str, Any] = {}
    if prediction is not None and config.get("prediction_type", "epsilon") != prediction:
        changes["prediction_type"] = prediction
    if zero_snr and "rescale_betas_zero_snr" in inspect.signature(cls.__init__).parameters:
        changes |= {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
    return cls.from_config(config, **changes) if changes else None


def _check_loaded(pipe: Any, source: Path) -> None:
    import torch

    for name, part in pipe.components.items():
        if isinstance(part, torch.nn.Module):
            empty = [k for k, t in [*part.named_parameters(), *part.named_buffers()] if t.is_meta]
            if empty:
                message = (
                    f"checkpoint has no weights for {len(empty)} {name} tensors ({empty[0]}...)"
                )
                raise _error(message, source, "the file does not match the config: " + _FAMILY_HINT)


def load_single_file(
    path: str | os.PathLike[str],
    *,
    family: str | None = None,
    config: str | os.PathLike[str] | None = None,
    pipeline_class: str | type[Any] | None = None,
    torch_dtype: torch.dtype | None = None,
    prediction_type: str | None = None,
    allow_pickle: bool = False,
) -> DiffusionPipeline:
    """Load an SD 1.x / 2.x / XL checkpoint file into a diffusers pipeline, never going online.

    Args:
        path: the ``.safetensors`` file (``.ckpt``/``.pt`` only with ``allow_pickle=True``).
        family: a key of :data:`FAMILIES`; detected from the tensors when ``None``.
        config: a local diffusers folder (``model_index.json`` + component configs and tokenizers)
            to use instead of the shipped one; it overrides ``family``.
        pipeline_class: a diffusers pipeline class or its name; by default the one the config's
            ``model_index.json`` names.
        torch_dtype: dtype of the weights (default: as stored, float32 for most).
        prediction_type: ``"epsilon"`` or ``"v_prediction"``; by default what the checkpoint
            declares (``v_pred`` key, model-spec metadata) or the family's.
        allow_pickle: accept pickle checkpoints, whose loading can run code.

    Returns:
        The pipeline, on the CPU.

    Raises:
        ModelNotFoundError: no file at ``path``.
        UnsafeCheckpointError: not ``.safetensors`` and ``allow_pickle`` is false.
        InvalidOptionError: unknown ``family`` or ``prediction_type``.
        ModelLoadError: the file is unreadable, unrecognised, or does not fit the config.
    """
    source = Path(path)
    if not source.is_file():
        raise ModelNotFoundError(f"no checkpoint file at {source}", source=source)
    if prediction_type is not None and prediction_type not in _PREDICTIONS:
        raise InvalidOptionError("prediction_type", prediction_type, _PREDICTIONS)
    if source.suffix.lower() == ".safetensors":
        tensors, metadata = read_safetensors_header(source)
        header = {key: (dtype, shape) for key, (dtype, shape, _) in tensors.items()}
    elif allow_pickle:
        header, metadata = _pickle_header(source), {}
    else:
        raise UnsafeCheckpointError(
            f"refusing to load pickle checkpoint {source.name}: unpickling can run code",
            source=source,
            hint="convert it to .safetensors, or pass allow_pickle=True if you trust its origin.",
        )
    prediction = prediction_type or _declared_prediction(header, metadata)
    if config is not None:
        folder = Path(config)
        if not (folder / "model_index.json").is_file():
            hint = "pass a folder saved with save_pretrained; hub ids are not read here."
            raise _error(
                f"config {folder} is not a diffusers folder (no model_index.json)", source, hint
            )
        label = str(folder)
    else:
        try:
            label = family or detect_family(header, metadata)
        except ModelLoadError as exc:
            raise _error(exc.message, source, exc.hint or _FAMILY_HINT) from None
        if label == "sd2" and family is None and prediction == "epsilon":
            label = "sd2_base"
        folder = config_dir(label)
    cls = _pipeline_class(pipeline_class or _index_class(folder, source), source)
    try:
        parts: dict[str, Any] = {}
        scheduler = _scheduler_override(folder, prediction, "ztsnr" in header)
        if scheduler is not None:
            parts["scheduler"] = scheduler
        pipe = cls.from_single_file(
            str(source),
            config=str(folder),
            local_files_only=True,
            dtype=torch_dtype,
            **parts,
        )
    except SdkitError:
        raise
    except Exception as exc:  # diffusers raises many types; all mean "this file did not load"
        message = f"could not load {source.name} as {label}: {type(exc).__name__}: {exc}"
        raise _error(message, source, "if the family was guessed wrong, " + _FAMILY_HINT) from exc
    _check_loaded(pipe, source)
    return pipe
