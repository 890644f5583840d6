"""provenance._fs: the one atomic writer, the folder publish, and sdkit's config / cache folders."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provenance import _fs


@pytest.fixture
def umask() -> Iterator[object]:
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def test_writes_a_new_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = _fs.write_atomic(tmp_path / "a.bin", b"data")
    assert path.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        _fs.write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
    _fs.write_atomic(target, b"new", overwrite=True)
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_refuses_a_dangling_symlink_too(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        _fs.write_atomic(tmp_path / "link", b"x")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(
    ("broken", "overwrite"),
    [(("fsync",), False), (("fsync",), True), (("link", "replace"), False), (("replace",), True)],
)
def test_a_failure_half_way_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: tuple[str, ...], overwrite: bool
) -> None:
    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    for name in broken:  # a broken link() falls back to a checked replace(): break both
        monkeypatch.setattr(os, name, fail)
    with pytest.raises(OSError, match="No space"):
        _fs.write_atomic(tmp_path / "a.bin", b"data", overwrite=overwrite)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_inside_the_block_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError), _fs.atomic_path(tmp_path / "out.csv") as temp:
        temp.write_text("half a row")
        raise ValueError("the writer stopped")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_fsyncs_what_was_written_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    with _fs.atomic_path(tmp_path / "out.csv") as temp:
        temp.write_text("a,b\n")
    assert (tmp_path / "out.csv").read_text() == "a,b\n"
    assert len(synced) >= 1  # the file (and the folder where the system allows)


@pytest.mark.parametrize(("mask", "mode"), [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)])
def test_the_file_mode_is_0666_less_the_umask(
    umask: object, tmp_path: Path, mask: int, mode: int
) -> None:
    os.umask(mask)
    path = _fs.write_atomic(tmp_path / "a.bin", b"data")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    path = _fs.write_atomic(path, b"again", overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_private_mode_holds_from_the_start(umask: object, tmp_path: Path) -> None:
    path = _fs.write_atomic(tmp_path / "key.pem", b"PRIVATE KEY", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_second_writer_of_the_same_new_path_gets_an_error_not_a_clobber(
    tmp_path: Path,
) -> None:
    target = tmp_path / "a.bin"
    inside = threading.Event()
    done = threading.Event()
    results: list[object] = []

    def first() -> None:
        try:
            with _fs.atomic_path(target) as temp:
                temp.write_bytes(b"first")
                inside.set()
                done.wait(5)  # the second writer publishes while this one is writing
        except OSError as exc:
            results.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(5)
    _fs.write_atomic(target, b"second")
    done.set()
    thread.join(5)
    assert target.read_bytes() == b"second"
    assert len(results) == 1 and isinstance(results[0], FileExistsError)
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_without_hard_links_the_rename_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    _fs.write_atomic(tmp_path / "a.bin", b"data")
    assert (tmp_path / "a.bin").read_bytes() == b"data"
    with pytest.raises(FileExistsError):
        _fs.write_atomic(tmp_path / "a.bin", b"other")
    assert (tmp_path / "a.bin").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_missing_folder_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _fs.write_atomic(tmp_path / "missing" / "a.bin", b"data")


def test_atomic_folder_publishes_whole_or_not_at_all(tmp_path: Path) -> None:
    final = tmp_path / "configs"
    with _fs.atomic_folder(final) as staging:
        (staging / "a.json").write_text("{}")
        assert not final.exists()
    assert [p.name for p in final.iterdir()] == ["a.json"]
    with pytest.raises(RuntimeError), _fs.atomic_folder(tmp_path / "other") as staging:
        (staging / "half.json").write_text("{")
        raise RuntimeError("stopped")
    with pytest.raises(OSError), _fs.atomic_folder(final) as staging:  # taken: not replaced
        (staging / "b.json").write_text("{}")
    assert [p.name for p in final.iterdir()] == ["a.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["configs"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SDKIT_CONFIG_DIR": "/c", "XDG_CONFIG_HOME": "/x"}, "/c"),
        ({"SDKIT_CONFIG_DIR": "", "XDG_CONFIG_HOME": "/x"}, "/x/sdkit"),
        ({"XDG_CONFIG_HOME": "/x"}, "/x/sdkit"),
        ({"XDG_CONFIG_HOME": ""}, "/home/u/.config/sdkit"),
        ({}, "/home/u/.config/sdkit"),
    ],
)
def test_config_dir_precedence(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name in ("SDKIT_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/u")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _fs.config_dir() == Path(expected)


@pytest.mark.parametrize(
    ("env", "expected", "without_xdg"),
    [
        ({"SDKIT_CACHE": "/c", "XDG_CACHE_HOME": "/x"}, "/c", "/c"),
        ({"SDKIT_CACHE": "", "XDG_CACHE_HOME": "/x"}, "/x/sdkit", "/home/u/.cache/sdkit"),
        ({"XDG_CACHE_HOME": "/x"}, "/x/sdkit", "/home/u/.cache/sdkit"),
        ({}, "/home/u/.cache/sdkit", "/home/u/.cache/sdkit"),
    ],
)
def test_cache_dir_precedence(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str, without_xdg: str
) -> None:
    for name in ("SDKIT_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/u")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _fs.cache_dir() == Path(expected)
    assert _fs.cache_dir(xdg=False) == Path(without_xdg)


def test_the_callers_use_the_one_lookup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from provenance.dev_credentials import default_credentials_dir
    from sdkit import _single_file, weights_hash

    monkeypatch.setenv("SDKIT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SDKIT_CACHE", str(tmp_path / "cache"))
    assert default_credentials_dir() == tmp_path / "config" / "credentials"
    assert weights_hash._cache_root() == tmp_path / "cache"
    assert _single_file._cache_roots()[0] == tmp_path / "cache" / "configs"
