"""Signing credentials: development CA, C2PA certificate profile, c2pa-python round trips."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any

import c2pa
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from provenance import credentials as credentials_module
from provenance.credentials import (
    Credentials,
    DevelopmentCredentials,
    default_credentials,
    default_credentials_dir,
    init_development_credentials,
    load_trust_anchors,
)
from provenance.errors import ManifestError, SigningError

MANIFEST = {
    "claim_generator_info": [{"name": "sdkit", "version": "0.1.0"}],
    "assertions": [
        {
            "label": "c2pa.actions.v2",
            "data": {
                "actions": [
                    {
                        "action": "c2pa.created",
                        "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
                    }
                ]
            },
        }
    ],
}
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> DevelopmentCredentials:
    return init_development_credentials(tmp_path_factory.mktemp("dev") / "credentials")


@pytest.fixture(scope="module")
def ca(dev: DevelopmentCredentials) -> tuple[x509.Certificate, Any]:
    """The development CA, to issue test certificates with."""
    cert = x509.load_pem_x509_certificate(dev.ca_certificate.read_bytes())
    return cert, serialization.load_pem_private_key(dev.ca_key.read_bytes(), None)


def pem(key: Any) -> bytes:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue(
    ca: tuple[x509.Certificate, Any],
    key: Any,
    *,
    eku: list[x509.ObjectIdentifier] | None = None,
    start: dt.timedelta = dt.timedelta(days=-1),
    days: int = 30,
    is_ca: bool = False,
    digital_signature: bool = True,
) -> bytes:
    """A certificate for ``key`` from the development CA, then the CA: a PEM chain."""
    ca_cert, ca_key = ca
    others = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    others += ("key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    usage = dict.fromkeys(others, False)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test signer")])
    cert = (
        x509.CertificateBuilder(
            ca_cert.subject,
            name,
            key.public_key(),
            x509.random_serial_number(),
            NOW + start,
            NOW + start + dt.timedelta(days=days),
        )
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=digital_signature, **usage), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
        serialization.Encoding.PEM
    )


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def sign_and_read(creds: Credentials, anchors: str | None = None) -> dict[str, Any]:
    """Sign a PNG with c2pa-python, read it back; the validation report."""
    signed = io.BytesIO()
    with c2pa.Builder(MANIFEST) as builder:
        builder.sign(creds.signer(), "image/png", io.BytesIO(png()), signed)
    settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False}}
    if anchors is not None:
        settings["trust"] = {"trust_anchors": anchors}
    ctx = c2pa.Context(settings=c2pa.Settings.from_dict(settings))
    with c2pa.Reader("image/png", io.BytesIO(signed.getvalue()), context=ctx) as reader:
        return json.loads(reader.json())  # type: ignore[no-any-return]


# -- development credentials -------------------------------------------------------------


def test_development_certificates_meet_the_c2pa_profile(dev: DevelopmentCredentials) -> None:
    ca_cert = x509.load_pem_x509_certificate(dev.ca_certificate.read_bytes())
    signer, chain_ca = x509.load_pem_x509_certificates(dev.certificate_chain.read_bytes())
    assert chain_ca == ca_cert  # signer first, then the CA

    ext = signer.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.EMAIL_PROTECTION
    ]
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    ext.get_extension_for_class(x509.SubjectKeyIdentifier)
    public = signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    assert signer.issuer == ca_cert.subject
    labels = [a.value for a in signer.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert labels == ["sdkit development (untrusted)"]
    lifetime = signer.not_valid_after_utc - signer.not_valid_before_utc
    assert dt.timedelta(days=364) < lifetime < dt.timedelta(days=366)
    assert signer.not_valid_after_utc <= ca_cert.not_valid_after_utc

    ca_ext = ca_cert.extensions
    basic = ca_ext.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is True
    assert ca_ext.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca_cert.issuer == ca_cert.subject
    assert ca_cert.not_valid_after_utc - ca_cert.not_valid_before_utc > dt.timedelta(days=3650)

    creds = Credentials.from_files(dev.certificate_chain, dev.private_key)
    assert creds.algorithm == "es256" and creds.development
    assert creds.not_after == signer.not_valid_after_utc


def test_keys_are_private_from_creation(dev: DevelopmentCredentials) -> None:
    for key in (dev.private_key, dev.ca_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert stat.S_IMODE(dev.ca_certificate.stat().st_mode) & 0o044  # certificates are public
    assert sorted(p.name for p in dev.directory.iterdir()) == [
        "ca.key",
        "ca.pem",
        "signer-chain.pem",
        "signer.key",
    ]


def test_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    first = init_development_credentials(tmp_path)
    before = first.certificate_chain.read_bytes()
    with pytest.raises(SigningError, match="already exist") as info:
        init_development_credentials(tmp_path)
    assert info.value.hint is not None and "force" in info.value.hint
    assert first.certificate_chain.read_bytes() == before
    again = init_development_credentials(tmp_path, force=True)
    assert again.certificate_chain.read_bytes() != before
    assert stat.S_IMODE(again.private_key.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_default_credentials_created_once_and_announced_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SDKIT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setattr(credentials_module, "_announced", False)
    caplog.set_level(logging.WARNING, logger="provenance")
    first = default_credentials()
    folder = tmp_path / "config" / "credentials"
    assert default_credentials_dir() == folder
    modified = (folder / "signer-chain.pem").stat().st_mtime_ns
    second = default_credentials()
    assert second.fingerprint == first.fingerprint and second.development
    assert (folder / "signer-chain.pem").stat().st_mtime_ns == modified
    records = [r for r in caplog.records if r.name == "provenance"]
    assert len(records) == 1
    text = records[0].getMessage()
    assert (
        str(folder) in text and "nobody else trusts them" in text and "SDKIT_SIGNING_CERT" in text
    )
    assert "PRIVATE KEY" not in caplog.text


def test_default_credentials_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDKIT_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/somewhere")
    assert default_credentials_dir() == Path("/somewhere/sdkit/credentials")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert default_credentials_dir() == Path("/home/someone/.config/sdkit/credentials")


def test_default_credentials_is_thread_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDKIT_CONFIG_DIR", str(tmp_path))
    found: list[str] = []
    threads = [threading.Thread(target=lambda: found.append(default_credentials().fingerprint)) for _ in range(6)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 6 and len(set(found)) == 1


def test_environment_overrides_development_credentials(
    ca: tuple[x509.Certificate, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "chain.pem").write_bytes(issue(ca, key))
    (tmp_path / "key.pem").write_bytes(pem(key))
    monkeypatch.setenv("SDKIT_SIGNING_CERT", str(tmp_path / "chain.pem"))
    with pytest.raises(SigningError, match="go together"):
        default_credentials()
    monkeypatch.setenv("SDKIT_SIGNING_KEY", str(tmp_path / "key.pem"))
    monkeypatch.setenv("SDKIT_TIMESTAMP_URL", "http://timestamp.example")
    creds = default_credentials()
    assert (creds.subject, creds.algorithm, creds.development) == ("CN=test signer", "es384", False)
    assert creds.timestamp_url == "http://timestamp.example"


# -- signing with c2pa-python ---------------------------------------------------------------


def test_development_credentials_sign_valid_and_trusted_with_the_ca(
    dev: DevelopmentCredentials,
) -> None:
    creds = Credentials.from_files(dev.certificate_chain, dev.private_key)
    plain = sign_and_read(creds)
    assert plain["validation_state"] == "Valid"
    assert [s["code"] for s in plain["validation_status"]] == ["signingCredential.untrusted"]
    anchors = load_trust_anchors(dev.ca_certificate)
    assert anchors is not None
    assert sign_and_read(creds, anchors)["validation_state"] == "Trusted"


@pytest.mark.parametrize("encoding", ["der", "raw"])
def test_callback_signer_round_trip(ca: tuple[x509.Certificate, Any], encoding: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    calls: list[int] = []

    def sign(data: bytes) -> bytes:  # what an HSM/KMS would do
        calls.append(len(data))
        der = key.sign(data, ec.ECDSA(hashes.SHA256()))
        if encoding == "der":
            return der
        r, s = utils.decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    chain = issue(ca, key)
    creds = Credentials.from_callback(sign, certificate_chain=chain, algorithm="es256")
    creds.check()
    assert "callback" in repr(creds)
    ca_pem = ca[0].public_bytes(serialization.Encoding.PEM).decode()
    assert sign_and_read(creds, ca_pem)["validation_state"] == "Trusted"
    assert sign_and_read(creds)["validation_state"] == "Valid"
    assert len(calls) == 3  # check() once, one per manifest


def test_callback_with_the_wrong_key_fails_check(ca: tuple[x509.Certificate, Any]) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    chain = issue(ca, ec.generate_private_key(ec.SECP256R1()))
    creds = Credentials.from_callback(
        lambda data: other.sign(data, ec.ECDSA(hashes.SHA256())), chain
    )
    with pytest.raises(SigningError, match="does not verify"):
        creds.check()


def test_rsa_pss_signing(ca: tuple[x509.Certificate, Any]) -> None:
    key = rsa.generate_private_key(65537, 2048)
    creds = Credentials.from_pem(issue(ca, key), pem(key))
    assert creds.algorithm == "ps256"
    assert sign_and_read(creds)["validation_state"] == "Valid"


def test_c2pa_python_still_rejects_document_signing_only_certificates(
    ca: tuple[x509.Certificate, Any],
) -> None:
    """Why check() refuses them; if this fails, c2pa accepts them now: relax SIGNING_EKUS."""
    key = ec.generate_private_key(ec.SECP256R1())
    unchecked = Credentials(issue(ca, key, eku=[DOCUMENT_SIGNING]), private_key=key)
    with pytest.raises(c2pa.C2paError, match="EKU"):
        sign_and_read(unchecked)


# -- the certificate profile and other failures ---------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"start": dt.timedelta(days=-40), "days": 30}, "expired on"),
        ({"start": dt.timedelta(days=2)}, "not valid before"),
        ({"eku": [ExtendedKeyUsageOID.SERVER_AUTH]}, "extended key usage serverAuth"),
        ({"eku": [DOCUMENT_SIGNING]}, "documentSigning (valid in the C2PA spec"),
        ({"eku": [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]}, "anyExtendedKeyUsage"),
        ({"is_ca": True}, "is a CA certificate"),
        ({"digital_signature": False}, "digitalSignature"),
    ],
)
def test_certificate_profile_violations_are_named(
    ca: tuple[x509.Certificate, Any], options: dict[str, Any], expected: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SigningError, match="signing certificate 'CN=test signer'") as info:
        Credentials.from_pem(issue(ca, key, **options), pem(key))
    assert expected in info.value.message
    assert info.value.hint


def test_accepts_email_protection_alongside_other_purposes(
    ca: tuple[x509.Certificate, Any],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION]
    creds = Credentials.from_pem(issue(ca, key, eku=eku), pem(key))
    assert sign_and_read(creds)["validation_state"] == "Valid"


def test_key_certificate_mismatch(ca: tuple[x509.Certificate, Any]) -> None:
    chain = issue(ca, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(SigningError, match="does not match the signing certificate"):
        Credentials.from_pem(chain, pem(ec.generate_private_key(ec.SECP256R1())))


def test_chain_out_of_order(ca: tuple[x509.Certificate, Any], tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    end_entity = (
        issue(ca, key).split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    )
    stranger = init_development_credentials(tmp_path).ca_certificate.read_bytes()
    with pytest.raises(SigningError, match="out of order"):
        Credentials.from_pem(end_entity + stranger, pem(key))  # not the CA that issued it
    assert Credentials.from_pem(end_entity, pem(key)).algorithm == "es256"  # no issuers: fine


def test_unsupported_keys(ca: tuple[x509.Certificate, Any]) -> None:
    small = rsa.generate_private_key(65537, 1024)
    with pytest.raises(SigningError, match="1024-bit RSA"):
        Credentials.from_pem(issue(ca, small), pem(small))
    koblitz = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(SigningError, match="secp256k1"):
        Credentials.from_pem(issue(ca, koblitz), pem(koblitz))
    key = ec.generate_private_key(ec.SECP521R1())
    assert Credentials.from_pem(issue(ca, key), pem(key)).algorithm == "es512"
    with pytest.raises(SigningError, match="does not fit the key"):
        Credentials.from_pem(issue(ca, key), pem(key), algorithm="es256")


def test_file_and_format_errors(dev: DevelopmentCredentials, tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="not found") as info:
        Credentials.from_files(tmp_path / "nope.pem", dev.private_key)
    assert info.value.path == str(tmp_path / "nope.pem")
    with pytest.raises(SigningError, match="cannot read"):
        Credentials.from_files(tmp_path, dev.private_key)  # a folder
    key_pem = dev.private_key.read_bytes()
    chain_pem = dev.certificate_chain.read_bytes()
    with pytest.raises(SigningError, match="no PEM certificate") as info:
        Credentials.from_pem(key_pem, key_pem)  # a key where the chain belongs
    with pytest.raises(SigningError, match="not a PEM private key"):
        Credentials.from_pem(chain_pem, chain_pem)
    with pytest.raises(SigningError, match="http"):
        Credentials.from_pem(chain_pem, key_pem, timestamp_url="timestamp.example")


def test_encrypted_keys_need_their_password(dev: DevelopmentCredentials) -> None:
    key = serialization.load_pem_private_key(dev.private_key.read_bytes(), None)
    locked = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    chain = dev.certificate_chain.read_bytes()
    with pytest.raises(SigningError, match="encrypted and no password"):
        Credentials.from_pem(chain, locked)
    with pytest.raises(SigningError, match="password is wrong"):
        Credentials.from_pem(chain, locked, password="guess")
    creds = Credentials.from_pem(chain, locked, password="secret")
    assert sign_and_read(creds)["validation_state"] == "Valid"  # c2pa gets a decrypted PKCS#8


def test_no_private_key_material_in_reprs_or_errors(dev: DevelopmentCredentials) -> None:
    key_pem = dev.private_key.read_bytes()
    creds = Credentials.from_files(dev.certificate_chain, dev.private_key)
    texts = [repr(creds), str(vars(creds))]
    other = ec.generate_private_key(ec.SECP256R1())
    for chain, key in [(key_pem, key_pem), (dev.certificate_chain.read_bytes(), pem(other))]:
        with pytest.raises(SigningError) as info:
            Credentials.from_pem(chain, key)
        texts += [str(info.value), repr(info.value)]
    assert all("PRIVATE KEY" not in text for text in texts)
    assert "CN=sdkit development signer (untrusted)" in repr(creds)


# -- trust anchors ------------------------------------------------------------------------


def test_load_trust_anchors(
    dev: DevelopmentCredentials, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_trust_anchors() is None
    ca_pem = dev.ca_certificate.read_text()
    assert load_trust_anchors(dev.ca_certificate) == ca_pem
    monkeypatch.setenv("SDKIT_TRUST_ANCHORS", str(dev.ca_certificate))
    assert load_trust_anchors() == ca_pem
    with pytest.raises(ManifestError, match="cannot read trust anchors") as info:
        load_trust_anchors(tmp_path / "missing.pem")
    assert info.value.path == str(tmp_path / "missing.pem") and info.value.hint
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ManifestError, match="no PEM certificate"):
        load_trust_anchors(tmp_path / "junk.pem")


# -- sdkit keys -----------------------------------------------------------------------------


def test_keys_init_and_show(tmp_path: Path) -> None:
    from sdkit.cli import cli

    runner = CliRunner()
    folder = tmp_path / "keys"
    result = runner.invoke(cli, ["keys", "init", str(folder)])
    assert result.exit_code == 0, result.output
    assert f"--trust-anchors {folder / 'ca.pem'}" in result.output
    assert "development only" in result.output and "SDKIT_TRUST_ANCHORS" in result.output
    assert (folder / "signer.key").exists()

    again = runner.invoke(cli, ["keys", "init", str(folder)])
    assert again.exit_code == 4 and "--overwrite" in again.output
    for flag in ("--overwrite", "--force"):  # --force: the older name, still accepted
        replaced = runner.invoke(cli, ["keys", "init", str(folder), flag])
        assert replaced.exit_code == 0, replaced.output

    shown = runner.invoke(cli, ["keys", "show", str(folder)])
    assert shown.exit_code == 0, shown.output
    creds = Credentials.from_files(folder / "signer-chain.pem", folder / "signer.key")
    assert creds.fingerprint in shown.output and creds.subject in shown.output
    assert "es256" in shown.output and "usable" in shown.output
    assert "PRIVATE KEY" not in result.output + shown.output

    missing = runner.invoke(cli, ["keys", "show", str(tmp_path / "empty")])
    assert missing.exit_code == 5 and "sdkit keys init" in missing.output


def test_keys_show_names_an_unusable_certificate(
    ca: tuple[x509.Certificate, Any], tmp_path: Path
) -> None:
    from provenance.cli import keys_group

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "signer-chain.pem").write_bytes(issue(ca, key, start=dt.timedelta(days=-9), days=1))
    (tmp_path / "signer.key").write_bytes(pem(key))
    result = CliRunner().invoke(keys_group, ["show", str(tmp_path)])
    assert result.exit_code == 5
    assert "sha256:" in result.output and "expired on" in result.output
    assert os.fspath(tmp_path) in result.output


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"start": dt.timedelta(days=-60), "days": 30}, "expired"),
        ({"eku": [ExtendedKeyUsageOID.SERVER_AUTH]}, "extended key usage"),
    ],
)
def test_generate_refuses_bad_certificates_before_any_work(
    ca: tuple[x509.Certificate, Any], tmp_path: Path, options: dict[str, Any], expected: str
) -> None:
    from sdkit.cli import cli

    key = ec.generate_private_key(ec.SECP256R1())
    chain, key_file = tmp_path / "chain.pem", tmp_path / "signer.key"
    chain.write_bytes(issue(ca, key, **options))
    key_file.write_bytes(pem(key))
    out = tmp_path / "never.png"
    args = ["generate", "x", "-o", str(out), "-q", "--signing-cert", str(chain)]
    result = CliRunner().invoke(cli, [*args, "--signing-key", str(key_file)])
    assert result.exit_code == 5, result.output
    assert "error:" in result.output and expected in result.output.lower()
    assert "Traceback" not in result.output and not out.exists()
