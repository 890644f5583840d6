"""The C2PA certificate profile: what a signing certificate must be, checked before signing.

:meth:`provenance.credentials.Credentials.check` enforces the C2PA certificate profile (C2PA
Technical Specification 2.x, chapter "Trust Model", section "Certificate Profile") on the
end-entity certificate, so that a problem is named before c2pa-python refuses to sign ("the certificate is invalid") or,
worse, signs a manifest that validators reject:

- X.509 v3, inside its validity period, not a CA (``BasicConstraints cA`` not asserted);
- ``KeyUsage`` present with ``digitalSignature``;
- ``ExtendedKeyUsage`` present, without ``anyExtendedKeyUsage``, with at least one purpose that
  c2pa-python's validators accept by default: ``id-kp-emailProtection``, ``id-kp-timeStamping``
  or ``id-kp-OCSPSigning``. The spec also lists ``id-kp-documentSigning`` and
  ``c2pa-kp-claimSigning``, but c2pa-python 0.38 (c2pa-rs 0.91) rejects them unless the
  validator lists them in its ``trust.trust_config`` setting, so a certificate with only those
  is refused here;
- ``AuthorityKeyIdentifier`` present unless self-signed; not signed with SHA-1 or MD5;
- a key that C2PA allows (EC P-256/384/521, RSA >= 2048 bits with PSS, Ed25519) and that
  matches the certificate; the chain in order (end-entity first, each issued by the next).

The key's own rules (the algorithms C2PA allows, the key matching the certificate) and the
chain's order are checked in :mod:`provenance.credentials`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

__all__ = ["SIGNING_EKUS", "profile_problem"]

_DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
_C2PA_CLAIM_SIGNING = x509.ObjectIdentifier("1.3.6.1.4.1.62558.2.1")
_MS_C2PA_SIGNING = x509.ObjectIdentifier("1.3.6.1.4.1.311.76.59.1.9")
_EKU_NAMES = {
    EKU.EMAIL_PROTECTION: "emailProtection",
    EKU.TIME_STAMPING: "timeStamping",
    EKU.OCSP_SIGNING: "OCSPSigning",
    _DOCUMENT_SIGNING: "documentSigning",
    _C2PA_CLAIM_SIGNING: "c2pa-kp-claimSigning",
    _MS_C2PA_SIGNING: "MS C2PA signing",
    EKU.SERVER_AUTH: "serverAuth",
    EKU.CLIENT_AUTH: "clientAuth",
    EKU.CODE_SIGNING: "codeSigning",
    EKU.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}
#: Purposes that c2pa-python's validators accept by default; the spec-only ones need trust_config.
SIGNING_EKUS = frozenset({EKU.EMAIL_PROTECTION, EKU.TIME_STAMPING, EKU.OCSP_SIGNING})
_SPEC_ONLY_EKUS = frozenset({_DOCUMENT_SIGNING, _C2PA_CLAIM_SIGNING, _MS_C2PA_SIGNING})
_RENEW = "Ask your CA for a certificate that meets the C2PA profile; `sdkit keys init --force` renews development credentials."
_EKU_HINT = "C2PA signers need the extended key usage emailProtection (CAs sell it as 'S/MIME' certificates), timeStamping or OCSPSigning."


def profile_problem(cert: x509.Certificate) -> tuple[str, str] | None:
    """The first way ``cert`` breaks the C2PA certificate profile, with a hint, or ``None``."""
    now = dt.datetime.now(dt.UTC)
    basic, usage = _extension(cert, x509.BasicConstraints), _extension(cert, x509.KeyUsage)
    eku = list(_extension(cert, x509.ExtendedKeyUsage) or [])
    names = ", ".join(_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku)
    spec_only = " (valid in the C2PA spec, but c2pa-python's validators reject it by default: signingCredential.invalid)"
    spec_only = spec_only if _SPEC_ONLY_EKUS.intersection(eku) else ""
    algorithm = cert.signature_hash_algorithm
    # fmt: off
    rules = [
        (cert.version != x509.Version.v3, "is not an X.509 v3 certificate", _RENEW),
        (now > cert.not_valid_after_utc, f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC", _RENEW),
        (now < cert.not_valid_before_utc, f"is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC", "Check the system clock."),
        (basic is not None and basic.ca, "is a CA certificate; C2PA signs with an end-entity certificate", "Sign with a certificate that the CA issued, not with the CA itself."),
        (usage is None or not usage.digital_signature, "lacks the digitalSignature key usage that C2PA requires", _RENEW),
        (not eku, "has no extended key usage; C2PA requires one", _EKU_HINT),
        (EKU.ANY_EXTENDED_KEY_USAGE in eku, "has anyExtendedKeyUsage, which C2PA forbids", _EKU_HINT),
        (not SIGNING_EKUS.intersection(eku), f"has extended key usage {names}{spec_only}, which does not allow signing C2PA manifests", _EKU_HINT),
        (cert.issuer != cert.subject and _extension(cert, x509.AuthorityKeyIdentifier) is None, "has no AuthorityKeyIdentifier, which C2PA requires", _RENEW),
        (isinstance(algorithm, hashes.SHA1 | hashes.MD5), f"is signed with {algorithm and algorithm.name}, which C2PA forbids", _RENEW),
    ]
    # fmt: on
    return next(((message, hint) for broken, message, hint in rules if broken), None)


def _extension(cert: x509.Certificate, kind: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
