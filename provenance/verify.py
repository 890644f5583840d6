"""One report per file: where does it come from, and can I trust that?

``verify`` reads a file's C2PA manifest (from anyone: sdkit or others) with c2pa-python, looks
for sdkit's invisible watermark, and, when the file's C2PA is gone but the watermark survived,
recovers the manifest from a store and checks it against the pixels. The verdict:

* ``verified``: a valid manifest (embedded, or recovered whose fingerprint matches the pixels).
  A signer outside the trust anchors still counts as verified; ``trusted`` says whether it chains
  to one, and the text says "untrusted signer" plainly.
* ``not_verified``: a manifest that is invalid, remote and not fetched, unreadable, or that does
  not belong to these pixels; or a watermark with no manifest to check it against.
* ``no_provenance``: neither a manifest nor a watermark.

Remote manifests are never fetched unless asked (``fetch_remote=True``).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image, UnidentifiedImageError

from . import fingerprint as fp
from .errors import ManifestError
from .manifest import (
    FINGERPRINT_LABEL,
    RECIPE_LABEL,
    TRAINING_MINING_LABEL,
    WATERMARK_LABEL,
    C2paState,
    ManifestReading,
    find_assertion,
    read_manifest,
)
from .store import ManifestStore, default_store_path
from .watermark import Detection, extract

if TYPE_CHECKING:
    from .detector import Detector

__all__ = ["EXPLANATIONS", "C2paState", "VerificationReport", "read_infotext", "verify"]

Verdict = Literal["verified", "not_verified", "no_provenance"]
_MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
# Codes that a stored manifest shows against a re-encoded copy by design: its hash binds the
# original file's bytes, not the copy's.
_BINDING_CODES = {
    "assertion.dataHash.mismatch",
    "assertion.boxesHash.mismatch",
    "assertion.bmffHash.mismatch",
}

# What the validation codes mean, in words (C2PA 2.x, "Validation" chapter).
EXPLANATIONS: dict[str, str] = {
    "signingCredential.untrusted": "the signer's certificate does not chain to a trust anchor",
    "signingCredential.invalid": "the signer's certificate is not valid for signing",
    "signingCredential.expired": "the signer's certificate had expired when it signed",
    "signingCredential.revoked": "the signer's certificate was revoked",
    "claimSignature.mismatch": "the signature does not match the claim: the manifest was altered",
    "claimSignature.missing": "the claim has no signature",
    "claimSignature.outsideValidity": "signed outside the certificate's validity period",
    "assertion.dataHash.mismatch": "the file's bytes changed after signing (pixels or data edited)",
    "assertion.boxesHash.mismatch": "the file's boxes changed after signing",
    "assertion.bmffHash.mismatch": "the media data changed after signing",
    "assertion.hashedURI.mismatch": "an assertion changed after signing",
    "assertion.missing": "an assertion the claim lists is missing",
    "manifest.inaccessible": "the manifest is stored elsewhere (remote) and was not fetched",
    "cawg.x509.credential.untrusted": "the CAWG identity credential is not trusted",
}


@dataclass(frozen=True)
class VerificationReport:
    """Where a file comes from, as far as its credentials and pixels tell.

    Attributes:
        path: the file, or ``"<bytes>"``.
        verdict: ``"verified"``, ``"not_verified"`` or ``"no_provenance"`` (module docstring).
        c2pa_state: of the embedded manifest: ``absent``, ``valid`` (intact, signer not
            anchored), ``trusted``, ``invalid``, ``remote`` or ``unreadable``.
        trusted: the signer (embedded or recovered manifest) chains to a trust anchor.
        c2pa_codes: failure codes (``signingCredential.untrusted`` included).
        explanations: each code in words.
        problems: why the file is not verified, in words.
        notes: other findings worth a look, in words.
        signer: the signing certificate's common name; ``issuer`` its organisation.
        signed_at: the trusted timestamp of the signature, when it has one.
        claim_generator: the software that wrote the manifest.
        digital_source_type: the IPTC digital source type of the first action, if any.
        recipe: sdkit's Recipe, when the manifest carries one.
        ingredients: each ingredient's title, relationship and whether it has a manifest.
        training_mining: the ``*.training-mining`` uses, if stated.
        watermark: the payload found in the pixels (``None``: none found or not checked).
        watermark_matches_manifest: the payload equals the manifest's (``None``: nothing
            to compare).
        fingerprint_distance: Hamming distance between the pixels' fingerprint and the
            manifest's (``None``: nothing to compare); ``fingerprint_matches`` its verdict.
        recovered_from_store: the manifest came from the store through the watermark.
        remote_url: where a remote manifest lives.
        infotext: AUTOMATIC1111-style generation parameters embedded in the file, if any.
        manifest: the manifest reported on (JSON object), if any.
        detector_score, detector_threshold: for files without a verified manifest, when a
            detector was given.
    """

    path: str
    verdict: Verdict
    c2pa_state: C2paState
    trusted: bool = False
    c2pa_codes: tuple[str, ...] = ()
    explanations: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    signer: str | None = None
    issuer: str | None = None
    signed_at: str | None = None
    claim_generator: str | None = None
    digital_source_type: str | None = None
    recipe: dict[str, Any] | None = field(default=None, repr=False)
    ingredients: tuple[dict[str, Any], ...] = ()
    training_mining: dict[str, Any] | None = None
    watermark: dict[str, Any] | None = None
    watermark_matches_manifest: bool | None = None
    fingerprint_distance: int | None = None
    fingerprint_matches: bool | None = None
    recovered_from_store: bool = False
    remote_url: str | None = None
    infotext: str | None = field(default=None, repr=False)
    manifest: dict[str, Any] | None = field(default=None, repr=False)
    detector_score: float | None = None
    detector_threshold: float | None = None

    @property
    def validation_state(self) -> str | None:
        """The embedded manifest's state in c2pa-python's words (``"Valid"``, ``"Trusted"``,
        ``"Invalid"``), or ``None`` when there is none or it could not be validated."""
        names = {"valid": "Valid", "trusted": "Trusted", "invalid": "Invalid"}
        return names.get(self.c2pa_state)

    @property
    def watermark_found(self) -> bool:
        """Whether sdkit's watermark was found in the pixels."""
        return self.watermark is not None

    @property
    def has_provenance(self) -> bool:
        """Whether the file's provenance was verified."""
        return self.verdict == "verified"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("c2pa_codes", "explanations", "problems", "notes", "ingredients"):
            data[key] = list(data[key])
        return data

    def to_text(self) -> str:
        from ._report_text import render

        return render(self)


