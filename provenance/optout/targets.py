"""What an opt-out check takes (a URL, a path, bytes or a PIL image), and a failed check's
reason: the shared vocabulary of :mod:`provenance.optout.checker` and
:mod:`provenance.optout.dataset`.
"""

from __future__ import annotations

import asyncio
import os

from PIL import Image

from ..errors import OptOutError

__all__ = ["Target", "failure_reason", "no_running_loop", "require_target", "target_name"]

#: What :class:`~provenance.optout.checker.OptOutChecker` checks: a URL or path (``str`` or
#: path-like), a file's bytes, or a PIL image.
Target = str | os.PathLike[str] | bytes | Image.Image
_REASON_CHARS = 200  # of an exception's message in a failed check's reason


def require_target(target: object) -> None:
    """Raise for a target of the wrong type (a programming error, not a decision)."""
    if not isinstance(target, (str, os.PathLike, bytes, Image.Image)):
        raise OptOutError(
            f"cannot check a {type(target).__name__}",
            hint="give a URL, a path, bytes or a PIL image.",
        )


def target_name(target: Target) -> str:
    """How a target is named in a decision (a path-like whose ``__fspath__`` fails too)."""
    if isinstance(target, Image.Image):
        return "<image>"
    if isinstance(target, bytes):
        return "<bytes>"
    try:
        return os.fspath(target)
    except Exception:  # a PathLike whose __fspath__ fails is still named
        return f"<{type(target).__name__}>"


def failure_reason(exc: BaseException) -> str:
    """A failed check's reason: the exception's type and the first line of its message.

    Example:
        >>> import zlib
        >>> failure_reason(zlib.error("Error -3 while decompressing data"))
        'the check failed: zlib.error: Error -3 while decompressing data'
    """
    kind = type(exc)
    module = kind.__module__.split(".", 1)[0]
    name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    text = str(exc).strip().split("\n", 1)[0]
    text = text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."
    return f"the check failed: {name}" + (f": {text}" if text else "")


def no_running_loop() -> None:
    """Raise if called inside a running event loop (the blocking calls cannot run there)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise OptOutError(
        "check() and check_many() block, so they cannot run inside an event loop",
        hint="use `await checker.acheck(target)` or `checker.acheck_many(targets)` there.",
    )
