"""Files that anyone may name: regular files only, read to a bound.

:func:`read_regular` is the one place provenance reads a file whose path came from outside
(``verify``, ``sdkit optout check``, a dataset's path column, the opt-out registry). A FIFO, a
socket, a device (``/dev/zero``, ``/dev/tty``) or a folder is refused from ``stat`` before it is
opened, so nothing waits on a FIFO or reads a device without end; the file is then opened
non-blocking and checked again with ``fstat`` (it may have been swapped in between), and at
most ``limit`` bytes are read. Callers word the refusal (:class:`NotRead`) for their users.

Example:
    >>> import pathlib
    >>> try:
    ...     read_regular(pathlib.Path("/dev/zero"), 1024)
    ... except NotRead as exc:
    ...     print(exc.kind, exc.detail)
    special a character device
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

__all__ = ["NotRead", "read_regular"]

#: ``stat`` file type -> the words that name it.
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
    | getattr(os, "O_BINARY", 0)
)
_CHUNK = 1 << 20


class NotRead(OSError):
    """Why a file was not read.

    Attributes:
        kind: ``folder``, ``special`` (FIFO, device, socket), ``too_big`` or ``error`` (the
            system refused: missing, no permission...).
        detail: what it is (``a FIFO``), its size (``5000 > 1024 bytes``) or the system's words.
    """

    def __init__(self, kind: Literal["folder", "special", "too_big", "error"], detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _check_regular(mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    words = next((words for test, words in _KINDS if test(mode)), "a special file")
    raise NotRead("folder" if stat.S_ISDIR(mode) else "special", words)


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (symlinks followed), at most ``limit`` of them.

    Raises:
        NotRead: a folder or special file, a file over ``limit`` bytes, or an OS error.
    """
    try:
        _check_regular(os.stat(path).st_mode)
        fd = os.open(path, _OPEN_FLAGS)
    except NotRead:
        raise
    except OSError as exc:
        raise NotRead("error", str(exc.strerror or exc)) from exc
    try:
        info = os.fstat(fd)
        _check_regular(info.st_mode)
        if info.st_size > limit:
            raise NotRead("too_big", f"{info.st_size} > {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # the file may grow while it is read: one byte more tells
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise NotRead("too_big", f"over {limit} bytes")
        return b"".join(chunks)
    except NotRead:
        raise
    except OSError as exc:
        raise NotRead("error", str(exc.strerror or exc)) from exc
    finally:
        os.close(fd)
