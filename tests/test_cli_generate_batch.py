"""``sdkit generate``: signing options (key password, time-stamp URL), --quality, --prompts.

Real c2pa-python signing, real files; the time-stamp authority that cannot be reached is a
closed port on 127.0.0.1, so c2pa-python's own HTTP request fails.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from provenance.dev_credentials import DevelopmentCredentials, init_development_credentials
from provenance.manifest import read_manifest
from sdkit.cli import cli
from sdkit.cli import generate as generate_module

PASSWORD = "correct horse"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Development credentials whose signing key is encrypted with PASSWORD: (chain, key)."""
    dev = init_development_credentials(tmp_path_factory.mktemp("credentials"))
    assert isinstance(dev, DevelopmentCredentials)
    key = serialization.load_pem_private_key(dev.private_key.read_bytes(), password=None)
    locked_key = dev.directory / "signer-locked.key"
    locked_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
    )
    return dev.certificate_chain, locked_key


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/tsa"  # nothing listens there once the socket is closed


def _generate(runner: CliRunner, model: Path, out: Path, *extra: str) -> object:
    args = ["generate", "x", "-m", str(model), "--steps", "1", "-o", str(out), "-q", *extra]
    return runner.invoke(cli, args)


# -- the signing key's password ------------------------------------------------------------


def test_password_from_the_environment_with_certificate_from_the_environment(
    runner: CliRunner,
    tiny_sd_path: Path,
    tmp_path: Path,
    locked: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain, key = locked
    monkeypatch.setenv("SDKIT_SIGNING_CERT", str(chain))
    monkeypatch.setenv("SDKIT_SIGNING_KEY", str(key))
    monkeypatch.setenv("SDKIT_SIGNING_KEY_PASSWORD", PASSWORD)
    out = tmp_path / "a.png"
    result = _generate(runner, tiny_sd_path, out)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert read_manifest(out.read_bytes(), "image/png").state == "valid"


def test_password_flag_and_wrong_or_missing_password(
    runner: CliRunner,
    tiny_sd_path: Path,
    tmp_path: Path,
    locked: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SDKIT_SIGNING_KEY_PASSWORD", raising=False)
    chain, key = locked
    signing = ["--signing-cert", str(chain), "--signing-key", str(key)]
    out = tmp_path / "a.png"
    missing = runner.invoke(cli, ["generate", "x", "-m", "acme/absent", "-o", str(out), *signing])
    # the credentials are checked before the model loads: exit 5, not the model's 6
    assert missing.exit_code == 5, missing.output
    assert "encrypted and no password" in missing.output
    assert "--key-password" in missing.output and "SDKIT_SIGNING_KEY_PASSWORD" in missing.output
    wrong = _generate(runner, tiny_sd_path, out, *signing, "--key-password", "guess")
    assert wrong.exit_code == 5, wrong.output  # type: ignore[attr-defined]
    text = wrong.output  # type: ignore[attr-defined]
    assert "password is wrong" in text and "not a PEM private key" not in text
    assert "Traceback" not in text and not out.exists()
    right = _generate(runner, tiny_sd_path, out, *signing, "--key-password", PASSWORD)
    assert right.exit_code == 0, right.output  # type: ignore[attr-defined]
    assert read_manifest(out.read_bytes(), "image/png").state == "valid"


def test_password_is_asked_for_with_hidden_input_in_a_terminal(
    runner: CliRunner,
    tiny_sd_path: Path,
    tmp_path: Path,
    locked: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SDKIT_SIGNING_KEY_PASSWORD", raising=False)
    monkeypatch.setattr(generate_module, "_interactive", lambda: True)
    chain, key = locked
    out = tmp_path / "a.png"
    signing = ["--signing-cert", str(chain), "--signing-key", str(key)]
    args = ["generate", "x", "-m", str(tiny_sd_path), "--steps", "1", "-o", str(out), "-q"]
    result = runner.invoke(cli, [*args, *signing], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "password of the signing key" in result.output and PASSWORD not in result.output
    assert out.exists()


# -- the time-stamp authority --------------------------------------------------------------


@pytest.mark.parametrize("source", ["flag", "environment"])
@pytest.mark.parametrize("credentials", ["flags", "development"])
def test_unreachable_time_stamp_authority_is_exit_5_and_no_file(
    runner: CliRunner,
    tiny_sd_path: Path,
    tmp_path: Path,
    locked: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    credentials: str,
) -> None:
    url = _closed_port_url()
    extra: list[str] = []
    if credentials == "flags":
        chain, key = locked
        extra += ["--signing-cert", str(chain), "--signing-key", str(key)]
        monkeypatch.setenv("SDKIT_SIGNING_KEY_PASSWORD", PASSWORD)
    if source == "flag":
        extra += ["--timestamp-url", url]
    else:
        monkeypatch.setenv("SDKIT_TIMESTAMP_URL", url)
    out = tmp_path / "a.png"
    result = _generate(runner, tiny_sd_path, out, "-n", "2", *extra)
    text = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 5, text  # type: ignore[attr-defined]
    # the URL reached c2pa-python's signer, whose HTTP request failed: no unstamped file
    assert f"no time-stamp from {url}" in text and "SDKIT_TIMESTAMP_URL" in text
    assert "Traceback" not in text
    assert not list(tmp_path.glob("a*.png"))


def test_a_time_stamp_url_that_is_not_http_is_refused_before_the_model_loads(
    runner: CliRunner, tmp_path: Path
) -> None:
    args = ["generate", "x", "-m", "acme/absent", "-o", str(tmp_path / "a.png")]
    result = runner.invoke(cli, [*args, "--timestamp-url", "ftp://tsa.example"])
    assert result.exit_code == 5 and "is not http(s)" in result.output, result.output
