"""One report per file: where does it come from, and can I trust that?

``verify`` reads a file's C2PA manifest (from anyone: sdkit or others) with c2pa-python, looks
for sdkit's invisible watermark, and, when the file's C2PA is gone but the watermark survived,
recovers the manifest from a store and checks it against the pixels. The verdict:

* ``verified``: a valid manifest embedded in the file, its hash binding intact. A signer outside
  the trust anchors still counts as verified; ``trusted`` says whether it chains to one, and
  the text says "untrusted signer" plainly.
* ``similar``: a valid manifest recovered from the store through the watermark, whose
  fingerprint is within ``MATCH_DISTANCE`` of these pixels' (0 included): a stripped copy,
  re-encoded, resized or locally edited (text written over it, say); the fingerprint cannot
  tell which, and no hash binding ties the manifest to these bytes. The manifest vouches for
  the signed image, not for these pixels.
* ``not_verified``: a manifest that is invalid, remote and not fetched, unreadable, malformed
  (sdkit's assertions), or that does not belong to these pixels; or a watermark with no manifest
  to check it against.
* ``no_provenance``: neither a manifest nor a watermark.

Remote manifests are never fetched unless asked (``fetch_remote=True``).

Hostile files: only regular files are read, at most :data:`MAX_FILE_BYTES`; images over
Pillow's decompression-bomb limit are refused; images over ``max_pixels`` (default
:data:`DEFAULT_MAX_PIXELS`) are not decoded (JPEGs are decoded at 1/2, 1/4 or 1/8 scale when
that fits), so their watermark is not searched and the report says so; the watermark search
itself runs on at most :data:`provenance.watermark.SEARCH_PIXELS`. Every manifest field is
checked before use (:mod:`provenance._manifest_facts`).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING

from PIL import Image

from . import fingerprint as fp
from ._image_input import DEFAULT_MAX_PIXELS, MAX_FILE_BYTES, decode_image, read_file, read_infotext
from ._manifest_facts import ManifestFacts
from .errors import ManifestError, ProvenanceError
from .manifest import ManifestReading, read_manifest
from .report import EXPLANATIONS, C2paState, Verdict, VerificationReport
from .store import ManifestStore, default_store_path
from .watermark import Detection, extract

if TYPE_CHECKING:
    from .detector import Detector

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "EXPLANATIONS",
    "MAX_FILE_BYTES",
    "C2paState",
    "Verdict",
    "VerificationReport",
    "read_infotext",
    "verify",
]

_MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
# Codes that a stored manifest shows against a re-encoded copy by design: its hash binds the
# original file's bytes, not the copy's.
_BINDING_CODES = {
    "assertion.dataHash.mismatch",
    "assertion.boxesHash.mismatch",
    "assertion.bmffHash.mismatch",
}


def verify(
    source: str | os.PathLike[str] | bytes,
    *,
    trust_anchors: str | os.PathLike[str] | None = None,
    store: ManifestStore | str | os.PathLike[str] | None = None,
    detector: Detector | None = None,
    fetch_remote: bool = False,
    check_watermark: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_private: bool = False,
) -> VerificationReport:
    """Verify one file's provenance.

    Args:
        source: a path (a regular file of at most :data:`MAX_FILE_BYTES`), or the file's bytes.
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
        max_pixels: decode at most this many pixels for the watermark and fingerprint checks.
            A larger image is not decoded (a JPEG is decoded at 1/2, 1/4 or 1/8 scale when
            that fits); its C2PA manifest is still checked, and the report notes that the
            watermark was not searched.
        allow_private: let ``fetch_remote`` reach loopback and private addresses (intranets,
            tests; off by default against SSRF).

    Raises:
        ManifestError: the file cannot be read, is not a regular file, is larger than
            :data:`MAX_FILE_BYTES`, is not an image, is truncated, or is larger than the
            decompression-bomb limit; the trust anchors or store cannot be read.
        ProvenanceError: ``max_pixels`` is not a positive whole number.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ProvenanceError(
            f"max_pixels must be a positive whole number, not {max_pixels!r}",
            hint=f"the default is {DEFAULT_MAX_PIXELS:,}.",
        )
    data, name = read_file(source)
    anchors = _anchors(trust_anchors)
    decoded = decode_image(data, name, max_pixels)
    mime = _MIME.get(decoded.fmt, f"image/{decoded.fmt}")
    reading = _read_manifest(data, mime, anchors, fetch_remote, allow_private)
    if decoded.damage is not None and reading.state in ("absent", "unreadable"):
        # nothing readable to report on: no manifest (or none c2pa-rs can parse in a file cut
        # short, "PNG out of range") and no pixels
        also = "" if reading.error is None else f"; its C2PA data: {reading.error[:200]}"
        raise ManifestError(
            f"{name} is truncated or damaged: {decoded.damage}{also}",
            path=name,
            hint="the file was cut short or corrupted; get a complete copy.",
        )
    pixels = decoded.pixels
    found = extract(pixels) if check_watermark and pixels is not None else None
    builder = _Report(name, reading, pixels, found)
    if decoded.damage is not None:
        builder.problems.append(f"the image data is damaged ({decoded.damage})")
    if decoded.too_large is not None:
        builder.notes.append(
            f"the watermark was not searched and the fingerprint not checked: the image has "
            f"{decoded.too_large:,} pixels > max_pixels {max_pixels:,} (raise --max-pixels / "
            "max_pixels= to check it)"
        )
    if reading.state == "absent" and found is not None:
        opened = _open_store(store)
        if opened is not None:
            try:
                builder.recover(opened, anchors)
            finally:
                if opened is not store:  # opened here from a path: close it here
                    opened.close()
    report = builder.finish(decoded.infotext)
    if detector is not None and report.verdict != "verified" and pixels is not None:
        score = float(detector.score([pixels.convert("RGB")])[0])
        threshold = detector.probe.threshold if detector.probe is not None else None
        report = replace(report, detector_score=score, detector_threshold=threshold)
    if report.verdict != "verified":  # is it AI-generated? declarations, public marks, probe
        from .detector.evidence import PROBE_NOT_RUN, assess_image

        evidence = assess_image(
            name,
            decoded.image,
            pixels if check_watermark else None,
            reading,
            sdkit_mark=found,
            probe_score=report.detector_score,
            probe_threshold=report.detector_threshold,
            probe="the given probe" if detector is not None else None,
            notes=() if detector is not None else (PROBE_NOT_RUN + " (pass --probe)",),
        )
        report = replace(report, evidence=evidence.to_dict())
    return report


