"""Files on disk as the checker reads them: regular files only, bounded, under a root.

Three rules, for paths that a caller or a dataset row names:

* :func:`read_regular_file` reads **regular files only**, at most ``limit`` bytes. A FIFO, a
  socket, a device (``/dev/zero``, ``/dev/tty``) or a folder is refused from ``stat`` before it
  is opened, so nothing waits on a FIFO or reads a device without end; the file is then opened
  non-blocking and checked again with ``fstat`` (it may have been swapped in between).
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
import os
import stat
from pathlib import Path

from PIL import Image, UnidentifiedImageError

__all__ = ["image_problem", "read_regular_file", "resolve_under"]

#: ``stat`` file type -> the words used in a refusal.
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_CHUNK = 1 << 20


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((words for test, words in _KINDS if test(mode)), "a special file")
    return f"not a regular file ({kind})"


def read_regular_file(path: Path, limit: int) -> bytes | str:
    """The bytes of a regular file of at most ``limit`` bytes, or why it was not read.

    Args:
        path: the file (symlinks are followed; resolve first where that matters).
        limit: the most bytes read; a larger file is refused without reading it.

    Returns:
        The file's bytes, or a one-line reason (``str``) it was not read.
    """
    try:
        refused = _not_regular(os.stat(path).st_mode)
        if refused:
            return refused
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        return f"cannot read the file: {exc.strerror or exc}"
    try:
        info = os.fstat(fd)
        refused = _not_regular(info.st_mode)
        if refused:
            return refused
        if info.st_size > limit:
            return f"the file is larger than max_body ({info.st_size} > {limit} bytes)"
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # the file may grow while it is read: one byte more tells
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            return f"the file is larger than max_body (over {limit} bytes)"
        return b"".join(chunks)
    except OSError as exc:
        return f"cannot read the file: {exc.strerror or exc}"
    finally:
        os.close(fd)


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
