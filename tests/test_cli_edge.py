"""The edge of `sdkit generate` (issue 18): Ctrl-C, a bad -o, and file modes under the umask."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

import sdkit.generator
import sdkit.local_models
import sdkit.models
from sdkit.cli import cli
from sdkit.images import GeneratedImage, write_atomic

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def never_load(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace the Generator: a test that uses this fails if a model load is even tried."""
    calls: list[Any] = []

    def generator(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(sdkit.generator, "Generator", generator)
    return calls


@pytest.fixture
def umask() -> Iterator[Any]:
    """Set the process umask for one test, and put the old one back."""
    old = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


# -- -o is checked before the model loads --------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "code", "needles"),
    [
        ("missing/a.png", 4, ["folder", "missing", "does not exist", "mkdir"]),
        ("a.gif", 2, ["a.gif", ".png", ".jpg", ".webp"]),
        ("a", 2, [".png"]),
        ("folder.png", 4, ["is a folder", "file name"]),
        ("/proc/sdkit-edge.png", 4, ["cannot write in /proc"]),
    ],
    ids=["missing-folder", "gif", "no-suffix", "a-folder", "unwritable"],
)
def test_a_bad_output_fails_before_the_model_loads(
    never_load: list[Any], tmp_path: Path, output: str, code: int, needles: list[str]
) -> None:
    target = output if output.startswith("/") else str(tmp_path / output)
    if output == "folder.png":
        (tmp_path / output).mkdir()
    before = sorted(tmp_path.iterdir())
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["generate", "x", "-o", target, "-q"])
    assert result.exit_code == code, result.output
    assert never_load == [] and time.monotonic() - started < 2
    assert all(n in result.output for n in needles), result.output
    assert "error:" in result.output and "hint:" in result.output
    assert "Traceback" not in result.output
    assert sorted(tmp_path.iterdir()) == before  # nothing written, no probe file left behind


def test_each_numbered_output_is_checked_before_the_model_loads(
    never_load: list[Any], tmp_path: Path
) -> None:
    (tmp_path / "a-2.png").write_bytes(b"keep me")
    result = CliRunner().invoke(cli, ["generate", "x", "-n", "3", "-o", str(tmp_path / "a.png")])
    assert result.exit_code == 4 and "a-2.png exists" in result.output
    assert never_load == [] and (tmp_path / "a-2.png").read_bytes() == b"keep me"


# -- Ctrl-C ------------------------------------------------------------------------------------


def _sigint_default() -> None:
    # in the child, before exec: SIGINT handled by default even when this suite was started
    # in the background with `&` (SIGINT ignored, inherited; Python then never raises
    # KeyboardInterrupt and the run ends with 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _read_into(stream: Any, buffer: bytearray) -> None:
    for chunk in iter(lambda: stream.read1(4096), b""):
        buffer.extend(chunk)


def test_sigint_while_generating_exits_130_without_a_file(
    tiny_sd_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-c", "from sdkit.cli import main; main()", "generate", "x"]
    command += [
        "-m",
        str(tiny_sd_path),
        "--steps",
        "300",
        "--sampler",
        "Euler",
        "-o",
        str(out / "a.png"),
    ]
    stderr = bytearray()
    with subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_sigint_default,
    ) as proc:
        reader = threading.Thread(target=_read_into, args=(proc.stderr, stderr), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 120
            # the progress bar is up: the model is loaded and the denoising loop has begun
            while not re.search(rb"\b\d+/300\b", bytes(stderr)):
                assert proc.poll() is None, bytes(stderr).decode(errors="replace")
                assert time.monotonic() < deadline, "no progress line"
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(timeout=10)
    text = bytes(stderr).decode(errors="replace")
    assert code == 130, text
    assert "interrupted: no file written" in text
    assert "Traceback" not in text and "Aborted!" not in text
    assert list(out.iterdir()) == []  # no image, no temporary file


def test_ctrl_c_while_loading_exits_130(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sdkit.generator, "Generator", interrupted)
    result = CliRunner().invoke(cli, ["generate", "x", "-o", str(tmp_path / "a.png")])
    assert result.exit_code == 130
    assert "interrupted: no file written" in result.output and "Aborted!" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_between_files_keeps_the_finished_ones_whole(
    monkeypatch: pytest.MonkeyPatch, tiny_sd_path: Path, tmp_path: Path
) -> None:
    encode = GeneratedImage.to_bytes
    calls: list[int] = []

    def to_bytes(self: GeneratedImage, *args: Any, **kwargs: Any) -> bytes:
        calls.append(self.index)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(GeneratedImage, "to_bytes", to_bytes)
    args = ["generate", "x", "-n", "2", "--steps", "1", "-m", str(tiny_sd_path)]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a.png"), "-q"])
    assert result.exit_code == 130, result.output
    assert f"interrupted: kept {tmp_path / 'a-1.png'}" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-1.png"]
    with Image.open(tmp_path / "a-1.png") as im:
        im.load()  # complete, not cut


def test_ctrl_c_in_any_command_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sdkit.local_models, "list_local_models", interrupted)
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 130 and "interrupted" in result.output
    assert "Aborted!" not in result.output


# -- file modes follow the umask -----------------------------------------------------------------


@pytest.mark.parametrize(("mask", "mode"), [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)])
def test_written_files_get_0666_less_the_umask(
    umask: Any, tmp_path: Path, mask: int, mode: int
) -> None:
    umask(mask)
    path = write_atomic(tmp_path / "a.png", b"data")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    path = write_atomic(tmp_path / "a.png", b"again", overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == mode and path.read_bytes() == b"again"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_generate_under_umask_077_writes_a_private_file(
    umask: Any, tiny_sd_path: Path, tmp_path: Path
) -> None:
    umask(0o077)
    out = tmp_path / "a.png"
    args = ["generate", "x", "--steps", "1", "-m", str(tiny_sd_path), "-o", str(out), "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


@pytest.mark.parametrize(("mask", "mode"), [(0o077, 0o600), (0o022, 0o644)])
def test_provenance_writers_follow_the_umask_too(
    umask: Any, tmp_path: Path, mask: int, mode: int
) -> None:
    from provenance.detector.probe import _write_atomic
    from provenance.optout.dataset import _write_output

    umask(mask)
    probe = tmp_path / "probe.safetensors"
    _write_atomic(probe, b"weights")
    source = tmp_path / "in.csv"
    source.write_text("url\nhttps://example.com/a.png\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    _write_output(source, "csv", output, "jsonl", {0: {"allowed": True}})
    assert stat.S_IMODE(probe.stat().st_mode) == mode and probe.read_bytes() == b"weights"
    assert stat.S_IMODE(output.stat().st_mode) == mode
    assert '"allowed": true' in output.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.csv",
        "out.jsonl",
        "probe.safetensors",
    ]
