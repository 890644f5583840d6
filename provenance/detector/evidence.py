"""Is this image AI-generated? One report from all the evidence a file carries.

Three kinds of evidence, strongest first (docs/detector.md says what each proves and what not):

1. **Declarations** (:mod:`provenance.detector.declarations`): a C2PA manifest of any vendor with
   an AI digital source type, IPTC ``DigitalSourceType`` in XMP, generation parameters written by
   A1111, ComfyUI, NovelAI or InvokeAI.
2. **Known watermarks**: sdkit's own (:func:`provenance.watermark.extract`) and the public marks
   of :mod:`provenance.detector.known_watermarks`, each accepted only on an exact match.
3. **The pixel probe**: a :class:`provenance.detector.Detector` (by default UnivFD's published
   head on CLIP ViT-L/14), a probability.

The verdict, and which evidence decided it:

====================  =========================================================================
verdict               when
====================  =========================================================================
``ai_generated``      a declaration or a known watermark was found: near-certain (``decided_by``
                      names ``declaration`` and/or ``watermark``)
``likely_ai``         nothing declared or marked; the probe's score reaches its threshold
``not_flagged``       nothing declared or marked; the probe's score is below its threshold
``no_evidence``       nothing declared or marked, and the probe did not run
====================  =========================================================================

``not_flagged`` and ``no_evidence`` never mean "a real photo": a stripped file has no
declaration, an absent watermark proves nothing, and the probe misses many AI images.

Example:
    >>> report = EvidenceReport("a.png", "no_evidence", notes=("the pixel probe did not run",))
    >>> print(report.to_text())
    a.png: NO EVIDENCE FOUND (nothing declared or marked; the pixel probe did not run)
      declarations: none
      known watermarks: none found
      pixel probe: did not run
      note: the pixel probe did not run
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image

from ..manifest import ManifestReading
from ..watermark import Detection
from .declarations import Declaration, find_declarations
from .known_watermarks import MAX_MARK_PIXELS, find_known_marks

if TYPE_CHECKING:
    from .detector import Detector

__all__ = [
    "PROBE_NOT_RUN",
    "EvidenceReport",
    "EvidenceVerdict",
    "MarkFound",
    "assess",
    "assess_image",
    "describe_probe",
]

#: ``ai_generated``, ``likely_ai``, ``not_flagged`` or ``no_evidence`` (module docstring).
EvidenceVerdict = Literal["ai_generated", "likely_ai", "not_flagged", "no_evidence"]

PROBE_NOT_RUN = "the pixel probe did not run; declarations and watermarks were still checked"


@dataclass(frozen=True)
class MarkFound:
    """A known watermark decoded from the pixels (exact match).

    Attributes:
        name: ``sdkit``, ``diffusers-sdxl``, ``sd1-script`` or ``sd2-script``.
        made_by: who embeds it.
        source: where the mark is defined.
    """

    name: str
    made_by: str
    source: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "made_by": self.made_by, "source": self.source}


@dataclass(frozen=True)
class EvidenceReport:
    """What a file's metadata, watermarks and pixels say about being AI-generated.

    Attributes:
        path: the file.
        verdict: see the module docstring.
        decided_by: ``declaration``, ``watermark`` (near-certain) or ``probe`` (a probability);
            empty for ``no_evidence``.
        declarations: statements in the file that it is AI-generated.
        watermarks: known watermarks found in the pixels.
        probe_score: the probe's probability that the image is AI-generated (``None``: not run).
        probe_threshold: the score at which the probe calls an image AI-generated.
        probe: which probe, in words.
        notes: caveats and what was not checked.
    """

    path: str
    verdict: EvidenceVerdict
    decided_by: tuple[str, ...] = ()
    declarations: tuple[Declaration, ...] = ()
    watermarks: tuple[MarkFound, ...] = ()
    probe_score: float | None = None
    probe_threshold: float | None = None
    probe: str | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON object (``provenance/schemas/detect-report.schema.json``)."""
        return {
            "path": self.path,
            "verdict": self.verdict,
            "decided_by": list(self.decided_by),
            "declarations": [d.to_dict() for d in self.declarations],
            "watermarks": [m.to_dict() for m in self.watermarks],
            "probe_score": self.probe_score,
            "probe_threshold": self.probe_threshold,
            "probe": self.probe,
            "notes": list(self.notes),
        }

    def to_text(self) -> str:
        """The report in words, for people."""
        lines = [f"{self.path}: {_headline(self)}"]
        if self.declarations:
            for d in self.declarations:
                signed = " [signed, valid]" if d.signed else ""
                lines.append(f"  declaration: {d.detail}{signed}")
        else:
            lines.append("  declarations: none")
        if self.watermarks:
            lines += [f"  known watermark: {m.name} ({m.made_by})" for m in self.watermarks]
        else:
            lines.append("  known watermarks: none found")
        lines.append(f"  pixel probe: {_probe_line(self)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _headline(r: EvidenceReport) -> str:
    if r.verdict == "ai_generated":
        why = " and ".join(
            {"declaration": "declared in the file", "watermark": "a known watermark"}[d]
            for d in r.decided_by
        )
        return f"AI-GENERATED (near-certain: {why})"
    if r.verdict == "likely_ai":
        return (
            f"LIKELY AI-GENERATED (pixel probe only: {r.probe_score:.3f}, a probability, not proof)"
        )
    if r.verdict == "not_flagged":
        return (
            f"NOT FLAGGED (pixel probe only: {r.probe_score:.3f}; nothing declared or marked, "
            "which does not prove the image is real)"
        )
    return "NO EVIDENCE FOUND (nothing declared or marked; the pixel probe did not run)"


def _probe_line(r: EvidenceReport) -> str:
    if r.probe_score is None:
        return "did not run"
    threshold = 0.5 if r.probe_threshold is None else r.probe_threshold
    flagged = "AI-generated" if r.probe_score >= threshold else "real"
    return f"{r.probe_score:.3f} ({flagged} at threshold {threshold:.3f}; {r.probe or 'probe'})"


def _verdict(
    declarations: Sequence[Declaration],
    marks: Sequence[MarkFound],
    score: float | None,
    threshold: float | None,
) -> tuple[EvidenceVerdict, tuple[str, ...]]:
    decided = tuple(
        name for name, items in (("declaration", declarations), ("watermark", marks)) if items
    )
    if decided:
        return "ai_generated", decided
    if score is None:
        return "no_evidence", ()
    return ("likely_ai" if score >= (0.5 if threshold is None else threshold) else "not_flagged"), (
        "probe",
    )


def assess_image(
    name: str,
    image: Image.Image,
    pixels: Image.Image | None,
    reading: ManifestReading | None,
    *,
    sdkit_mark: Detection | None,
    probe_score: float | None = None,
    probe_threshold: float | None = None,
    probe: str | None = None,
    notes: Sequence[str] = (),
) -> EvidenceReport:
    """The report from what the caller already read (``verify`` uses this).

    Args:
        name: the file's name.
        image: the opened file (its metadata is read).
        pixels: the decoded pixels (``None``: not decoded; no watermark is searched).
        reading: the file's C2PA reading.
        sdkit_mark: sdkit's watermark, when the caller found one.
        probe_score, probe_threshold, probe: the probe's result, when it ran.
        notes: caveats to keep (e.g. why the probe did not run).
    """
    declarations = find_declarations(image, reading)
    marks: list[MarkFound] = []
    if sdkit_mark is not None:
        p = sdkit_mark.payload
        marks.append(
            MarkFound(
                "sdkit",
                f"{sdkit_mark.method}, issuer {p.issuer_id}, content id {p.hex}",
                "provenance.watermark",
            )
        )
    more = list(notes)
    if pixels is not None:
        marks += [MarkFound(m.name, m.made_by, m.source) for m in find_known_marks(pixels)]
        if pixels.width * pixels.height > MAX_MARK_PIXELS:
            more.append(
                f"the public marks were not searched: {pixels.width}x{pixels.height} is over "
                f"{MAX_MARK_PIXELS:,} pixels (generators write them at their output size)"
            )
    else:
        more.append("the pixels were not decoded: no watermark was searched")
    verdict, decided = _verdict(declarations, marks, probe_score, probe_threshold)
    if verdict in ("likely_ai", "not_flagged"):
        more.append(
            "the probe alone decided: a probability with known failure modes (new generators, "
            "resized or recompressed images, unusual cameras); see docs/detector.md"
        )
    return EvidenceReport(
        name,
        verdict,
        decided,
        declarations,
        tuple(marks),
        probe_score,
        probe_threshold if probe_score is not None else None,
        probe if probe_score is not None else None,
        tuple(more),
    )


def assess(
    source: str | os.PathLike[str] | bytes,
    *,
    detector: Detector | None = None,
    probe_note: str | None = None,
    max_pixels: int | None = None,
    sdkit_watermark: bool = True,
) -> EvidenceReport:
    """Read one file and report all the evidence.

    Args:
        source: a path or the file's bytes (read as ``verify`` reads them: regular files, at
            most ``MAX_FILE_BYTES``, decompression bombs refused).
        detector: the pixel probe; ``None`` skips it (the report says so).
        probe_note: why the probe did not run (default: :data:`PROBE_NOT_RUN`).
        max_pixels: decode at most this many pixels (default: ``verify``'s).
        sdkit_watermark: search for sdkit's own watermark too (the slowest check, about
            0.2 s at 512 px on an idle CPU); the public marks are always searched.

    Raises:
        ManifestError: the file cannot be read or is not an image.
        DetectorError: the probe cannot score the pixels (e.g. smaller than its crop).
    """
    from .._image_input import DEFAULT_MAX_PIXELS, decode_image, read_file
    from ..manifest import read_manifest
    from ..watermark import extract

    data, name = read_file(source)
    decoded = decode_image(data, name, max_pixels or DEFAULT_MAX_PIXELS)
    mime = f"image/{decoded.fmt or 'png'}"
    reading = read_manifest(data, mime)
    pixels = decoded.pixels
    rgb = pixels.convert("RGB") if pixels is not None else None
    found = extract(rgb) if rgb is not None and sdkit_watermark else None
    score = threshold = None
    notes: list[str] = []
    label = None
    if detector is not None and rgb is not None:
        score = float(detector.score([rgb])[0])
        threshold = detector.probe.threshold if detector.probe is not None else 0.5
        label = describe_probe(detector)
    elif detector is None:
        notes.append(probe_note or PROBE_NOT_RUN)
    return assess_image(
        name,
        decoded.image,
        rgb,
        reading,
        sdkit_mark=found,
        probe_score=score,
        probe_threshold=threshold,
        probe=label,
        notes=notes,
    )


def describe_probe(detector: Detector) -> str:
    """The probe in words: UnivFD's head, or a trained probe, with its backbone."""
    meta = detector.probe.metadata if detector.probe is not None else {}
    source = meta.get("source")
    name = "UnivFD" if source else "sdkit probe"
    return f"{name} on {detector.backbone.id.describe()}"
