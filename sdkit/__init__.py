"""sdkit: text-to-image diffusion in which every image carries its own provenance.

Example:
    >>> from sdkit import Generator
    >>> gen = Generator(device="cpu", progress=False)     # the small model sdkit ships
    >>> result = gen("a red circle on a blue background", seed=1, steps=2, width=64, height=64)
    >>> result.image.recipe.seed, result.image.image.size
    (1, (64, 64))
    >>> result.image.to_bytes("png")[:4]
    b'\x89PNG'
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    GenerationCancelled,
    InvalidOptionError,
    ModelLoadError,
    ModelNotFoundError,
    OutputError,
    RecipeParseError,
    ReplayError,
    SdkitError,
    UnsafeCheckpointError,
)
from .images import GeneratedImage, GenerationResult
from .recipe import Recipe

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .generator import Generator
    from .options import GenerationOptions
    from .samplers import SamplerSpec

__version__ = "0.1.0"

__all__ = [
    "SAMPLERS",
    "GeneratedImage",
    "GenerationCancelled",
    "GenerationOptions",
    "GenerationResult",
    "Generator",
    "InvalidOptionError",
    "ModelLoadError",
    "ModelNotFoundError",
    "OutputError",
    "Recipe",
    "RecipeParseError",
    "ReplayError",
    "SdkitError",
    "UnsafeCheckpointError",
    "__version__",
]


# torch and diffusers take seconds to import: load them only when a name that needs them is used.
_LAZY = {"Generator": ".generator", "GenerationOptions": ".options", "SAMPLERS": ".samplers"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'sdkit' has no attribute {name!r}")


if TYPE_CHECKING:
    SAMPLERS: Mapping[str, SamplerSpec]
