"""docs/provenance.md, "Your own signing certificate": its ```bash block, run step by step.

The commands are read from the doc (the first ```bash block under that heading) and run in an
empty folder with the real ``openssl`` and the ``sdkit`` of this environment, so the doc and
this test cannot drift: a CA, an encrypted key, a C2PA-profile certificate, a signed image
that verifies as trusted with the CA as anchor. Each command runs in a shell of its own (so
a reader may run the steps one at a time: no step leans on another's variables), and the block
as a whole must parse as a script (tests/test_docs.py runs it whole, as a reader pastes it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from provenance import verify

DOC = Path(__file__).resolve().parents[1] / "docs" / "provenance.md"
HEADING = "## Your own signing certificate"


def section_commands(text: str, heading: str = HEADING) -> str:
    """The first ```bash block after ``heading`` and before the next ``## `` heading."""
    start = text.index(heading) + len(heading)
    end = text.find("\n## ", start)
    section = text[start : end if end != -1 else len(text)]
    match = re.search(r"^```bash\n(.*?)^```$", section, re.M | re.S)
    assert match, f"no ```bash block under {heading!r}"
    return match.group(1)


def commands_of(block: str) -> list[str]:
    """The block's commands: ``\\``-continued lines joined, comment and blank lines out."""
    commands, pending = [], ""
    for raw in block.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    return commands


def test_the_section_holds_the_documented_steps() -> None:
    commands = section_commands(DOC.read_text(encoding="utf-8"))
    for step in ("openssl req -x509", "SDKIT_SIGNING_KEY_PASSWORD", "extendedKeyUsage"):
        assert step in commands
    assert "sdkit generate" in commands and "sdkit verify --trust-anchors ca.pem" in commands


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_own_certificate_commands_sign_a_trusted_file(tmp_path: Path) -> None:
    commands = section_commands(DOC.read_text(encoding="utf-8"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDKIT_SIGNING")}
    env.pop("SDKIT_TIMESTAMP_URL", None)
    env["SDKIT_CONFIG_DIR"] = str(tmp_path / "config")  # no development credentials used
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    parsed = subprocess.run(["bash", "-n", "-c", commands], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr
    output = ""
    for command in commands_of(commands):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"$ {command}\n{result.stdout}{result.stderr}"
        output = result.stdout
    assert "VERIFIED (trusted signer)" in output  # the last command: verify
    # what the commands made is what the doc says: an encrypted key, a profile certificate
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "signer.key").read_bytes()
    signer = x509.load_pem_x509_certificate((tmp_path / "signer.pem").read_bytes())
    assert not signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    report = verify(tmp_path / "signed.png", trust_anchors=tmp_path / "ca.pem")
    assert (report.verdict, report.trusted, report.signer) == ("verified", True, "Example Images")
    untrusted = verify(tmp_path / "signed.png")
    assert untrusted.verdict == "verified" and not untrusted.trusted
