"""Errors raised by sdkit.

Every error sdkit raises on purpose derives from :class:`SdkitError`, so an app can catch one
type. Each carries the context a user needs (the option and the value, or the path) and a
``hint`` that says how to fix the call::

    SdkitError
    ├── InvalidOptionError      a generation option is out of range or unknown (before any work)
    ├── ModelLoadError          weights could not be found, read, or recognised
    │   ├── ModelNotFoundError  a missing path, a hub id not cached while offline, or one the
    │   │                       hub does not have
    │   ├── UnsafeCheckpointError  a pickle checkpoint without ``allow_pickle=True``
    │   └── AddonError          a LoRA, embedding, VAE, ControlNet… that cannot be used with this
    │       │                   model (wrong family, not that kind of file, a hash that differs)
    │       └── AddonNotFoundError  a name found in no add-on folder (``close`` lists near names)
    ├── GenerationCancelled     a step callback asked to stop
    ├── OutputError             an image could not be written (exists, unwritable, bad format)
    └── ReplayError             an image cannot be re-rendered (no Recipe, another model, …)
        └── RecipeParseError    its Recipe (infotext or JSON) is malformed: a field missing,
                                of the wrong type or out of range (also a ``ValueError``)

The CLI maps each class to an exit code (see ``sdkit.cli.EXIT_CODES``); no traceback reaches a
user for an expected failure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "AddonError",
    "AddonNotFoundError",
    "GenerationCancelled",
    "InvalidOptionError",
    "ModelLoadError",
    "ModelNotFoundError",
    "OutputError",
    "RecipeParseError",
    "ReplayError",
    "SdkitError",
    "UnsafeCheckpointError",
]


class SdkitError(Exception):
    """Base class of every error sdkit raises on purpose.

    Attributes:
        hint: one sentence on how to fix the problem, or ``None``.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\nHint: {hint}")


class InvalidOptionError(SdkitError, ValueError):
    """A generation option has a value sdkit cannot use.

    Raised by validation, before any model work starts.

    Attributes:
        option: the option's name as the caller wrote it (``"width"``, ``"sampler"``).
        value: the value that was refused.
        allowed: a short description of what is allowed, or the allowed values.
    """

    def __init__(
        self,
        option: str,
        value: Any,
        allowed: str | Sequence[str],
        *,
        hint: str | None = None,
    ) -> None:
        self.option = option
        self.value = value
        self.allowed = allowed
        if isinstance(allowed, str):
            allowed_text = allowed
        else:
            shown = ", ".join(repr(a) for a in list(allowed)[:40])
            more = len(allowed) - 40
            allowed_text = "one of " + shown + (f", … ({more} more)" if more > 0 else "")
        super().__init__(f"invalid {option}={value!r}: expected {allowed_text}", hint=hint)


class ModelLoadError(SdkitError):
    """Weights could not be loaded.

    Attributes:
        source: the hub id or path the caller asked for.
    """

    def __init__(self, message: str, *, source: str | Path, hint: str | None = None) -> None:
        self.source = str(source)
        super().__init__(message, hint=hint)


class ModelNotFoundError(ModelLoadError):
    """No such model: a path that does not exist, a hub id that is not in the local cache while
    offline, or one the hub says does not exist."""


class UnsafeCheckpointError(ModelLoadError):
    """A pickle checkpoint (``.ckpt``, ``.pt``, ``.pth``, ``.bin``, ``.pkl``, ``.pickle``) was refused: loading it can run code."""


class AddonError(ModelLoadError):
    """An add-on cannot be used: not that kind of file, made for another model family, or not
    the file a Recipe names. Raised before any denoising.

    Attributes:
        kind: ``"lora"``, ``"embedding"``, ``"vae"``, ``"controlnet"``… (see
            :data:`sdkit.addons.ADDON_KINDS`).
        source: the name or path the caller gave.
    """

    def __init__(
        self, message: str, *, kind: str, source: str | Path, hint: str | None = None
    ) -> None:
        self.kind = kind
        super().__init__(message, source=source, hint=hint)


class AddonNotFoundError(AddonError):
    """An add-on named (``<lora:name>``, ``loras={...}``, a Recipe) is in none of its folders.

    Attributes:
        close: names that exist and are spelt nearly the same (``difflib``), best first.
        folders: the folders that were searched.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        source: str | Path,
        close: Sequence[str] = (),
        folders: Sequence[str | os.PathLike[str]] = (),
        hint: str | None = None,
    ) -> None:
        self.close = tuple(close)
        self.folders = tuple(os.fspath(f) for f in folders)
        super().__init__(message, kind=kind, source=source, hint=hint)


class GenerationCancelled(SdkitError):
    """A step callback returned ``False`` (or raised this) to stop generation.

    Attributes:
        step: the step after which generation stopped.
    """

    def __init__(self, step: int) -> None:
        self.step = step
        super().__init__(f"generation cancelled by the step callback after step {step}")


class OutputError(SdkitError, OSError):
    """An image could not be written.

    Attributes:
        path: the destination.
    """

    def __init__(
        self, message: str, *, path: str | os.PathLike[str], hint: str | None = None
    ) -> None:
        self.path = os.fspath(path)
        SdkitError.__init__(self, message, hint=hint)


class ReplayError(SdkitError):
    """An image cannot be re-rendered from its Recipe.

    Attributes:
        path: the image.
    """

    def __init__(self, message: str, *, path: str, hint: str | None = None) -> None:
        self.path = path
        super().__init__(message, hint=hint)


class RecipeParseError(ReplayError, ValueError):
    """Infotext or JSON that does not describe a Recipe.

    Raised by :meth:`sdkit.Recipe.from_json`, :meth:`~sdkit.Recipe.from_dict` and
    :meth:`~sdkit.Recipe.from_infotext` (the text is ``"<text>"``), and by
    :meth:`sdkit.Generator.replay` for the Recipe a file carries (``path`` is the file). Also a
    ``ValueError``, as before it joined this tree.

    Attributes:
        field: the Recipe field (or infotext key) at fault; ``None`` when the text as a whole is
            (not JSON, too long, too deep).
        path: the image the Recipe came from, or ``"<text>"``.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        path: str = "<text>",
        hint: str | None = None,
    ) -> None:
        self.field = field
        super().__init__(message, path=path, hint=hint)
