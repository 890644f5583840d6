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

from typing import TYPE_CHECKING, Any

from .errors import (
    GenerationCancelled,
    InvalidOptionError,
    ModelLoadError,
    ModelNotFoundError,
    OutputError,
    ReplayError,
    SdkitError,
    UnsafeCheckpointError,
)
from .images import GeneratedImage, GenerationResult
from .recipe import Recipe

if TYPE_CHECKING:
    from .generator import Generator
    from .samplers import SamplerSpec

__version__ = "0.1.0"

__all__ = [
    "SAMPLERS",
    "GeneratedImage",
    "GenerationCancelled",
    "GenerationResult",
    "Generator",
    "InvalidOptionError",
    "ModelLoadError",
    "ModelNotFoundError",
    "OutputError",
    "Recipe",
    "ReplayError",
    "SdkitError",
    "UnsafeCheckpointError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # torch and diffusers take seconds to import: load them only when a Generator is needed.
    if name == "Generator":
        from .generator import Generator

        return Generator
    if name == "SAMPLERS":
        from .samplers import SAMPLERS

        return SAMPLERS
    raise AttributeError(f"module 'sdkit' has no attribute {name!r}")


if TYPE_CHECKING:
    SAMPLERS: dict[str, SamplerSpec]
