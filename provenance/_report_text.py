"""A VerificationReport in words, for people (the CLI's default output)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .verify import VerificationReport

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


def render(report: VerificationReport) -> str:
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
    return "\n".join(lines)


def _watermark_line(report: VerificationReport) -> str:
    if report.watermark is None:
        return "none found" if report.pixels_checked else "not searched"
    payload: dict[str, Any] = report.watermark["payload"]
    text = f"found (issuer {payload['issuer_id']}, content id {payload['hex']})"
    if report.watermark_matches_manifest is True:
        text += ", matches the manifest"
    elif report.watermark_matches_manifest is False:
        text += ", DIFFERS from the manifest"
    return text


def _recipe_line(recipe: dict[str, Any]) -> str:
    keys = ("prompt", "model", "sampler", "steps", "guidance_scale", "seed", "width", "height")
    parts = [f"{k}={recipe[k]!r}" for k in keys if k in recipe]
    return ", ".join(parts)[:240]
