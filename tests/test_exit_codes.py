"""One exit-code table for every command: each code driven through a real command.

Each test asserts the code and that no traceback reaches the user; the last ones check that the
table in the code (``ExitCode``, ``MEANINGS``) and the one in docs/cli.md list the same codes.
"""

from __future__ import annotations

import functools
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from PIL import Image

import provenance.cli.verify
import sdkit.generator
from provenance.cli import MEANINGS, CliError, ExitCode, cli_error
from provenance.credentials import init_development_credentials
from provenance.errors import ProvenanceError, StoreError, WatermarkError
from sdkit.cli import EXIT_CODES, cli
from sdkit.errors import SdkitError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "c2pa-interop"


def run(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def plain_png(path: Path, size: int = 64) -> Path:
    Image.new("RGB", (size, size), (200, 40, 40)).save(path)
    return path


def test_0_ok_generate(tiny_sd_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    result = run("generate", "x", "-m", str(tiny_sd_path), "--steps", "1", "-o", str(out), "-q")
    assert result.exit_code == ExitCode.OK == 0, result.output
    assert out.is_file()


def test_1_no_verify_not_verified() -> None:
    result = run("verify", str(FIXTURES / "XCA.jpg"))
    assert result.exit_code == ExitCode.NO == 1, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "--no-such-option", "x.png"],
        ["generate", "x", "--steps", "0", "-o", "a.png"],  # InvalidOptionError
        ["generate", "x", "-o", "a.gif"],  # an output format sdkit does not write
        ["detect", "score", "x.png"],  # neither --probe nor --univfd
        ["keys"],  # missing command
    ],
)
def test_2_usage(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    plain_png(tmp_path / "x.png")
    result = run(*args)
    assert result.exit_code == ExitCode.USAGE == 2, result.output


def test_3_no_answer_verify_an_unsigned_png(tmp_path: Path) -> None:
    result = run("verify", str(plain_png(tmp_path / "plain.png")))
    assert result.exit_code == ExitCode.NO_ANSWER == 3, result.output


def test_4_file_missing_input_or_existing_output(tmp_path: Path) -> None:
    probe = tmp_path / "probe.safetensors"
    probe.write_bytes(b"not read: the image is missing")
    missing = run("detect", str(tmp_path / "missing.png"), "--probe", str(probe))
    assert missing.exit_code == ExitCode.FILE == 4, missing.output
    assert "missing.png" in missing.output and "error:" in missing.output
    existing = tmp_path / "a.png"
    existing.write_bytes(b"keep me")
    again = run("generate", "x", "-o", str(existing), "-q")
    assert again.exit_code == ExitCode.FILE and "exists" in again.output
    assert existing.read_bytes() == b"keep me"
    train = ["detect", "train", "--real", str(tmp_path), "--fake", str(tmp_path / "nope")]
    assert run(*train, "-o", str(tmp_path / "p")).exit_code == ExitCode.FILE
    assert run("verify", str(tmp_path / "missing.png")).exit_code == ExitCode.FILE
    assert run("keys", "init", str(tmp_path / "keys")).exit_code == ExitCode.OK
    assert run("keys", "init", str(tmp_path / "keys")).exit_code == ExitCode.FILE  # no --force


def test_5_credentials_unreadable_key(tmp_path: Path) -> None:
    files = init_development_credentials(tmp_path / "keys")
    files.private_key.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n")
    shown = run("keys", "show", str(tmp_path / "keys"))
    assert shown.exit_code == ExitCode.CREDENTIALS == 5, shown.output
    out = tmp_path / "never.png"
    args = ["generate", "x", "-o", str(out), "-q", "--signing-cert", str(files.certificate_chain)]
    generated = run(*args, "--signing-key", str(files.private_key))
    assert generated.exit_code == ExitCode.CREDENTIALS, generated.output
    assert "error:" in generated.output and not out.exists()
    missing_key = run(*args, "--signing-key", str(tmp_path / "absent.key"))
    assert missing_key.exit_code == ExitCode.CREDENTIALS, missing_key.output
    image = str(plain_png(tmp_path / "plain.png"))
    garbage = tmp_path / "anchors.pem"
    garbage.write_text("no certificate here")
    for option, path in (("--trust-anchors", garbage), ("--store", tmp_path / "absent.db")):
        result = run("verify", image, option, str(path))
        assert result.exit_code == ExitCode.CREDENTIALS, result.output


def test_6_model_missing_or_garbage(tmp_path: Path) -> None:
    out = str(tmp_path / "a.png")
    missing = run("generate", "x", "-m", str(tmp_path / "no-such-model"), "-o", out, "-q")
    assert missing.exit_code == ExitCode.MODEL == 6, missing.output
    probe = tmp_path / "probe.safetensors"
    probe.write_bytes(b"\x00garbage, not a probe" * 10)
    image = str(plain_png(tmp_path / "x.png", 256))
    bad = run("detect", image, "--probe", str(probe))
    assert bad.exit_code == ExitCode.MODEL, bad.output
    assert run("verify", image, "--probe", str(probe)).exit_code == ExitCode.MODEL
    assert run("verify", image, "--detector", str(probe)).exit_code == ExitCode.MODEL
    absent = run("detect", image, "--probe", str(tmp_path / "absent.safetensors"))
    assert absent.exit_code == ExitCode.MODEL, absent.output


def test_7_similar_a_stripped_copy_recovered_from_the_store(
    tiny_sd_path: Path, tmp_path: Path
) -> None:
    out, db = tmp_path / "a.png", tmp_path / "store.db"
    args = ["generate", "a red circle", "-m", str(tiny_sd_path), "-o", str(out), "--size"]
    assert run(*args, "256x256", "--steps", "2", "-q", "--store", str(db)).exit_code == 0
    copy = tmp_path / "copy.jpg"
    Image.open(out).save(copy, quality=85)  # metadata stripped
    result = run("verify", str(copy), "--store", str(db))
    assert result.exit_code == ExitCode.SIMILAR == 7, result.output


@pytest.mark.parametrize(
    "exc",
    [SdkitError("something else went wrong"), WatermarkError("the watermark went wrong")],
)
def test_8_error_any_other_library_error(
    exc: Exception, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        raise exc

    monkeypatch.setattr(sdkit.generator, "Generator", failing)
    result = run("generate", "x", "-o", str(tmp_path / "a.png"), "-q")
    assert result.exit_code == ExitCode.ERROR == 8, result.output
    assert "error: " in result.output and "went wrong" in result.output


def test_130_interrupted_in_every_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(provenance.cli.verify, "verify", interrupted)
    monkeypatch.setattr(provenance.cli.keys, "init_development_credentials", interrupted)
    image = str(plain_png(tmp_path / "x.png"))
    for args in (["verify", image], ["keys", "init", str(tmp_path / "k")]):
        result = run(*args)
        assert result.exit_code == ExitCode.INTERRUPTED == 130, result.output
        assert "interrupted" in result.output and "Aborted!" not in result.output
    alone = CliRunner().invoke(provenance.cli.verify_command, [image])  # provenance alone
    assert alone.exit_code == 130 and "Aborted!" not in alone.output


def test_130_sigint_in_a_subprocess(tiny_sd_path: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-c", "from sdkit.cli import main; main()", "generate", "x"]
    command += ["-m", str(tiny_sd_path), "--steps", "300", "-o", str(tmp_path / "a.png")]
    stderr = bytearray()

    def read(stream: Any) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            stderr.extend(chunk)

    # the child must not inherit an ignored SIGINT (a suite started in the background with
    # `&` runs with SIGINT ignored, and Python then never raises KeyboardInterrupt)
    default = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    with subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, preexec_fn=default) as proc:
        reader = threading.Thread(target=read, args=(proc.stderr,), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 120
            while not re.search(rb"\b\d+/300\b", bytes(stderr)):  # the denoising loop runs
                assert proc.poll() is None and time.monotonic() < deadline, bytes(stderr)
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(timeout=10)
    text = bytes(stderr).decode(errors="replace")
    assert code == ExitCode.INTERRUPTED, text
    assert "Traceback" not in text and "Aborted!" not in text


def test_backbone_is_the_clip_option_and_model_a_deprecated_alias(tmp_path: Path) -> None:
    train = run("detect", "train", "--help").output
    assert "--backbone" in train and "--model" not in train
    assert "--backbone" in run("detect", "calibrate", "--help").output
    existing = tmp_path / "probe.safetensors"
    existing.write_bytes(b"keep me")
    args = ["detect", "train", "--real", str(tmp_path), "--fake", str(tmp_path)]
    result = run(*args, "-o", str(existing), "--model", "ViT-B-32")
    assert result.exit_code == ExitCode.FILE, result.output  # parsed, then -o exists
    assert "warning: --model is deprecated here; use --backbone" in result.output


def test_error_classes_map_to_the_table() -> None:
    assert cli_error(StoreError("s")).exit_code == ExitCode.CREDENTIALS
    assert cli_error(ProvenanceError("p")).exit_code == ExitCode.ERROR
    assert cli_error(ProvenanceError("p"), ExitCode.FILE).exit_code == ExitCode.FILE
    assert all(isinstance(code, ExitCode) for _, code in EXIT_CODES)
    error = CliError("m", exit_code=ExitCode.MODEL, hint="h")
    assert (error.exit_code, error.hint, error.format_message()) == (6, "h", "m")


def _docs_table() -> dict[int, str]:
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (.+) \|$", text, flags=re.M)
    assert rows, "docs/cli.md has no exit-code table"
    return {int(code): name for code, name, _ in rows}


def test_the_docs_table_is_the_code_table() -> None:
    assert _docs_table() == {int(code): code.name for code in ExitCode}
    assert set(MEANINGS) == set(ExitCode)


def test_sdkit_help_shows_the_table() -> None:
    text = run("--help").output
    for code in ExitCode:
        assert re.search(rf"\b{int(code)}\s+{code.name}\s", text), code