def _read_manifest(
    data: bytes, mime: str, anchors: str | None, fetch_remote: bool, allow_private: bool
) -> ManifestReading:
    """The file's manifest; with ``fetch_remote``, one that it only points to is fetched here,
    under sdkit's SSRF policy (:mod:`provenance._remote`), and read with the file."""
    reading = read_manifest(data, mime, trust_anchors=anchors)
    url = reading.remote_url
    if not fetch_remote or reading.state != "remote" or url is None:
        return reading
    from ._remote import fetch_manifest

    fetched = fetch_manifest(url, allow_private=allow_private)
    if fetched.data is None:  # why: the SSRF refusal, a timeout, an HTTP error...
        return replace(reading, error=fetched.failure)
    return read_manifest(data, mime, trust_anchors=anchors, remote=(url, fetched.data))


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
    return ManifestStore(path, create=False)  # StoreError: missing, not SQLite, other schema


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
        self.facts = reading.facts
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
        self.facts = reading.facts
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
        reading, facts = self.reading, self.facts
        self.problems += [f"malformed sdkit assertion: {m}" for m in facts.malformed]
        self.notes += [f"malformed assertion ignored: {m}" for m in facts.ignored]
        self._check_watermark(facts)
        self._check_fingerprint(facts)
        state = reading.checked_state
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
        elif self.recovered:
            # Never "verified": no hash binding ties a recovered manifest to these bytes (C2PA's
            # soft-binding lookup), and a 64-bit fingerprint is not proof that no pixel changed.
            # One verdict at every distance, so the same kind of copy (a JPEG re-share) does not
            # get 0 or 5 by the chance of its fingerprint's last bits.
            verdict = "similar"
            self.notes.insert(
                0,
                f"pixels differ from the signed image's: fingerprint distance {self.distance} "
                "(0 for the same pixels): a re-encoded, resized or locally edited copy (text "
                "written over it, say); the manifest vouches for the signed image, not for "
                "these pixels"
                if self.distance
                else "the copy's fingerprint equals the signed image's (distance 0), which "
                "proves it looks the same at 32 x 32, not that no pixel changed: small local "
                "edits (a word of text over a few hundred pixels) can leave it unchanged; only "
                "an embedded manifest's hash binding proves the pixels",
            )
        elif state in ("valid", "trusted"):
            verdict = "verified"
        else:
            verdict = "no_provenance"
        codes = reading.codes
        return VerificationReport(
            path=self.name,
            verdict=verdict,
            c2pa_state=state,
            trusted=trusted,
            c2pa_codes=codes,
            explanations=tuple(EXPLANATIONS.get(c, "see the C2PA specification") for c in codes),
            problems=tuple(self.problems),
            notes=tuple(self.notes),
            signer=facts.signer,
            issuer=facts.issuer,
            signed_at=facts.signed_at,
            claim_generator=facts.claim_generator,
            digital_source_type=facts.digital_source_type,
            recipe=facts.recipe,
            ingredients=facts.ingredients,
            training_mining=facts.training_mining,
            watermark=None if self.found is None else self.found.to_dict(),
            watermark_matches_manifest=self.payload_match,
            fingerprint_distance=self.distance,
            fingerprint_matches=None
            if self.distance is None
            else self.distance <= fp.MATCH_DISTANCE,
            recovered_from_store=self.recovered,
            remote_url=reading.remote_url,
            pixels_checked=self.image is not None,
            infotext=infotext,
            manifest=self.manifest,
        )

    def _check_watermark(self, facts: ManifestFacts) -> None:
        claimed = facts.watermark
        if claimed is None:
            return
        if not claimed.embedded:
            self.notes.append(f"no watermark was embedded: {claimed.reason}")
            return
        if self.found is None:
            if self.image is not None:
                self.notes.append("the manifest records a watermark not found in the pixels")
            return
        ours = self.found.payload
        self.payload_match = (
            claimed.content_id == f"{ours.content_id:012x}" and claimed.issuer_id == ours.issuer_id
        )
        if not self.payload_match:
            self.problems.append("the watermark in the pixels differs from the manifest's")

    def _check_fingerprint(self, facts: ManifestFacts) -> None:
        if self.image is None:
            return
        if facts.fingerprint is not None:
            self.distance = fp.distance(facts.fingerprint, self.pixels_fingerprint())
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
