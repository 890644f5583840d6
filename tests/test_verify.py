"""provenance.verify on third-party C2PA files (made by c2pa-rs, see shared/fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from provenance.cli import verify_command
from provenance.errors import ManifestError
from provenance.verify import verify

# A copy of shared/fixtures/c2pa-interop (MIT, from contentauth/c2pa-python), kept in the repo
# so that a fresh clone tests without the workspace around it.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "c2pa-interop"


@pytest.mark.parametrize(
    ("name", "state", "code"),
    [
        ("A.jpg", "absent", None),
        ("C.jpg", "valid", "signingCredential.untrusted"),
        ("CA.jpg", "valid", None),
        ("boxhash.jpg", "valid", None),
        ("XCA.jpg", "invalid", "assertion.dataHash.mismatch"),
        ("E-sig-CA.jpg", "invalid", "claimSignature.mismatch"),
        ("CIE-sig-CA.jpg", "invalid", "claimSignature.mismatch"),
    ],
)
def test_third_party_files(name: str, state: str, code: str | None) -> None:
    report = verify(FIXTURES / name)
    assert report.c2pa_state == state
    if code:
        assert code in report.c2pa_codes
        assert report.explanations[report.c2pa_codes.index(code)] != "see the C2PA specification"


def test_exit_codes() -> None:
    runner = CliRunner()
    assert runner.invoke(verify_command, [str(FIXTURES / "C.jpg")]).exit_code == 0
    assert runner.invoke(verify_command, [str(FIXTURES / "A.jpg")]).exit_code == 0
    strict = runner.invoke(verify_command, [str(FIXTURES / "A.jpg"), "--require-credentials"])
    assert strict.exit_code == 1
    assert runner.invoke(verify_command, [str(FIXTURES / "XCA.jpg")]).exit_code == 2


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_text("hello")
    with pytest.raises(ManifestError):
        verify(path)
    assert CliRunner().invoke(verify_command, [str(path)]).exit_code == 3
