"""Files on disk as the checker reads them: regular files only, bounded, under a root.

Three rules, for paths that a caller or a dataset row names:

* :func:`read_regular_file` reads **regular files only**, at most ``limit`` bytes, through
  :func:`provenance._fs.read_regular` (a FIFO, a device or a folder is never opened), and
  says in the checker's words why a file was not read.
* :func:`resolve_under` places a dataset's path under a root folder. ``..``, an absolute path
  or a symlink that leads outside the root is refused: a dataset row is outside data and must
  not make sdkit read whatever the row names.
* :func:`image_problem` says why bytes are not an image (empty, or not identified by Pillow):
  a file that cannot be read as an image is not a work anyone can train on, so it is never
  ``allowed`` by default.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> resolve_under(root, "../etc/passwd")
    'the path leads outside the files root'
    >>> read_regular_file(pathlib.Path("/dev/zero"), 1024)
    'not a regular file (a character device)'
    >>> image_problem(b"")
    'cannot read this file as an image: it is empty (0 bytes)'
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .._fs import NotRead, read_regular

__all__ = ["image_problem", "read_regular_file", "resolve_under"]

#: How the checker words a file it did not read (its evidence; ``max_body`` is its option).
_WORDS = {
    "folder": "not a regular file ({})",
    "special": "not a regular file ({})",
    "too_big": "the file is larger than max_body ({})",
    "error": "cannot read the file: {}",
}


def read_regular_file(path: Path, limit: int) -> bytes | str:
    """The bytes of a regular file of at most ``limit`` bytes, or why it was not read.

    Args:
        path: the file (symlinks are followed; resolve first where that matters).
        limit: the most bytes read; a larger file is refused without reading it.

    Returns:
        The file's bytes, or a one-line reason (``str``) it was not read.
    """
    try:
        return read_regular(path, limit)
    except NotRead as exc:
        return _WORDS[exc.kind].format(exc.detail)


def resolve_under(root: Path, value: str) -> Path | str:
    """``value`` (a path from a dataset row) resolved under ``root``, or why it is refused.

    Relative paths are taken from ``root``; an absolute path only counts if it lies inside it.
    Symlinks are resolved before the test, so a link that points outside is refused too.

    Returns:
        The resolved path, or a one-line reason (``str``).
    """
    if "\x00" in value:
        return "the path holds a NUL character"
    base = root.resolve()
    try:
        where = (base / value).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return f"the path cannot be resolved: {exc}"
    if where != base and base not in where.parents:
        return "the path leads outside the files root"
    return where


def image_problem(data: bytes) -> str | None:
    """Why ``data`` cannot be read as an image (empty, or not identified by Pillow), or None.

    Only the header is read (no pixels are decoded), so this is cheap on any file.
    """
    if not data:
        return "cannot read this file as an image: it is empty (0 bytes)"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as exc:
        return f"cannot read this file as an image: {exc}"
    except UnidentifiedImageError:
        return f"cannot read this file as an image ({len(data)} bytes): not a format Pillow knows"
    except Exception as exc:  # Pillow's plugins raise many kinds on hostile headers
        text = str(exc).split("\n", 1)[0][:200] or type(exc).__name__
        return f"cannot read this file as an image ({len(data)} bytes): {text}"
    if width <= 0 or height <= 0:
        return f"cannot read this file as an image: it has no pixels ({width}x{height})"
    return None
