"""provenance.verify and `sdkit verify` on third-party C2PA files and on bad input.

The third-party files are a copy of shared/fixtures/c2pa-interop (MIT, from
contentauth/c2pa-python, made by c2pa-rs), kept in the repo so that a fresh clone tests without
the workspace around it; their README lists what each holds.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from provenance.cli import ExitCode, verify_command
from provenance.errors import ManifestError
from provenance.verify import verify

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "c2pa-interop"


@pytest.mark.parametrize(
    ("name", "verdict", "state", "code"),
    [
        ("A.jpg", "no_provenance", "absent", None),
        ("C.jpg", "verified", "valid", "signingCredential.untrusted"),
        ("CA.jpg", "verified", "valid", None),
        ("boxhash.jpg", "verified", "valid", None),
        ("C_with_CAWG_data.jpg", "verified", "valid", "cawg.x509.credential.untrusted"),
        ("XCA.jpg", "not_verified", "invalid", "assertion.dataHash.mismatch"),
        ("E-sig-CA.jpg", "not_verified", "invalid", "claimSignature.mismatch"),
        ("CIE-sig-CA.jpg", "not_verified", "invalid", "claimSignature.mismatch"),
        ("cloud.jpg", "not_verified", "remote", "manifest.inaccessible"),
    ],
)
def test_third_party_files(name: str, verdict: str, state: str, code: str | None) -> None:
    report = verify(FIXTURES / name)
    assert (report.verdict, report.c2pa_state) == (verdict, state)
    assert report.trusted is False  # no trust anchors given
    if code:
        assert code in report.c2pa_codes
        assert report.explanations[report.c2pa_codes.index(code)] != "see the C2PA specification"
    assert report.watermark is None  # nobody else uses sdkit's watermark


def test_third_party_details() -> None:
    with_parent = verify(FIXTURES / "CA.jpg")
    # its parent, A.jpg, has no manifest of its own
    assert with_parent.ingredients == (
        {"title": "A.jpg", "relationship": "parentOf", "has_manifest": False},
    )
    remote = verify(FIXTURES / "cloud.jpg")
    assert remote.remote_url is not None and remote.remote_url.startswith("https://")
    assert "not fetched" in remote.to_text()


def test_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()

    def code(*args: str) -> int:
        return runner.invoke(verify_command, list(args)).exit_code

    assert code(str(FIXTURES / "C.jpg")) == ExitCode.OK == 0
    assert code(str(FIXTURES / "C.jpg"), "--require-trusted") == ExitCode.NO
    assert code(str(FIXTURES / "A.jpg")) == ExitCode.NO_ANSWER == 3
    assert code(str(FIXTURES / "XCA.jpg")) == ExitCode.NO == 1
    assert code(str(FIXTURES / "cloud.jpg")) == 1
    assert code(str(tmp_path / "missing.png")) == ExitCode.FILE == 4
    assert code("--no-such-option", "x") == ExitCode.USAGE == 2
    # the most serious outcome over all files decides
    assert code(str(FIXTURES / "C.jpg"), str(FIXTURES / "A.jpg")) == 3
    assert code(str(FIXTURES / "A.jpg"), str(FIXTURES / "XCA.jpg")) == 1


def test_folders_globs_and_json() -> None:
    result = CliRunner().invoke(verify_command, [str(FIXTURES), "--json", "--no-watermark"])
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert sorted(Path(r["path"]).name for r in lines) == sorted(
        p.name for p in FIXTURES.glob("*.jpg")
    )
    verdicts = {Path(r["path"]).name: r["verdict"] for r in lines}
    assert verdicts["C.jpg"] == "verified" and verdicts["XCA.jpg"] == "not_verified"
    globbed = CliRunner().invoke(verify_command, [str(FIXTURES / "C*.jpg"), "--json"])
    names = [Path(json.loads(line)["path"]).name for line in globbed.output.splitlines()]
    assert names == ["C.jpg", "CA.jpg", "CIE-sig-CA.jpg", "C_with_CAWG_data.jpg"]


def _png(width: int, height: int) -> bytes:
    """A PNG header claiming ``width`` x ``height`` (a decompression bomb needs no pixels)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    crc = struct.pack(">I", zlib.crc32(chunk))
    idat = zlib.compress(b"\x00" * 64)
    idat_chunk = b"IDAT" + idat
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + crc
        + struct.pack(">I", len(idat))
        + idat_chunk
        + struct.pack(">I", zlib.crc32(idat_chunk))
        + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "x.png"
    text.write_text("hello")
    with pytest.raises(ManifestError, match="not an image"):
        verify(text)
    with pytest.raises(ManifestError, match="cannot read"):
        verify(tmp_path / "missing.png")
    with pytest.raises(ManifestError, match="is a folder"):
        verify(tmp_path)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(60_000, 60_000))
    with pytest.raises(ManifestError, match="too large to check safely"):
        verify(bomb)
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (1, 2, 3)).save(buffer, "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    with pytest.raises(ManifestError, match="truncated or damaged"):
        verify(cut)
    runner = CliRunner()
    for path in (text, bomb, cut):
        result = runner.invoke(verify_command, [str(path)])
        assert result.exit_code == 4, result.output
        assert "Traceback" not in result.output and "ERROR:" in result.output