def verify(
    source: str | os.PathLike[str] | bytes,
    *,
    trust_anchors: str | os.PathLike[str] | None = None,
    store: ManifestStore | str | os.PathLike[str] | None = None,
    detector: Detector | None = None,
    fetch_remote: bool = False,
    check_watermark: bool = True,
    allow_private: bool = False,
) -> VerificationReport:
    """Verify one file's provenance.

    Args:
        source: a path, or the file's bytes.
        trust_anchors: PEM text, or the path of a PEM file, of the certificates you trust;
            default ``$SDKIT_TRUST_ANCHORS`` when set.
        store: a manifest store (or its path) to recover stripped manifests from; default
            ``$SDKIT_STORE`` when set.
        detector: files without a verified manifest also get its AI-image score.
        fetch_remote: fetch manifests that a file only points to (network access). sdkit
            fetches, not c2pa-rs: http(s) only, loopback / private / link-local addresses
            refused in any spelling and at connect time, each redirect hop checked, at most
            4 MiB in 10 s (:mod:`provenance._remote`); a failed fetch is named in ``problems``.
        check_watermark: look for sdkit's watermark (about 0.2 s at 512 px).
        allow_private: let ``fetch_remote`` reach loopback and private addresses (intranets,
            tests; off by default against SSRF).

    Raises:
        ManifestError: the file cannot be read, is not an image, is truncated, or is larger
            than the decompression-bomb limit; the trust anchors or store cannot be read.
    """
    data, name = _read(source)
    anchors = _anchors(trust_anchors)
    image, fmt, damage = _decode(data, name)
    reading = read_manifest(data, _MIME.get(fmt, f"image/{fmt}"), trust_anchors=anchors,
                            fetch_remote=fetch_remote, allow_private=allow_private)  # fmt: skip
    if damage is not None and reading.state == "absent":
        raise ManifestError(
            f"{name} is truncated or damaged: {damage}",
            path=name,
            hint="the file was cut short or corrupted; get a complete copy.",
        )
    pixels = image if damage is None else None
    found = extract(pixels) if check_watermark and pixels is not None else None
    builder = _Report(name, reading, pixels, found)
    if damage is not None:
        builder.problems.append(f"the image data is damaged ({damage})")
    if reading.state == "absent" and found is not None:
        opened = _open_store(store)
        if opened is not None:
            try:
                builder.recover(opened, anchors)
            finally:
                if opened is not store:  # opened here from a path: close it here
                    opened.close()
    report = builder.finish(read_infotext(image))
    if detector is not None and report.verdict != "verified" and pixels is not None:
        score = float(detector.score([pixels.convert("RGB")])[0])
        threshold = detector.probe.threshold if detector.probe is not None else None
        report = replace(report, detector_score=score, detector_threshold=threshold)
    return report


