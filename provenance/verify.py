"""One report per file: is there a C2PA manifest, is it valid, and what does the file say of itself.

This first version reads C2PA manifests with c2pa-python (from anyone: sdkit or others) and the
AUTOMATIC1111-style "parameters" text that sdkit and most generators write. Watermark detection,
trust lists and store lookups build on it.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image, UnidentifiedImageError

from .errors import ManifestError

if TYPE_CHECKING:
    from .detector import Detector

__all__ = ["C2paState", "VerificationReport", "read_infotext", "verify"]

C2paState = Literal["absent", "valid", "trusted", "invalid", "unreadable"]
_MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286

# What the validation codes mean, in words (C2PA 2.x, "Validation" chapter).
EXPLANATIONS: dict[str, str] = {
    "signingCredential.untrusted": "the signer's certificate is not on a trust list you gave",
    "signingCredential.invalid": "the signer's certificate is not valid for signing",
    "signingCredential.expired": "the signer's certificate had expired when it signed",
    "signingCredential.revoked": "the signer's certificate was revoked",
    "claimSignature.mismatch": "the signature does not match the claim: the manifest was altered",
    "claimSignature.missing": "the claim has no signature",
    "assertion.dataHash.mismatch": "the file's bytes changed after signing (pixels or data edited)",
    "assertion.boxesHash.mismatch": "the file's boxes changed after signing",
    "assertion.bmffHash.mismatch": "the media data changed after signing",
    "assertion.hashedURI.mismatch": "an assertion changed after signing",
    "assertion.missing": "an assertion the claim lists is missing",
    "manifest.inaccessible": "the manifest is stored elsewhere (remote) and could not be fetched",
    "cawg.x509.credential.untrusted": "the CAWG identity credential is not trusted",
}


@dataclass(frozen=True)
class VerificationReport:
    """What a file says about where it comes from.

    Attributes:
        path: the file, or ``"<bytes>"``.
        c2pa_state: ``"absent"``, ``"valid"`` (signature and bindings intact, signer not on a
            trust list), ``"trusted"``, ``"invalid"``, or ``"unreadable"``.
        c2pa_codes: failure codes (``signingCredential.untrusted`` is listed when relevant).
        explanations: each failure code in words.
        claim_generator: the software that wrote the active manifest.
        signer: the certificate's issuer / common name as c2pa reports it.
        infotext: AUTOMATIC1111-style generation parameters embedded in the file, if any.
        manifest: the active manifest as c2pa-python reports it (JSON object), if any.
        detector_score: for files without valid Content Credentials, when a detector was
            given: the probability that the image is AI-generated.
        detector_threshold: the detector's threshold for calling an image AI-generated.
    """

    path: str
    c2pa_state: C2paState
    c2pa_codes: tuple[str, ...] = ()
    explanations: tuple[str, ...] = ()
    claim_generator: str | None = None
    signer: str | None = None
    infotext: str | None = None
    manifest: dict[str, Any] | None = field(default=None, repr=False)
    detector_score: float | None = None
    detector_threshold: float | None = None

    @property
    def has_provenance(self) -> bool:
        return self.c2pa_state in ("valid", "trusted")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["c2pa_codes"] = list(self.c2pa_codes)
        data["explanations"] = list(self.explanations)
        return data

    def to_text(self) -> str:
        lines = [f"{self.path}", f"  C2PA: {self.c2pa_state}"]
        if self.claim_generator:
            lines.append(f"  made by: {self.claim_generator}")
        if self.signer:
            lines.append(f"  signed by: {self.signer}")
        for code, text in zip(self.c2pa_codes, self.explanations, strict=True):
            lines.append(f"  - {code}: {text}")
        if self.detector_score is not None:
            verdict = (
                "likely AI-generated"
                if self.detector_threshold is not None
                and self.detector_score >= self.detector_threshold
                else "not flagged"
            )
            lines.append(f"  detector: {self.detector_score:.3f} ({verdict})")
        if self.infotext:
            first = self.infotext.splitlines()[-1]
            lines.append(f"  generation parameters: {first[:200]}")
        else:
            lines.append("  generation parameters: none embedded")
        return "\n".join(lines)


def verify(
    source: str | os.PathLike[str] | bytes, *, detector: Detector | None = None
) -> VerificationReport:
    """Read a file's C2PA manifest and embedded parameters.

    Args:
        source: a path, or the file's bytes.
        detector: when given, files without valid Content Credentials also get its score.

    Raises:
        ManifestError: the file cannot be read at all (missing, not an image).
    """
    if isinstance(source, bytes):
        data, name = source, "<bytes>"
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ManifestError(f"cannot read {path}: {exc.strerror}", path=str(path)) from exc
        name = str(path)
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError) as exc:
        raise ManifestError(f"{name} is not an image file sdkit can read", path=name) from exc
    with image:
        fmt = (image.format or "").lower()
        state, codes, manifest = _read_c2pa(data, _MIME.get(fmt, f"image/{fmt}"))
        infotext = read_infotext(image)
        score = threshold = None
        if detector is not None and state not in ("valid", "trusted"):
            score = float(detector.score([image.convert("RGB")])[0])
            threshold = detector.probe.threshold if detector.probe is not None else None
    active = manifest or {}
    signature = active.get("signature_info") or {}
    return VerificationReport(
        path=name,
        c2pa_state=state,
        c2pa_codes=tuple(codes),
        explanations=tuple(EXPLANATIONS.get(c, "see the C2PA specification") for c in codes),
        claim_generator=_claim_generator(active),
        signer=signature.get("issuer") or signature.get("common_name"),
        infotext=infotext,
        manifest=manifest,
        detector_score=score,
        detector_threshold=threshold,
    )


def _read_c2pa(data: bytes, mime: str) -> tuple[C2paState, list[str], dict[str, Any] | None]:
    from c2pa import C2paError, Reader

    try:
        reader = Reader.try_create(mime, io.BytesIO(data))
    except C2paError as exc:
        if str(exc).startswith("Remote"):
            return "unreadable", ["manifest.inaccessible"], None
        return "unreadable", [type(exc).__name__], None
    if reader is None:
        return "absent", [], None
    with reader:
        try:
            report = json.loads(reader.json())
        except C2paError as exc:
            return "unreadable", [type(exc).__name__], None
    statuses = report.get("validation_status") or []
    codes = [s.get("code", "") for s in statuses]
    state_name = str(report.get("validation_state", "Invalid")).lower()
    state: C2paState = state_name if state_name in ("valid", "trusted") else "invalid"  # type: ignore[assignment]
    manifests = report.get("manifests") or {}
    active = manifests.get(report.get("active_manifest") or "")
    return state, codes, active


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    info = manifest.get("claim_generator_info")
    if isinstance(info, list) and info:
        first = info[0]
        name = first.get("name")
        version = first.get("version")
        return f"{name} {version}" if version else name
    value = manifest.get("claim_generator")
    return value if isinstance(value, str) else None


def read_infotext(source: str | os.PathLike[str] | bytes | Image.Image) -> str | None:
    """Read AUTOMATIC1111-style "parameters" text from an image.

    Looks in a PNG text chunk named ``parameters`` and in EXIF UserComment (JPEG, WebP), the
    places A1111, sdkit and most generators write it.

    Args:
        source: a path, the file's bytes, or an open PIL image.

    Returns:
        The text, or ``None`` when the image carries none.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)  # type: ignore[assignment]
    if not isinstance(source, Image.Image):
        with Image.open(source) as opened:  # type: ignore[arg-type]
            return read_infotext(opened)
    text = source.info.get("parameters")
    if isinstance(text, str):
        return text
    raw = source.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if isinstance(raw, bytes):
        if raw.startswith(b"UNICODE\x00"):
            body = raw[8:]
            # piexif (A1111) writes big-endian; some tools write little-endian with a BOM.
            if body.startswith(b"\xff\xfe"):
                return body.decode("utf-16", errors="replace")
            return body.decode("utf-16-be", errors="replace")
        if raw.startswith(b"ASCII\x00\x00\x00"):
            return raw[8:].decode("ascii", errors="replace")
    return raw if isinstance(raw, str) else None
