"""A Generator's add-ons, set up when it loads: the one place its constructors call.

:func:`model_addons` builds the :class:`~sdkit.addons.passes.Addons` a Generator holds (its
refiner loaded, the VAE it swapped in recorded); :func:`prompt_addons_for` builds its
:class:`~sdkit.addons.prompt_addons.PromptAddons` (LoRAs and embeddings) from the folders given
or named by ``$SDKIT_LORA_DIRS`` / ``$SDKIT_EMBEDDING_DIRS``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from ._files import folders
from ._record import AddonRecord
from .passes import Addons
from .prompt_addons import PromptAddons
from .refiner import load_refiner

__all__ = ["Folders", "model_addons", "prompt_addons_for"]

#: One folder or several (``None``: the environment variable's).
Folders = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


def model_addons(
    pipe: Any,
    refiner: Any,
    *,
    device: torch.device,
    dtype: torch.dtype,
    local_files_only: bool | None,
    fixed: Sequence[AddonRecord] = (),
) -> Addons:
    """The Addons of a Generator: ``refiner`` (if any) loaded against ``pipe``.

    Raises:
        InvalidOptionError: a refiner for a base model that is not SDXL.
        ModelLoadError: the refiner is not an SDXL pipeline (or cannot be loaded).
    """
    loaded = None if refiner is None else load_refiner(refiner, pipe, device=device,
        torch_dtype=dtype, local_files_only=local_files_only)  # fmt: skip
    return Addons(device=device, dtype=dtype, refiner=loaded, fixed=fixed)


def prompt_addons_for(
    pipe: Any, lora_dirs: Folders, embedding_dirs: Folders, allow_pickle: bool
) -> PromptAddons:
    """The LoRAs and embeddings of ``pipe``, found in these folders (or the variables')."""
    return PromptAddons(
        pipe, lora_dirs=folders(lora_dirs, "SDKIT_LORA_DIRS"), allow_pickle=allow_pickle,
        embedding_dirs=folders(embedding_dirs, "SDKIT_EMBEDDING_DIRS"),
    )  # fmt: skip
