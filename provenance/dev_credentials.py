"""sdkit's development credentials: a local CA and a C2PA signing certificate that it issued.

Nobody else trusts this CA: files signed with it read back ``Valid`` (intact) but not
``Trusted``, unless a verifier adds ``ca.pem`` to its trust anchors. Use
:mod:`provenance.credentials` to load them; this module only writes them.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._fs import atomic_folder, config_dir, write_atomic
from .errors import SigningError

__all__ = [
    "DEVELOPMENT_ORGANIZATION",
    "DevelopmentCredentials",
    "default_credentials_dir",
    "init_development_credentials",
]

DEVELOPMENT_ORGANIZATION = "sdkit development (untrusted)"
CA_DAYS, SIGNER_DAYS = 3652, 365
_KEY_USAGES = [
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
]


@dataclass(frozen=True)
class DevelopmentCredentials:
    """Where development credentials live: ``ca.pem``, ``signer-chain.pem``, two PKCS#8 keys.

    Attributes:
        directory: the folder.
        ca_certificate: ``ca.pem``, the development CA: a trust anchor for your own checks.
        certificate_chain: ``signer-chain.pem``, the signing certificate then the CA.
        private_key: ``signer.key``, the signing key (mode 0600).
        ca_key: ``ca.key``, the CA's key (mode 0600), to issue more certificates.
    """

    directory: Path
    ca_certificate: Path
    certificate_chain: Path
    private_key: Path
    ca_key: Path

    @classmethod
    def at(cls, directory: str | os.PathLike[str]) -> DevelopmentCredentials:
        """The file layout in ``directory``, whether or not the files exist."""
        d = Path(directory)
        return cls(d, d / "ca.pem", d / "signer-chain.pem", d / "signer.key", d / "ca.key")

    def files(self) -> list[Path]:
        """The four files, certificates first."""
        return [self.ca_certificate, self.certificate_chain, self.private_key, self.ca_key]


def default_credentials_dir() -> Path:
    """``<config>/credentials``: config is ``$SDKIT_CONFIG_DIR``, ``$XDG_CONFIG_HOME/sdkit`` or
    ``~/.config/sdkit`` (:func:`provenance._fs.config_dir`)."""
    return config_dir() / "credentials"


def init_development_credentials(
    directory: str | os.PathLike[str] | None = None, *, force: bool = False
) -> DevelopmentCredentials:
    """Create a development CA and a signing certificate that meets the C2PA profile.

    The CA: self-signed, ``CA:true, pathlen:0``, ``keyCertSign``, EC P-256, 10 years. The
    signer: end-entity, ``digitalSignature`` (critical), EKU ``emailProtection``, subject and
    authority key identifiers, EC P-256, 1 year. Both are labelled "sdkit development
    (untrusted)". Keys are created with mode 0600; every file is written atomically (a new
    folder is filled beside the target and renamed into place, so racing processes cannot mix
    two sets).

    Args:
        directory: where to write; defaults to :func:`default_credentials_dir`.
        force: replace existing credentials.

    Raises:
        SigningError: credentials already exist there, or the files cannot be written.
    """
    files = DevelopmentCredentials.at(directory or default_credentials_dir())
    exists_hint = (
        "Keep them, or pass force=True (`sdkit keys init --overwrite`) to replace them; files "
        "signed before will then no longer be Trusted by the new ca.pem."
    )
    present = [p.name for p in files.files() if p.exists()]
    if present and not force:
        raise SigningError(
            f"development credentials already exist in {files.directory} ({', '.join(present)})",
            path=str(files.directory),
            hint=exists_hint,
        )
    contents = dict(zip(files.files(), _make_pki(), strict=True))
    try:
        if files.directory.is_dir() and any(files.directory.iterdir()):
            for path, data in contents.items():
                _write_atomic(path, data)
            return files
        files.directory.parent.mkdir(parents=True, exist_ok=True)
        # the rename fails when another process got there first
        try:
            with atomic_folder(files.directory) as staging:
                for path, data in contents.items():
                    _write_atomic(staging / path.name, data)
        except OSError:
            if not files.certificate_chain.exists():
                raise
            raise SigningError(
                f"development credentials already exist in {files.directory}",
                path=str(files.directory),
                hint=exists_hint,
            ) from None
    except OSError as exc:
        raise SigningError(
            f"cannot write development credentials in {files.directory}: {exc.strerror}",
            path=str(files.directory),
            hint="Choose a folder you may write to (or set SDKIT_CONFIG_DIR).",
        ) from None
    return files


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path`` atomically (:func:`provenance._fs.write_atomic`).

    Keys get mode 0600 from the moment they exist (the temporary file's mode, not a later chmod).
    """
    mode = 0o600 if b"PRIVATE KEY" in data else 0o644
    write_atomic(path, data, overwrite=True, mode=mode)


def _make_pki() -> tuple[bytes, bytes, bytes, bytes]:
    """PEM bytes of: the CA certificate, the signer chain, the signer key, the CA key."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate a little clock skew
    ca_end = start + dt.timedelta(days=CA_DAYS)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEVELOPMENT_ORGANIZATION),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )

    def usage(*bits: str) -> x509.KeyUsage:
        return x509.KeyUsage(**{bit: bit in bits for bit in _KEY_USAGES})

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = name("sdkit development CA (untrusted)")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder(
            ca_name, ca_name, ca_key.public_key(), x509.random_serial_number(), start, ca_end
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage("key_cert_sign", "crl_sign"), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    end = min(start + dt.timedelta(days=SIGNER_DAYS), ca_end)
    signer = (
        x509.CertificateBuilder(
            ca_name,
            name("sdkit development signer (untrusted)"),
            key.public_key(),
            x509.random_serial_number(),
            start,
            end,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage("digital_signature"), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pkcs8 = (pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    ca_pem = ca.public_bytes(pem)
    return ca_pem, signer.public_bytes(pem) + ca_pem, key.private_bytes(*pkcs8), ca_key.private_bytes(*pkcs8)  # fmt: skip
