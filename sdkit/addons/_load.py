"""Loading one diffusers model component (a VAE, a ControlNet) from a file, folder or hub id.

The add-on modules share it: each names the component class and the records it makes. A
folder is read with ``from_pretrained`` (safetensors only), a single ``.safetensors`` file with
``from_single_file``, a hub id from the local cache when offline (as :mod:`sdkit.models` does
for whole models). The SHA-256 is that of the weight file (A1111's hash for a single file), or
of a folder's weight files (:func:`sdkit.weights_hash.weights_sha256`); a module given as is is
hashed from its tensors in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError, ModelNotFoundError, SdkitError
from ..models import is_offline, resolve_source
from ..weights_hash import weights_sha256

__all__ = ["Loaded", "load_component", "module_sha256"]


@dataclass(frozen=True)
class Loaded:
    """A component and what names it in a Recipe.

    Attributes:
        module: the loaded diffusers model.
        name: the file stem, folder name or hub id (``"custom"`` for a module given as is).
        sha256: SHA-256 of the weights that were read.
        source: the path or hub id as given ("" for a module given as is).
    """

    module: Any
    name: str
    sha256: str
    source: str


def module_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a module's tensors as they are in memory (key order, raw bytes)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def load_component(
    cls: Any,
    ref: Any,
    *,
    what: str,
    torch_dtype: torch.dtype,
    local_files_only: bool | None = None,
    subfolder: str | None = None,
    single_file_config: Mapping[str, Any] | None = None,
) -> Loaded:
    """Load ``cls`` (``AutoencoderKL``, ``ControlNetModel``) from ``ref``.

    Args:
        cls: the diffusers model class.
        ref: a path (file or folder), a hub id, or an instance of ``cls`` (used as is).
        what: the option's name, for messages (``"vae"``, ``"control"``).
        torch_dtype: dtype to load in.
        local_files_only: never contact the hub (default: ``HF_HUB_OFFLINE``).
        subfolder: a folder inside ``ref`` to read (``"vae"`` of a whole model folder).
        single_file_config: the diffusers config a single file's weights fit (so that no
            config is fetched from the hub); ``None``: diffusers infers one.

    Raises:
        ModelNotFoundError: no such path, or a hub id not in the cache while offline.
        ModelLoadError: the file or folder is not a ``cls`` diffusers can read.
    """
    if isinstance(ref, cls):
        return Loaded(ref, "custom", module_sha256(ref), "")
    if not isinstance(ref, (str, os.PathLike)):
        raise ModelLoadError(
            f"{what}: {type(ref).__name__} is not a path, a hub id or a {cls.__name__}",
            source=str(ref)[:200],
            hint=f"pass a .safetensors file, a diffusers folder or a hub id for {what}.",
        )
    source = resolve_source(ref)  # ModelNotFoundError for paths that do not exist
    text = os.fspath(ref)
    kwargs: dict[str, Any] = {"torch_dtype": torch_dtype}
    try:
        if source.kind == "single_file":
            path = Path(source.location)
            if path.suffix.lower() != ".safetensors":
                raise ModelLoadError(
                    f"{what}: {path} is not a .safetensors file",
                    source=text,
                    hint="convert it to safetensors; sdkit does not unpickle add-on weights.",
                )
            module = _from_single_file(cls, path, single_file_config, kwargs)
            return Loaded(module, path.stem, weights_sha256([path]), text)
        if source.kind == "folder":
            folder = Path(source.location) / (subfolder or "")
            files = sorted(folder.glob("*.safetensors"))
            if not (folder / "config.json").is_file() or not files:
                raise ModelLoadError(
                    f"{what}: {folder} is not a diffusers {cls.__name__} folder "
                    "(config.json and .safetensors weights)",
                    source=text,
                    hint="pass the folder that holds config.json, or a single .safetensors file.",
                )
            module = cls.from_pretrained(str(folder), use_safetensors=True, **kwargs)
            return Loaded(module, Path(source.location).name, weights_sha256(files), text)
        offline = is_offline(local_files_only)
        module = cls.from_pretrained(
            text, subfolder=subfolder, use_safetensors=True, local_files_only=offline, **kwargs
        )
        return Loaded(module, text, module_sha256(module), text)
    except SdkitError:
        raise
    except Exception as exc:  # diffusers raises many types; all mean "this did not load"
        if source.kind == "hub" and is_offline(local_files_only):
            raise ModelNotFoundError(
                f"{what}: {text!r} is not in the local Hugging Face cache and downloads are off",
                source=text,
                hint=f"download it where there is network (`hf download {text}`), or pass a "
                "local file or folder.",
            ) from exc
        raise ModelLoadError(
            f"{what}: could not load {text} as a {cls.__name__}: "
            f"{type(exc).__name__}: {str(exc)[:300]}",
            source=text,
            hint=f"pass a {cls.__name__} in diffusers format (folder) or a single .safetensors "
            "checkpoint of one.",
        ) from exc


def _from_single_file(
    cls: Any, path: Path, config: Mapping[str, Any] | None, kwargs: dict[str, Any]
) -> Any:
    if config is None:
        return cls.from_single_file(str(path), local_files_only=True, **kwargs)
    with tempfile.TemporaryDirectory(prefix="sdkit-config-") as folder:
        clean = {k: v for k, v in config.items() if not str(k).startswith("_")}
        clean["_class_name"] = cls.__name__
        Path(folder, "config.json").write_text(json.dumps(clean, default=list))
        return cls.from_single_file(str(path), config=folder, local_files_only=True, **kwargs)
