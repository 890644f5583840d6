"""A file's VerificationReport: the verdict, the findings, and the report as JSON and in words.

A leaf module: the report types know nothing of how a report is made
(:mod:`provenance.verify` makes them), so the reader, the verifier and the CLI all import them
from here without a cycle.

Example:
    >>> report = VerificationReport("a.png", "no_provenance", "absent", pixels_checked=False)
    >>> report.to_dict()["verdict"], report.watermark_found
    ('no_provenance', False)
    >>> print(report.to_text())
    a.png: NO PROVENANCE
      C2PA manifest: none in the file
      watermark: not searched
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .manifest import C2paState

__all__ = ["EXPLANATIONS", "C2paState", "Verdict", "VerificationReport"]

#: ``verified``, ``similar``, ``not_verified`` or ``no_provenance`` (:mod:`provenance.verify`).
Verdict = Literal["verified", "similar", "not_verified", "no_provenance"]

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
        verdict: ``"verified"``, ``"similar"``, ``"not_verified"`` or ``"no_provenance"``
            (module docstring).
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
            manifest's (``None``: nothing to compare); ``fingerprint_matches`` its verdict
            (at most ``MATCH_DISTANCE``: the same picture, not necessarily the same pixels).
        recovered_from_store: the manifest came from the store through the watermark.
        remote_url: where a remote manifest lives.
        pixels_checked: the pixels were decoded and checked; ``False`` when the image is
            damaged or has more than ``max_pixels`` pixels (``notes`` says which).
        infotext: AUTOMATIC1111-style generation parameters embedded in the file, if any.
        manifest: the manifest reported on (JSON object), if any.
        detector_score, detector_threshold: for files without a verified manifest, when a
            detector was given.
        evidence: for files without a verified manifest, whether the file is AI-generated
            from all it carries (:meth:`provenance.detector.EvidenceReport.to_dict`:
            declarations, known watermarks, the probe).
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
    ingredients: tuple[dict[str, str | bool | None], ...] = ()
    training_mining: dict[str, str | None] | None = None
    watermark: dict[str, Any] | None = None
    watermark_matches_manifest: bool | None = None
    fingerprint_distance: int | None = None
    fingerprint_matches: bool | None = None
    recovered_from_store: bool = False
    remote_url: str | None = None
    pixels_checked: bool = True
    infotext: str | None = field(default=None, repr=False)
    manifest: dict[str, Any] | None = field(default=None, repr=False)
    detector_score: float | None = None
    detector_threshold: float | None = None
    evidence: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def watermark_found(self) -> bool:
        """Whether sdkit's watermark was found in the pixels."""
        return self.watermark is not None

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON object (tuples as lists), for machines."""
        data = asdict(self)
        for key in ("c2pa_codes", "explanations", "problems", "notes", "ingredients"):
            data[key] = list(data[key])
        return data

    def to_text(self) -> str:
        """The report in words, for people (the CLI's default output)."""
        return _render(self)


_HEADLINES = {
    "verified": "VERIFIED",
    "similar": "SIMILAR TO A SIGNED IMAGE (MANIFEST RECOVERED FROM THE STORE)",
    "not_verified": "NOT VERIFIED",
    "no_provenance": "NO PROVENANCE",
}
_STATES = {
    "absent": "none in the file",
    "valid": "valid signature, hash binding intact",
    "trusted": "valid and trusted",
    "invalid": "INVALID",
    "remote": "stored remotely (not fetched)",
    "unreadable": "present but unreadable",
}


def _render(report: VerificationReport) -> str:
    headline = _HEADLINES[report.verdict]
    if report.verdict == "similar":
        headline += f" (fingerprint distance {report.fingerprint_distance})"
    if report.verdict in ("verified", "similar"):
        headline += " (trusted signer)" if report.trusted else " (untrusted signer)"
    lines = [f"{report.path}: {headline}"]
    add = lines.append
    add(f"  C2PA manifest: {_STATES[report.c2pa_state]}")
    if report.recovered_from_store:
        add("  manifest recovered from store (matched through the watermark)")
    for problem in report.problems:
        add(f"  ! {problem}")
    for code, text in zip(report.c2pa_codes, report.explanations, strict=True):
        add(f"  - {code}: {text}")
    if report.manifest is not None:
        add(
            f"  signed by: {report.signer or 'unknown'}"
            + ("" if report.trusted else " [untrusted]")
        )
        if report.issuer:
            add(f"  issuer: {report.issuer}")
        add(f"  signed at: {report.signed_at or 'no trusted timestamp'}")
        if report.claim_generator:
            add(f"  made with: {report.claim_generator}")
        if report.digital_source_type:
            add(f"  source type: {report.digital_source_type}")
        for item in report.ingredients:
            kind = "with its own manifest" if item["has_manifest"] else "without a manifest"
            add(f"  ingredient: {item['title']} ({item['relationship']}, {kind})")
        if report.training_mining:
            uses = ", ".join(
                f"{k.split('.', 1)[-1]}={v}" for k, v in report.training_mining.items()
            )
            add(f"  training and mining: {uses}")
        if report.recipe:
            add(f"  recipe: {_recipe_line(report.recipe)}")
    add(f"  watermark: {_watermark_line(report)}")
    if report.fingerprint_distance is not None:
        verdict = "matches" if report.fingerprint_matches else "DOES NOT MATCH"
        if report.fingerprint_matches and report.fingerprint_distance:
            verdict = "is near"
        add(f"  fingerprint: {verdict} the pixels (distance {report.fingerprint_distance})")
    for note in report.notes:
        add(f"  note: {note}")
    if report.detector_score is not None:
        flagged = (
            report.detector_threshold is not None
            and report.detector_score >= report.detector_threshold
        )
        verdict = "likely AI-generated" if flagged else "not flagged"
        add(f"  detector: {report.detector_score:.3f} ({verdict})")
    if report.infotext:
        add(f"  generation parameters: {report.infotext.splitlines()[-1][:200]}")
    if report.evidence is not None:
        add(f"  AI-generated? {_evidence_line(report.evidence)}")
    return "\n".join(lines)


def _evidence_line(evidence: dict[str, Any]) -> str:
    found = [f"declared ({d['source']})" for d in evidence["declarations"]]
    found += [f"known watermark ({m['name']})" for m in evidence["watermarks"]]
    verdict = str(evidence["verdict"]).replace("_", " ")
    if evidence["probe_score"] is not None:
        found.append(f"probe {evidence['probe_score']:.3f}")
    return f"{verdict}: {', '.join(found) or 'nothing declared or marked'} (sdkit detect explains)"


def _watermark_line(report: VerificationReport) -> str:
    if report.watermark is None:
        return "none found" if report.pixels_checked else "not searched"
    payload: dict[str, Any] = report.watermark["payload"]
    text = f"found (issuer {payload['issuer_id']}, content id {payload['hex']}"
    text += f", method {report.watermark.get('method', 'sdkit-ss1')}"
    region = report.watermark.get("region")
    if region is not None:  # sdkit-ss2 says where: box (left, top, right, bottom), agreeing share
        left, top, right, bottom = region["box"]
        text += f", in ({left}, {top})-({right}, {bottom}), {region['share']:.0%} of blocks agree"
    text += ")"
    if report.watermark_matches_manifest is True:
        text += ", matches the manifest"
    elif report.watermark_matches_manifest is False:
        text += ", DIFFERS from the manifest"
    return text


def _recipe_line(recipe: dict[str, Any]) -> str:
    keys = ("prompt", "model", "sampler", "steps", "guidance_scale", "seed", "width", "height")
    parts = [f"{k}={recipe[k]!r}" for k in keys if k in recipe]
    return ", ".join(parts)[:240]
