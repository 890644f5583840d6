"""The file system, in one place: bounded reads, atomic writes, sdkit's config and cache folders.

Reading. :func:`read_regular` is the one place provenance reads a file whose path came from outside
(``verify``, ``sdkit optout check``, a dataset's path column, the opt-out registry). A FIFO, a
socket, a device (``/dev/zero``, ``/dev/tty``) or a folder is refused from ``stat`` before it is
opened, so nothing waits on a FIFO or reads a device without end; the file is then opened
non-blocking and checked again with ``fstat`` (it may have been swapped in between), and at
most ``limit`` bytes are read. Callers word the refusal (:class:`NotRead`) for their users.

Writing. :func:`write_atomic` (bytes) and :func:`atomic_path` (a file written by name, e.g. by a
CSV or Parquet writer) are the one way sdkit and provenance write a file, with one guarantee: a
new temporary file in the destination folder (mode 0666 less the umask, as ``open`` makes it;
``mkstemp``'s 0600 would outlive the rename), written, flushed and fsynced, then published with
``os.link`` (fails when the name exists, so nothing is overwritten unasked, even by a racing
writer) or, when ``overwrite=True``, ``os.replace``; then the folder is fsynced where the system
allows it. Readers see the old file or the whole new one, never a part, and the temporary file is
removed on every failure. Errors are ``OSError`` (``FileExistsError`` when the name is taken):
each caller words them in its own typed error (``OutputError``, ``SigningError``, ...), which
this module, shared by both packages, cannot import. :func:`atomic_folder` publishes a whole
folder the same way (temporary folder + rename).

Folders. :func:`config_dir` (credentials, trust anchors) and :func:`cache_dir` (model configs,
hashes) read the environment each call.

Example:
    >>> import pathlib
    >>> try:
    ...     read_regular(pathlib.Path("/dev/zero"), 1024)
    ... except NotRead as exc:
    ...     print(exc.kind, exc.detail)
    special a character device
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

__all__ = [
    "NotRead",
    "atomic_folder",
    "atomic_path",
    "cache_dir",
    "config_dir",
    "read_regular",
    "write_atomic",
]

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


# -- writing ------------------------------------------------------------------------------------

_CREATE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)
)


def _create_temp(folder: Path, name: str, mode: int) -> Path:
    """A new empty file ``.<name>.<random>.tmp`` in ``folder``, created with ``mode`` (less the
    umask) as ``open(path, "x")`` would."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, _CREATE_FLAGS, mode))
        except FileExistsError:
            continue
        return tmp
    raise OSError(f"no free temporary name in {folder}")  # not a FileExistsError: no clash


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a new name in ``folder`` durable; skipped where the system cannot (Windows opens no
    folder, some file systems refuse fsync on one)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if the name is taken, even by a writer racing this one
    except FileExistsError:
        raise
    except OSError:
        # file systems without hard links (some network and FAT ones): a checked rename
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)


@contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, overwrite: bool = False, mode: int = 0o666
) -> Iterator[Path]:
    """A new temporary file beside ``path`` to write by name; published as ``path`` on success.

    The temporary file exists (empty, ``mode`` less the umask) when the block starts; when the
    block ends without an exception it is fsynced and linked (or, with ``overwrite``, renamed)
    to ``path``. It is removed whatever happens.

    Args:
        path: the file to write; its folder must exist.
        overwrite: replace an existing file (``os.replace``); otherwise an existing name raises
            ``FileExistsError`` and is left alone.
        mode: permission bits before the umask (0o600 for a private key).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OSError: the folder cannot be written (or whatever the block raised).

    Example:
        >>> import pathlib, tempfile
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
        ('done', ['out.txt'])
    """
    path = Path(path)
    tmp = _create_temp(path.parent, path.name, mode)
    try:
        yield tmp
        _fsync_file(tmp)
        _publish(tmp, path, overwrite)
        _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False, mode: int = 0o666
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); return ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OSError: the file cannot be written; nothing is left behind.
    """
    with atomic_path(path, overwrite=overwrite, mode=mode) as tmp:
        fd = os.open(tmp, os.O_WRONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
    return Path(path)


@contextmanager
def atomic_folder(final: str | os.PathLike[str]) -> Iterator[Path]:
    """A new empty folder beside ``final`` (mode 0700) to fill; renamed to ``final`` on success.

    Concurrent processes never see a half-filled folder. The rename fails (``OSError``) when
    ``final`` exists and is not empty; the temporary folder is removed whatever happens.
    """
    final = Path(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield tmp
        os.rename(tmp, final)
        _fsync_folder(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- sdkit's folders ----------------------------------------------------------------------------


def config_dir() -> Path:
    """``$SDKIT_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/sdkit``, else ``~/.config/sdkit`` (an empty
    variable counts as unset)."""
    env = os.environ.get("SDKIT_CONFIG_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "sdkit"


def cache_dir(*, xdg: bool = True) -> Path:
    """``$SDKIT_CACHE``, else ``$XDG_CACHE_HOME/sdkit``, else ``~/.cache/sdkit`` (an empty
    variable counts as unset).

    Args:
        xdg: False skips ``$XDG_CACHE_HOME``: where the weights' hash cache has always been
            looked up (``sdkit.models``), kept so that an upgrade finds its cache.
    """
    env = os.environ.get("SDKIT_CACHE")
    if env:
        return Path(env)
    xdg_home = os.environ.get("XDG_CACHE_HOME") if xdg else None
    return (Path(xdg_home) if xdg_home else Path.home() / ".cache") / "sdkit"
