"""LoRA and LyCORIS (LoCon) add-ons: checked, loaded with diffusers' loaders, switched per call.

Files are what A1111, ComfyUI and diffusers users have: kohya / A1111 ``.safetensors``
(``lora_unet_…``, ``lora_te_…`` keys) and diffusers / PEFT folders
(``pytorch_lora_weights.safetensors``), for SD 1.x/2.x and SDXL. Each is loaded once as a peft
adapter with diffusers' ``load_lora_weights(..., adapter_name=name)`` (diffusers converts kohya
keys itself); a call then picks its set with ``set_adapters(names, weights)``, one weight for
the UNet and one for the text encoders, so switching sets never reloads the base model. With
``fuse=True`` the set is merged into the weights (``fuse_lora``) while it stays the same; the
base weights are restored bit for bit when it changes (a copy of each fused layer is kept).

Before diffusers sees a file, its ``.safetensors`` header is checked
(:func:`sdkit._safetensors.read_safetensors_header`), and two mistakes are refused with an
:class:`~sdkit.errors.AddonError`: a file that is not a LoRA (no ``lora_down`` / ``lora_A`` /
LyCORIS keys), and a LoRA made for another family (a second text encoder's keys on a model
without one, or a cross-attention width that is not the model's: 768 SD 1.x, 1024 SD 2.x,
2048 SDXL).

A1111's ``<lora:name:te:unet>`` order is kept (``extensions-builtin/Lora/extra_networks_lora.py``:
the first number is the text encoder's multiplier and the UNet's too unless a second is given;
``te=`` / ``unet=`` name them).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._option_values import check_float
from .._safetensors import read_safetensors_header
from ..errors import AddonError, InvalidOptionError, ModelLoadError, UnsafeCheckpointError
from ._files import PICKLE_SUFFIXES, addnet_sha256, file_sha256, find, listing
from ._record import AddonRecord

__all__ = [
    "LORA_SUFFIXES",
    "LoraFile",
    "LoraSet",
    "LoraWeight",
    "LoraWeights",
    "check_loras",
    "inspect_lora",
    "lora_family",
    "loras_from_records",
    "weights_of",
]

LORA_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES, "/")
DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"
#: cross-attention width -> the family that has it
FAMILY_BY_WIDTH = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
_LORA_KEY = re.compile(
    r"lora_down|lora_up|lora_A|lora_B|lora\.down|lora\.up|lora_linear_layer|hada_w|lokr_w"
)
_SECOND_ENCODER = re.compile(r"^(lora_te2_|text_encoder_2\.|te2\.)")
_CONTEXT_KEY = re.compile(r"attn2[._]to_k.*(lora_down|lora_A|lora\.down)")


@dataclass(frozen=True)
class LoraWeights:
    """The multipliers of one LoRA in one call (A1111's ``te`` and ``unet``)."""

    unet: float = 1.0
    te: float = 1.0


@dataclass(frozen=True)
class LoraFile:
    """A LoRA on disk, checked.

    Attributes:
        name: what calls name it (``<lora:name>``, ``loras={name: w}``).
        path: the file or diffusers folder as found.
        weights: the weight file read (``path`` itself, or the folder's
            ``pytorch_lora_weights.safetensors``).
        sha256: SHA-256 of ``weights``.
        short_hash: A1111's ``Lora hashes`` value (see :mod:`sdkit.addons._files`).
        family: ``"SDXL"``, ``"SD 1.x"``, ``"SD 2.x"`` as far as the keys tell, else ``None``.
        context_width: the cross-attention width its UNet layers take, when they say.
        second_encoder: it has layers for a second text encoder (SDXL).
    """

    name: str
    path: Path
    weights: Path
    sha256: str
    short_hash: str
    family: str | None
    context_width: int | None
    second_encoder: bool

    @property
    def adapter(self) -> str:
        """Its peft adapter name: the name as an identifier (peft's module keys take no
        ``.``), plus 8 hex digits of its SHA-256."""
        return f"{re.sub(r'[^0-9A-Za-z_]', '_', self.name)}_{self.sha256[:8]}"


def inspect_lora(path: str | os.PathLike[str], *, name: str | None = None) -> LoraFile:
    """Check that ``path`` is a LoRA and read what its keys say (no tensor is loaded).

    Raises:
        AddonError: not a LoRA, or not a readable file.
    """
    path = Path(path)
    weights = path / DIFFUSERS_WEIGHTS if path.is_dir() else path
    stem = name or (path.name if path.is_dir() else path.stem)
    if not weights.is_file():
        raise AddonError(
            f"{path} holds no {DIFFUSERS_WEIGHTS}", kind="lora", source=path,
            hint="give a kohya .safetensors file or a diffusers LoRA folder.",
        )  # fmt: skip
    shapes: dict[str, list[int]] = {}
    meta: dict[str, str] = {}
    if weights.suffix.lower() == ".safetensors":
        try:
            header, meta = read_safetensors_header(weights)
        except ModelLoadError as exc:
            raise AddonError(exc.message, kind="lora", source=path, hint=exc.hint) from exc
        shapes = {k: shape for k, (_, shape, _) in header.items()}
    if shapes and not any(_LORA_KEY.search(k) for k in shapes):
        raise AddonError(
            f"{weights.name} is not a LoRA: none of its {len(shapes)} tensors is a LoRA layer "
            "(lora_down/lora_up, lora_A/lora_B, LyCORIS hada_/lokr_)",
            kind="lora",
            source=path,
            hint="a checkpoint loads with Generator(model=...), an embedding with "
            "embedding_dirs=...; a LoRA's keys name lora_down or lora_A.",
        )
    family, width, second = _family(shapes, meta)
    sha = file_sha256(weights)
    trained = meta.get("sshs_model_hash", "")
    if re.fullmatch(r"[0-9a-f]{12,64}", trained):
        short = trained[:12]
    elif weights.suffix.lower() == ".safetensors":
        short = addnet_sha256(weights)[:12]
    else:
        short = sha[:12]
    return LoraFile(stem, path, weights, sha, short, family, width, second)


def lora_family(path: str | os.PathLike[str]) -> str | None:
    """The family a LoRA file's keys (or kohya metadata) tell, reading its header only.

    Raises:
        AddonError: not a LoRA, or not a readable ``.safetensors`` file.
    """
    path = Path(path)
    weights = path / DIFFUSERS_WEIGHTS if path.is_dir() else path
    try:
        header, meta = read_safetensors_header(weights)
    except ModelLoadError as exc:
        raise AddonError(exc.message, kind="lora", source=path, hint=exc.hint) from exc
    shapes = {k: shape for k, (_, shape, _) in header.items()}
    if not any(_LORA_KEY.search(k) for k in shapes):
        raise AddonError(f"{weights.name} is not a LoRA", kind="lora", source=path)
    return _family(shapes, meta)[0]


def _family(
    shapes: Mapping[str, list[int]], meta: Mapping[str, str]
) -> tuple[str | None, int | None, bool]:
    second = any(_SECOND_ENCODER.match(k) for k in shapes)
    width = next((s[-1] for k, s in shapes.items() if _CONTEXT_KEY.search(k) and s), None)
    family = "SDXL" if second else FAMILY_BY_WIDTH.get(width or 0)
    if family is None and str(meta.get("ss_base_model_version", "")).startswith("sdxl_"):
        family = "SDXL"  # A1111's network.py detect_version reads the same metadata
    return family, width, second


class LoraSet:
    """The LoRAs loaded into one pipeline (peft adapters), and the set the last call used.

    Args:
        pipe: the diffusers pipeline (its UNet and text encoders are shared by the derived
            img2img / inpaint pipelines, so adapters apply to every mode).
        dirs: the folders names are looked up in.
        allow_pickle: accept ``.pt`` / ``.bin`` / ``.ckpt`` LoRAs (they can run code).
    """

    def __init__(self, pipe: Any, dirs: Sequence[Path], *, allow_pickle: bool = False) -> None:
        self.pipe = pipe
        self.dirs = tuple(dirs)
        self.allow_pickle = allow_pickle
        self.loaded: dict[str, LoraFile] = {}
        self._fused: tuple[tuple[str, LoraWeights], ...] | None = None
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    # -- loading -----------------------------------------------------------------------------

    def available(self) -> dict[str, Path]:
        """LoRA files and folders in :attr:`dirs`, by name."""
        return listing(self.dirs, LORA_SUFFIXES)

    def load(self, source: str | os.PathLike[str], name: str | None = None) -> LoraFile:
        """Load a file, a diffusers folder, a name in :attr:`dirs` or a hub id, once.

        Raises:
            AddonError: not a LoRA, made for another model family, or refused by diffusers.
            AddonNotFoundError: a name found in no folder.
            UnsafeCheckpointError: a pickle file without ``allow_pickle=True``.
        """
        text = os.fspath(source)
        path = Path(text).expanduser()
        if not path.exists() and _looks_like_hub_id(text) and not self._in_dirs(text):
            path = _hub_download(text)
        elif not path.exists():
            path = find(text, self.dirs, LORA_SUFFIXES, "lora")
        info = inspect_lora(path, name=name)
        if info.name in self.loaded:
            if self.loaded[info.name].sha256 == info.sha256:
                return self.loaded[info.name]
            self.unload(info.name)
        self._check_family(info)
        if info.weights.suffix.lower() in PICKLE_SUFFIXES and not self.allow_pickle:
            raise UnsafeCheckpointError(
                f"{info.weights.name} is a pickle file: loading it can run code",
                source=info.weights,
                hint="use a .safetensors LoRA, or pass allow_pickle=True if you trust it.",
            )
        self._unfuse()
        try:
            with warnings.catch_warnings():  # several adapters in one model is the point
                warnings.filterwarnings("ignore", "Already found a `peft_config`", UserWarning)
                self.pipe.load_lora_weights(_state_dict(info.weights), adapter_name=info.adapter)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise AddonError(
                f"diffusers cannot load the LoRA {info.name!r} ({info.weights.name}): "
                f"{str(exc).splitlines()[0][:300]}",
                kind="lora",
                source=info.path,
                hint="diffusers reads kohya/A1111 LoRA, LoCon and LoKr files and "
                "diffusers/PEFT folders; other LyCORIS types (LoHa, OFT...) it does not.",
            ) from exc
        self.loaded[info.name] = info
        self.pipe.disable_lora()  # nothing applies until a call asks for it
        return info

    def unload(self, name: str) -> None:
        """Remove one adapter (``delete_adapters``); a later call may load it again."""
        self._unfuse()
        info = self.loaded.pop(name, None)
        if info is not None:
            self.pipe.delete_adapters([info.adapter])

    def resolve(self, name: str, *, paths: bool = True) -> LoraFile:
        """A loaded LoRA by name, else the file of that name in :attr:`dirs`, loaded now.

        ``paths=False`` (a prompt's ``<lora:…>`` tag): a name in :attr:`dirs` only, never a path.
        """
        if name in self.loaded:
            return self.loaded[name]
        path = find(name, self.dirs, LORA_SUFFIXES, "lora", paths=paths)
        direct = paths and Path(name).expanduser().exists()
        return self.load(path, name=None if direct else name)

    def ensure(self, name: str, sha256: str) -> LoraFile:
        """The LoRA ``name`` whose file has ``sha256`` (a Recipe's), loaded from :attr:`dirs`.

        Raises:
            AddonNotFoundError: no file of that name in :attr:`dirs`.
            AddonError: the file of that name is another one (its SHA-256 differs).
        """
        known = self.loaded.get(name)
        if known is not None and known.sha256 == sha256:
            return known
        info = inspect_lora(find(name, self.dirs, LORA_SUFFIXES, "lora"), name=name)
        if info.sha256 != sha256:
            raise AddonError(
                f"{info.weights} is not the LoRA {name!r} the Recipe names: its sha256 is "
                f"{info.sha256[:12]}…, the Recipe's {sha256[:12]}…",
                kind="lora",
                source=info.path,
                hint="put the file the picture was made with in lora_dirs.",
            )
        return self.load(info.path, name)

    def _in_dirs(self, name: str) -> bool:
        return name in self.available()

    def _check_family(self, info: LoraFile) -> None:
        model_width = int(getattr(self.pipe.unet.config, "cross_attention_dim", 0) or 0)
        has_second = getattr(self.pipe, "text_encoder_2", None) is not None
        model = _family_name(self.pipe, model_width)
        problem = None
        if info.second_encoder and not has_second:
            problem = "it has layers for SDXL's second text encoder"
        elif info.context_width is not None and info.context_width != model_width:
            problem = (
                f"its UNet layers take {info.context_width}-wide text conditioning, "
                f"this model's take {model_width}"
            )
        if problem is not None:
            made_for = info.family or f"a model with {info.context_width}-wide cross-attention"
            raise AddonError(
                f"the LoRA {info.name!r} is for {made_for}, this model is {model}: {problem}",
                kind="lora",
                source=info.path,
                hint=f"use a LoRA made for {model}, or load a {made_for} model.",
            )

    # -- one call ----------------------------------------------------------------------------

    def apply(self, active: Sequence[tuple[LoraFile, LoraWeights]], *, fuse: bool) -> None:
        """Make ``active`` the LoRAs (and weights) the next denoising runs with."""
        key = tuple((info.name, w) for info, w in active)
        if self._fused is not None and (not fuse or key != self._fused):
            self._unfuse()
        if not self.loaded:
            return
        if not active:
            self.pipe.disable_lora()
            return
        if self._fused == key:
            return
        per_component = self.pipe.get_list_adapters()
        names = [info.adapter for info, _ in active]
        weights = [
            {
                component: w.te if component.startswith("text_encoder") else w.unet
                for component, adapters in per_component.items()
                if info.adapter in adapters
            }
            for info, w in active
        ]
        self.pipe.enable_lora()
        self.pipe.set_adapters(names, adapter_weights=weights)
        if fuse:
            self._fuse(names, per_component)
            self._fused = key

    def _fuse(self, names: list[str], per_component: Mapping[str, list[str]]) -> None:
        from peft.tuners.lora import LoraLayer

        self._saved = []
        components = [c for c, adapters in per_component.items() if set(adapters) & set(names)]
        for component in components:
            for module in getattr(self.pipe, component).modules():
                if isinstance(module, LoraLayer):
                    weight = module.get_base_layer().weight
                    self._saved.append((weight, weight.detach().to("cpu", copy=True)))
        self.pipe.fuse_lora(components=components, lora_scale=1.0, adapter_names=names)

    def _unfuse(self) -> None:
        if self._fused is None:
            return
        self.pipe.unfuse_lora(components=list(self.pipe.get_list_adapters()))
        with torch.no_grad():  # unmerging subtracts in floating point: put the bits back
            for weight, saved in self._saved:
                weight.copy_(saved.to(weight.device))
        self._saved = []
        self._fused = None

    def records(
        self, active: Sequence[tuple[LoraFile, LoraWeights]], *, fuse: bool, tagged: set[str]
    ) -> list[AddonRecord]:
        """One :class:`AddonRecord` per active LoRA (``from_prompt``: named by a tag)."""
        return [
            AddonRecord(
                "lora",
                info.name,
                info.sha256,
                source=info.path.name,  # the file name: no folder of the user in a manifest
                settings={
                    "unet": w.unet,
                    "te": w.te,
                    "fused": fuse,
                    "from_prompt": info.name in tagged,
                },
                short_hash=info.short_hash,
            )
            for info, w in active
        ]


#: A call's weight for one LoRA: both parts, ``(unet, te)``, or :class:`LoraWeights`.
LoraWeight = float | tuple[float, float] | LoraWeights
MAX_LORAS = 32


def check_loras(loras: object, fuse: object) -> None:
    """``loras=`` and ``fuse_loras=`` checked alone (names are resolved when a call runs).

    Raises:
        InvalidOptionError: not a mapping of names to weights, or more than :data:`MAX_LORAS`.
    """
    if not isinstance(fuse, bool):
        raise InvalidOptionError("fuse_loras", fuse, "True or False")
    if loras is None:
        return
    if not isinstance(loras, Mapping) or len(loras) > MAX_LORAS:
        raise InvalidOptionError(
            "loras", loras, f"a mapping of at most {MAX_LORAS} names to weights",
            hint='e.g. loras={"film_grain": 0.7, "ink": (1.0, 0.5)}.',
        )  # fmt: skip
    for name, value in loras.items():
        if not isinstance(name, str) or not name or len(name) > 256:
            raise InvalidOptionError("loras", name, "a LoRA name (a string)")
        weights_of(value, name)


def loras_from_records(records: Sequence[AddonRecord]) -> dict[str, LoraWeight] | None:
    """The ``loras=`` that a Recipe's records say were passed (tags in the prompt aside)."""
    out: dict[str, LoraWeight] = {}
    for r in records:
        if r.kind == "lora" and not r.settings.get("from_prompt"):
            unet, te = r.settings.get("unet", 1.0), r.settings.get("te", 1.0)
            out[r.name] = (float(unet or 0.0), float(te or 0.0))
    return out or None


def weights_of(value: object, name: str) -> LoraWeights:
    """``loras={name: value}``'s value: a number (both), ``(unet, te)`` or a LoraWeights."""
    if isinstance(value, LoraWeights):
        pair: tuple[object, object] = (value.unet, value.te)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = (value[0], value[1])
    else:
        pair = (value, value)
    for part in pair:
        check_float(f"loras[{name!r}]", part, -100.0, 100.0)
    return LoraWeights(float(pair[0]), float(pair[1]))  # type: ignore[arg-type]


def _family_name(pipe: Any, width: int) -> str:
    from ..models import pipeline_family  # the family names sdkit reports everywhere

    if pipeline_family(pipe) == "sdxl":
        return "SDXL"
    return FAMILY_BY_WIDTH.get(width, "SD 1.x/2.x")


def _state_dict(weights: Path) -> dict[str, torch.Tensor]:
    if weights.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        tensors: dict[str, torch.Tensor] = load_file(str(weights))
        return tensors
    loaded = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise AddonError(f"{weights.name} holds no tensors by name", kind="lora", source=weights)
    return loaded


def _looks_like_hub_id(text: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", text))


def _hub_download(repo: str) -> Path:
    """A hub LoRA repository's folder (the cache only when offline), as diffusers users load."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo, allow_patterns=["*.safetensors", "*.json"])
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        from ..errors import AddonNotFoundError

        raise AddonNotFoundError(
            f"no LoRA {repo!r} in the hub cache or on the hub: {str(exc).splitlines()[0][:200]}",
            kind="lora",
            source=repo,
            hint="check the id, or unset HF_HUB_OFFLINE to download it once.",
        ) from exc
    path = Path(folder)
    if (path / DIFFUSERS_WEIGHTS).is_file():
        return path
    files = sorted(path.glob("*.safetensors"))
    if len(files) != 1:
        raise AddonError(
            f"the hub repository {repo} holds {len(files)} .safetensors files",
            kind="lora",
            source=repo,
            hint="download the one you want and give its path.",
        )
    return files[0]