def _read(source: str | os.PathLike[str] | bytes) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, "<bytes>"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except IsADirectoryError as exc:
        raise ManifestError(f"{path} is a folder", path=str(path)) from exc
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}", path=str(path)) from exc


def _decode(data: bytes, name: str) -> tuple[Image.Image, str, str | None]:
    """Open the image and decode its pixels: (image, format, what is damaged or None).

    Raises:
        ManifestError: not an image, or larger than the decompression-bomb limit.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ManifestError(
            f"{name} is too large to check safely: {exc}",
            path=name,
            hint="images over Pillow's MAX_IMAGE_PIXELS are refused (decompression bombs).",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ManifestError(f"{name} is not an image file sdkit can read", path=name) from exc
    fmt = (image.format or "").lower()
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        return image, fmt, str(exc)
    return image, fmt, None


def _anchors(value: str | os.PathLike[str] | None) -> str | None:
    if isinstance(value, str) and "-----BEGIN" in value:
        return value
    from .credentials import load_trust_anchors

    return load_trust_anchors(value)


def _open_store(value: ManifestStore | str | os.PathLike[str] | None) -> ManifestStore | None:
    if isinstance(value, ManifestStore):
        return value
    path = value if value is not None else default_store_path()
    if path is None:
        return None
    if not Path(path).is_file():
        raise ManifestError(f"manifest store {path} does not exist", path=str(path))
    return ManifestStore(path)


class _Report:
    """Collects the findings for one file, then decides the verdict."""

    def __init__(
        self,
        name: str,
        reading: ManifestReading,
        image: Image.Image | None,
        found: Detection | None,
    ) -> None:
        self.name = name
        self.reading = reading
        self.image = image
        self.found = found
        self.manifest = reading.active
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.recovered = False
        self.recovered_trusted = False
        self.distance: int | None = None
        self.payload_match: bool | None = None
        self._pixels_fingerprint: str | None = None

    def pixels_fingerprint(self) -> str:
        """The fingerprint of the pixels in hand (computed once)."""
        assert self.image is not None
        if self._pixels_fingerprint is None:
            self._pixels_fingerprint = fp.fingerprint(self.image)
        return self._pixels_fingerprint

    def recover(self, store: ManifestStore, anchors: str | None) -> None:
        """Look the watermark's payload up in the store; keep the nearest matching manifest."""
        assert self.found is not None
        entries = store.get(self.found.payload)
        if not entries:
            self.notes.append(f"the store {store.path} has no manifest for this watermark")
            return
        pixels = self.pixels_fingerprint()
        best = min(entries, key=lambda e: fp.distance(e.fingerprint, pixels))
        self.distance = fp.distance(best.fingerprint, pixels)  # the manifest's own, if any, next
        reading = read_manifest(best.manifest, "application/c2pa", trust_anchors=anchors)
        self.manifest = reading.active
        self.recovered = True
        self.recovered_trusted = "signingCredential.trusted" in reading.successes
        broken = [c for c in reading.codes if c not in _BINDING_CODES and c in _FAILURES]
        if reading.active is None or broken:
            self.problems.append(
                "the manifest recovered from the store does not validate: "
                + ", ".join(broken or ["unreadable"])
            )
        self.notes.append(
            "manifest recovered from store: this copy's C2PA metadata was stripped, and its "
            "hash binding covers the original file, not this copy"
        )

    def finish(self, infotext: str | None) -> VerificationReport:
        reading = self.reading
        active = self.manifest or {}
        self._check_watermark(active)
        self._check_fingerprint(active)
        state = reading.state
        trusted = state == "trusted" or (self.recovered and self.recovered_trusted)
        if state == "invalid":
            self.problems.insert(0, "the C2PA manifest is invalid")
        elif state == "remote":
            where = reading.remote_url or "URL unknown"
            self.problems.insert(
                0,
                f"the manifest is remote ({where}) and was not fetched: {reading.error}"
                if reading.error
                else f"the manifest is remote ({where}) and was not fetched; "
                "pass fetch_remote=True / --fetch-remote to fetch it",
            )
        elif state == "unreadable":
            self.problems.insert(0, f"the C2PA data cannot be read ({reading.error})")
        elif state == "absent" and not self.recovered and self.found is not None:
            self.problems.append(
                "an sdkit watermark was found but no manifest to check it against "
                "(give a manifest store: --store)"
            )
        verdict: Verdict
        if self.problems:
            verdict = "not_verified"
        elif state in ("valid", "trusted") or self.recovered:
            verdict = "verified"
        else:
            verdict = "no_provenance"
        codes = reading.codes
        signature = active.get("signature_info") or {}
        return VerificationReport(
            path=self.name,
            verdict=verdict,
            c2pa_state=state,
            trusted=trusted,
            c2pa_codes=codes,
            explanations=tuple(EXPLANATIONS.get(c, "see the C2PA specification") for c in codes),
            problems=tuple(self.problems),
            notes=tuple(self.notes),
            signer=signature.get("common_name"),
            issuer=signature.get("issuer"),
            signed_at=signature.get("time"),
            claim_generator=_claim_generator(active),
            digital_source_type=_source_type(active),
            recipe=find_assertion(active, RECIPE_LABEL),
            ingredients=tuple(_ingredient(i) for i in active.get("ingredients") or []),
            training_mining=_training_mining(active),
            watermark=None if self.found is None else self.found.to_dict(),
            watermark_matches_manifest=self.payload_match,
            fingerprint_distance=self.distance,
            fingerprint_matches=None
            if self.distance is None
            else self.distance <= fp.MATCH_DISTANCE,
            recovered_from_store=self.recovered,
            remote_url=reading.remote_url,
            infotext=infotext,
            manifest=self.manifest,
        )

    def _check_watermark(self, active: dict[str, Any]) -> None:
        claimed = find_assertion(active, WATERMARK_LABEL)
        if not isinstance(claimed, dict):
            return
        if not claimed.get("embedded"):
            self.notes.append(f"no watermark was embedded: {claimed.get('reason', 'no reason')}")
            return
        if self.found is None:
            if self.image is not None:
                self.notes.append("the manifest records a watermark not found in the pixels")
            return
        payload = claimed.get("payload") or {}
        ours = self.found.payload
        self.payload_match = (
            payload.get("content_id") == f"{ours.content_id:012x}"
            and payload.get("issuer_id") == ours.issuer_id
        )
        if not self.payload_match:
            self.problems.append("the watermark in the pixels differs from the manifest's")

    def _check_fingerprint(self, active: dict[str, Any]) -> None:
        claimed = find_assertion(active, FINGERPRINT_LABEL)
        if self.image is None:
            return
        if isinstance(claimed, dict) and claimed.get("algorithm") == fp.ALGORITHM:
            self.distance = fp.distance(str(claimed.get("value")), self.pixels_fingerprint())
        elif self.recovered:
            self.problems.append(
                "the recovered manifest records no fingerprint to check against the pixels"
            )
        if self.distance is None:
            return
        if self.distance > fp.MATCH_DISTANCE:
            self.problems.append(
                f"the manifest's fingerprint does not match these pixels (distance "
                f"{self.distance} > {fp.MATCH_DISTANCE}): it belongs to another image"
            )


_FAILURES = set(EXPLANATIONS) - {"signingCredential.untrusted", "cawg.x509.credential.untrusted"}


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    info = manifest.get("claim_generator_info")
    if isinstance(info, list) and info:
        first = info[0]
        name = first.get("name")
        version = first.get("version")
        return f"{name} {version}" if version else name
    value = manifest.get("claim_generator")
    return value if isinstance(value, str) else None


def _source_type(manifest: dict[str, Any]) -> str | None:
    actions = find_assertion(manifest, "c2pa.actions")
    for action in (actions or {}).get("actions") or []:
        kind = action.get("digitalSourceType")
        if kind:
            return str(kind).rsplit("/", 1)[-1]
    return None


def _ingredient(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": item.get("title"),
        "relationship": item.get("relationship"),
        "has_manifest": bool(item.get("active_manifest")),
    }


def _training_mining(manifest: dict[str, Any]) -> dict[str, Any] | None:
    for label in (TRAINING_MINING_LABEL, "c2pa.training-mining"):
        data = find_assertion(manifest, label)
        if isinstance(data, dict):
            entries = data.get("entries") or {}
            return {k: v.get("use") for k, v in entries.items() if isinstance(v, dict)}
    return None


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
        with Image.open(source) as opened:
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
