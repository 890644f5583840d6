"""Signing credentials for C2PA manifests: a PEM chain + key, or a callback (HSM/KMS).

:meth:`Credentials.check` enforces the C2PA certificate profile
(:mod:`provenance._certificate_profile`) on the end-entity certificate, so that a problem is
named before c2pa-python refuses to sign or signs a manifest that validators reject.

Development credentials (:mod:`provenance.dev_credentials`) come from a local CA that nobody
else trusts: files signed with them read back ``Valid`` but not ``Trusted``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.x509.oid import NameOID

from ._certificate_profile import SIGNING_EKUS as SIGNING_EKUS  # re-exported: named here before
from ._certificate_profile import profile_problem
from ._fs import config_dir
from .dev_credentials import (
    DEVELOPMENT_ORGANIZATION,
    DevelopmentCredentials,
    default_credentials_dir,
    init_development_credentials,
)
from .errors import ManifestError, SigningError

if TYPE_CHECKING:
    from c2pa import Signer

__all__ = [
    "Algorithm",
    "Credentials",
    "DevelopmentCredentials",
    "default_credentials",
    "default_credentials_dir",
    "detect_algorithm",
    "init_development_credentials",
    "key_is_encrypted",
    "load_trust_anchors",
]

logger = logging.getLogger("provenance")

Algorithm = Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"]
StrPath = str | os.PathLike[str]

_CURVES: dict[str, Algorithm] = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_PROBE = b"sdkit: does this signer match its certificate?"


def detect_algorithm(key: Any) -> Algorithm:
    """The C2PA signing algorithm for a private or public key (RSA gets PSS with SHA-256).

    Raises:
        SigningError: C2PA cannot sign with this key (RSA < 2048 bits, DSA, secp256k1, …).
    """
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        problem = f"EC {key.curve.name}"
        if key.curve.name in _CURVES:
            return _CURVES[key.curve.name]
    elif isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        problem = f"{key.key_size}-bit RSA"
        if key.key_size >= 2048:
            return "ps256"
    elif isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    else:
        problem = type(key).__name__.lstrip("_")
    hint = "Use an EC P-256/P-384/P-521, RSA (>= 2048 bits) or Ed25519 key."
    raise SigningError(f"C2PA cannot sign with a {problem} key", hint=hint)


class Credentials:
    """A certificate chain and a way to sign with its key; make one with a ``from_*`` method.

    The constructor only parses (``private_key`` is a loaded ``cryptography`` key); the
    ``from_*`` methods also check the certificate profile.

    Attributes:
        algorithm: the C2PA signing algorithm (``"es256"``, ``"ps256"``, ``"ed25519"``, …).
        certificate_chain: PEM certificates, end-entity first.
        timestamp_url: an RFC 3161 time-stamp authority, or ``None``.
        development: whether the signer is one of sdkit's development certificates.
    """

    def __init__(
        self,
        certificate_chain: bytes,
        *,
        private_key: Any = None,
        sign: Callable[[bytes], bytes] | None = None,
        algorithm: Algorithm | None = None,
        timestamp_url: str | None = None,
    ) -> None:
        self._certificates = _parse_chain(certificate_chain)
        self.certificate_chain = b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in self._certificates
        )
        self._key, self._sign = private_key, sign
        detected = detect_algorithm(private_key or self._certificates[0].public_key())
        self.algorithm: Algorithm = algorithm or detected
        if self.algorithm not in get_args(Algorithm):
            hint = f"Use one of {', '.join(get_args(Algorithm))}."
            raise SigningError(f"unknown signing algorithm {self.algorithm!r}", hint=hint)
        if self.algorithm != detected and not (detected == "ps256" and self.algorithm[:2] == "ps"):
            hint = f"Pass algorithm={detected!r}, or leave it out."
            raise SigningError(f"{self.algorithm} does not fit the key ({detected})", hint=hint)
        if timestamp_url is not None and not timestamp_url.startswith(("http://", "https://")):
            hint = "Give the URL of an RFC 3161 time-stamp authority (or SDKIT_TIMESTAMP_URL)."
            raise SigningError(f"timestamp URL {timestamp_url!r} is not http(s)", hint=hint)
        self.timestamp_url = timestamp_url
        organizations = self._certificates[0].subject.get_attributes_for_oid(
            NameOID.ORGANIZATION_NAME
        )
        self.development = any(a.value == DEVELOPMENT_ORGANIZATION for a in organizations)

    @classmethod
    def from_files(
        cls,
        certificate_chain: StrPath,
        private_key: StrPath,
        algorithm: Algorithm | None = None,
        timestamp_url: str | None = None,
        *,
        password: str | bytes | None = None,
    ) -> Credentials:
        """Load a PEM certificate chain (end-entity first) and its PEM private key; check them.

        Raises:
            SigningError: a file is missing or unreadable, or see :meth:`from_pem`.
        """
        chain = _read(certificate_chain, "signing certificate chain")
        key = _read(private_key, "signing key")
        try:
            return cls.from_pem(chain, key, algorithm, timestamp_url, password=password)
        except SigningError as exc:
            path = exc.path or os.fspath(certificate_chain)
            raise SigningError(exc.message, path=path, hint=exc.hint) from None

    @classmethod
    def from_pem(
        cls,
        certificate_chain: bytes | str,
        private_key: bytes | str,
        algorithm: Algorithm | None = None,
        timestamp_url: str | None = None,
        *,
        password: str | bytes | None = None,
    ) -> Credentials:
        """Credentials from PEM text (key as PKCS#8, SEC1 or PKCS#1, maybe encrypted), checked.

        Raises:
            SigningError: not PEM, an encrypted key without the right ``password``, an
                unsupported key, or a failed :meth:`check`.
        """
        key = _parse_key(_bytes(private_key), password)
        creds = cls(
            _bytes(certificate_chain),
            private_key=key,
            algorithm=algorithm,
            timestamp_url=timestamp_url,
        )
        creds.check()
        return creds

    @classmethod
    def from_callback(
        cls,
        sign: Callable[[bytes], bytes],
        certificate_chain: bytes | StrPath,
        algorithm: Algorithm | None = None,
        timestamp_url: str | None = None,
    ) -> Credentials:
        """Credentials whose key stays elsewhere (HSM, KMS): ``sign(data) -> signature``.

        ``sign`` signs ``data`` with the algorithm's hash: ECDSA with SHA-256/384/512, RSA-PSS
        with MGF1 and salt length = hash length, or pure Ed25519. An ECDSA signature may be DER
        (what KMS APIs and ``cryptography`` return) or raw ``r || s`` (IEEE P1363, what COSE
        wants): DER is converted here. The certificate is checked now; :meth:`check` also
        checks, with one call to ``sign``, that the key matches.

        Args:
            sign: the signing function; c2pa calls it once per manifest.
            certificate_chain: PEM bytes or text, or the path of a PEM file.
            algorithm: defaults to the one that the certificate's key implies.
            timestamp_url: an RFC 3161 time-stamp authority.
        """
        if isinstance(certificate_chain, str) and "-----BEGIN" in certificate_chain:
            certificate_chain = certificate_chain.encode()
        if not isinstance(certificate_chain, bytes):
            certificate_chain = _read(certificate_chain, "signing certificate chain")
        creds = cls(certificate_chain, sign=sign, algorithm=algorithm, timestamp_url=timestamp_url)
        creds._check_profile()
        return creds

    @property
    def subject(self) -> str:
        """The signing certificate's subject (RFC 4514)."""
        return self._certificates[0].subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        """The signing certificate's issuer (RFC 4514)."""
        return self._certificates[0].issuer.rfc4514_string()

    @property
    def not_before(self) -> dt.datetime:
        """Start of the signing certificate's validity (UTC)."""
        return self._certificates[0].not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        """End of the signing certificate's validity (UTC)."""
        return self._certificates[0].not_valid_after_utc

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the signing certificate (colon-separated hex)."""
        return self._certificates[0].fingerprint(hashes.SHA256()).hex(":").upper()

    def __repr__(self) -> str:
        kind = "key" if self._sign is None else "callback"
        return f"Credentials(subject={self.subject!r}, algorithm={self.algorithm!r}, signer={kind}, development={self.development})"

    def check(self) -> None:
        """Check the certificate profile, and that the key (or callback) matches the certificate.

        Raises:
            SigningError: naming the first problem found.
        """
        self._check_profile()
        public = self._certificates[0].public_key()
        if self._key is not None:
            spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            if self._key.public_key().public_bytes(*spki) != public.public_bytes(*spki):
                hint = "Pass the key that belongs to the chain's first certificate."
                raise SigningError(
                    "the private key does not match the signing certificate", hint=hint
                )
            return
        hint = "Check that the callback signs with the key of the chain's first certificate."
        try:
            _verify(public, self.algorithm, self._callback_signature(_PROBE), _PROBE)
        except InvalidSignature:
            raise SigningError(
                "the signing callback's signature does not verify with the certificate's key",
                hint=hint,
            ) from None
        except Exception as exc:  # whatever the caller's HSM/KMS code raises
            raise SigningError(f"the signing callback failed: {exc}", hint=hint) from exc

    def signer(self) -> Signer:
        """A new ``c2pa.Signer``; c2pa consumes signers, so ask for one per signature.

        Raises:
            SigningError: c2pa-python refused the credentials.
        """
        from c2pa import C2paError, C2paSignerInfo, C2paSigningAlg, Signer

        chain, tsa = self.certificate_chain, self.timestamp_url
        try:
            if self._key is None:
                alg = getattr(C2paSigningAlg, self.algorithm.upper())
                return Signer.from_callback(self._callback_signature, alg, chain.decode(), tsa)
            pkcs8 = (serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            key = self._key.private_bytes(serialization.Encoding.PEM, *pkcs8)  # c2pa: PKCS#8 only
            return Signer.from_info(C2paSignerInfo(self.algorithm, chain, key, tsa))
        except C2paError as exc:
            hint = "Run `sdkit keys show` on these credentials."
            raise SigningError(
                f"c2pa-python refused the signing credentials: {exc}", hint=hint
            ) from None

    def _callback_signature(self, data: bytes) -> bytes:
        assert self._sign is not None
        signature = bytes(self._sign(data))
        if self.algorithm.startswith("es"):
            size = (self._certificates[0].public_key().key_size + 7) // 8  # type: ignore[union-attr]
            if len(signature) != 2 * size:  # DER -> r || s, as COSE needs (RFC 9053, 2.1)
                r, s = utils.decode_dss_signature(signature)
                signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return signature

    def _check_profile(self) -> None:
        if problem := profile_problem(self._certificates[0]):
            message, hint = problem
            raise SigningError(f"signing certificate {self.subject!r} {message}", hint=hint)
        for child, parent in zip(self._certificates, self._certificates[1:], strict=False):
            try:
                child.verify_directly_issued_by(parent)  # issuer name and signature
            except UnsupportedAlgorithm:
                continue  # a signature scheme cryptography cannot check; c2pa will
            except (ValueError, TypeError, InvalidSignature):
                message = f"the certificate chain is out of order: {child.subject.rfc4514_string()!r} is not issued by the next one"
                hint = "Put the signing certificate first, then each issuer up to the root."
                raise SigningError(message, hint=hint) from None


def _verify(public: Any, algorithm: str, signature: bytes, data: bytes) -> None:
    if algorithm == "ed25519":
        return public.verify(signature, data)  # type: ignore[no-any-return]
    digest = _HASHES[algorithm[2:]]()
    if algorithm.startswith("ps"):
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.AUTO)
        return public.verify(signature, data, pss, digest)  # type: ignore[no-any-return]
    half = len(signature) // 2
    r, s = int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
    return public.verify(utils.encode_dss_signature(r, s), data, ec.ECDSA(digest))  # type: ignore[no-any-return]


def _bytes(pem: bytes | str) -> bytes:
    return pem.encode() if isinstance(pem, str) else pem


def _read(path: StrPath, what: str) -> bytes:
    name = os.fspath(path)
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        hint = "Check the path (or SDKIT_SIGNING_CERT / SDKIT_SIGNING_KEY); `sdkit keys init` makes development credentials."
        raise SigningError(f"{what} not found: {name}", path=name, hint=hint) from None
    except OSError as exc:
        hint = "Check that it is a file that you may read."
        raise SigningError(
            f"cannot read {what} {name}: {exc.strerror}", path=name, hint=hint
        ) from None


def _parse_chain(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        hint = "Give PEM certificates ('-----BEGIN CERTIFICATE-----'), the signing one first."
        raise SigningError("the certificate chain holds no PEM certificate", hint=hint) from None


def key_is_encrypted(pem: bytes | str) -> bool:
    """Whether a PEM private key is encrypted (PKCS#8 ``ENCRYPTED PRIVATE KEY`` or legacy
    ``Proc-Type: 4,ENCRYPTED``), i.e. needs a password to load.

    Example:
        >>> key_is_encrypted(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\\n...")
        True
    """
    data = _bytes(pem)
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data


_PASSWORD_SOURCES = (
    "`sdkit generate --key-password` or SDKIT_SIGNING_KEY_PASSWORD (the CLI asks when it runs "
    "in a terminal); password=… in Python"
)


def _parse_key(pem: bytes, password: str | bytes | None) -> Any:
    secret = password.encode() if isinstance(password, str) else password
    try:
        return serialization.load_pem_private_key(pem, password=secret)
    except TypeError:  # encrypted without a password, or a password for a plain key
        if secret is None:
            hint = f"Give its password: {_PASSWORD_SOURCES}."
            raise SigningError(
                "the signing key is encrypted and no password was given", hint=hint
            ) from None
        raise SigningError(
            "a password was given for a signing key that is not encrypted",
            hint="Leave the password out (unset SDKIT_SIGNING_KEY_PASSWORD).",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        if secret is not None and key_is_encrypted(pem):
            hint = f"Check the password given ({_PASSWORD_SOURCES})."
            raise SigningError(
                "cannot decrypt the signing key: the password is wrong", hint=hint
            ) from None
        wrong = "the password is wrong, or " if secret is not None else ""
        hint = (
            "Give the PEM private key ('-----BEGIN PRIVATE KEY-----') of the signing certificate."
        )
        raise SigningError(
            f"cannot read the signing key: {wrong}it is not a PEM private key", hint=hint
        ) from None


_lock = threading.Lock()
_announced = False


def default_credentials(*, timestamp_url: str | None = None) -> Credentials:
    """``SDKIT_SIGNING_CERT`` + ``SDKIT_SIGNING_KEY`` when set, else development credentials.

    Development credentials are created on first use in :func:`default_credentials_dir`; the
    first use in a process logs a warning (logger ``"provenance"``) that nobody else trusts
    them. ``SDKIT_SIGNING_KEY_PASSWORD`` decrypts the key; ``timestamp_url``, else
    ``SDKIT_TIMESTAMP_URL``, adds an RFC 3161 time-stamp to either. Thread-safe.

    Raises:
        SigningError: only one of the two variables is set, or the credentials are unusable.
    """
    global _announced
    cert, key = os.environ.get("SDKIT_SIGNING_CERT"), os.environ.get("SDKIT_SIGNING_KEY")
    tsa = timestamp_url or os.environ.get("SDKIT_TIMESTAMP_URL") or None
    if cert or key:
        if not (cert and key):
            hint = "Set both (PEM chain, PEM key), or neither to use development credentials."
            raise SigningError("SDKIT_SIGNING_CERT and SDKIT_SIGNING_KEY go together", hint=hint)
        password = os.environ.get("SDKIT_SIGNING_KEY_PASSWORD")
        return Credentials.from_files(cert, key, None, tsa, password=password)
    with _lock:
        files = DevelopmentCredentials.at(default_credentials_dir())
        created = not files.certificate_chain.exists()
        if created:
            try:
                init_development_credentials(files.directory)
            except SigningError:
                if not files.certificate_chain.exists():
                    raise  # not another process's credentials: a real problem
        creds = Credentials.from_files(files.certificate_chain, files.private_key, None, tsa)
        if not _announced:
            _announced = True
            logger.warning(
                "signing with sdkit development credentials %s %s: nobody else trusts them, so "
                "files verify as Valid but not Trusted (unless a verifier trusts %s). For "
                "trusted Content Credentials set SDKIT_SIGNING_CERT and SDKIT_SIGNING_KEY.",
                "created in" if created else "from",
                files.directory,
                files.ca_certificate,
            )
        return creds


def load_trust_anchors(path: StrPath | None = None) -> str | None:
    """PEM trust anchors: ``path``, else ``$SDKIT_TRUST_ANCHORS``, else the config file.

    The config file is ``<config>/trust-anchors.pem`` (config: ``$SDKIT_CONFIG_DIR``, else
    ``$XDG_CONFIG_HOME/sdkit``, else ``~/.config/sdkit``), used when it exists. ``None`` when
    none is configured: then no signer is trusted, and valid manifests verify as untrusted.

    Raises:
        ManifestError: the file is missing, unreadable or holds no PEM certificate.
    """
    source = os.fspath(path) if path is not None else os.environ.get("SDKIT_TRUST_ANCHORS")
    if not source:
        configured = config_dir() / "trust-anchors.pem"
        if not configured.is_file():
            return None
        source = str(configured)
    hint = "Give a PEM file of trusted root certificates (e.g. ca.pem from `sdkit keys init`)."
    try:
        anchors = x509.load_pem_x509_certificates(Path(source).read_bytes())
    except OSError as exc:
        message = f"cannot read trust anchors {source}: {exc.strerror}"
        raise ManifestError(message, path=source, hint=hint) from None
    except ValueError:
        message = f"trust anchors {source} hold no PEM certificate"
        raise ManifestError(message, path=source, hint=hint) from None
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in anchors)
