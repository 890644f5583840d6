"""Fuzzing ``verify`` with byte mutations of files signed as sdkit signs its outputs.

Each case takes a signed, watermarked PNG, JPEG or WebP (256x256, development credentials) and
flips, overwrites, deletes, inserts or cuts bytes anywhere: in the pixels, the C2PA manifest
store, the metadata, the container's own lengths.

Targets: :func:`provenance.verify.verify` (with and without the watermark search) and
:meth:`provenance.optout.OptOutChecker.check` on the same bytes. Property: a report or a
:class:`~provenance.errors.ManifestError`, within a CPU bound; and a file whose pixels differ
from the signed ones is never ``verified``.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from fuzzing import bounded, budget
from hypothesis import event, given, settings
from hypothesis import strategies as st
from optout_images import credentials, encode, picture
from PIL import Image

from provenance.errors import ProvenanceError
from provenance.optout import Decision, OptOutChecker
from provenance.stamp import Stamper
from provenance.verify import VerificationReport, verify

FORMATS = ("png", "jpeg", "webp")


class Signed(dict[str, tuple[bytes, bytes]]):
    """format -> (signed bytes, their decoded RGB pixels); a short repr for failure reports."""

    def __repr__(self) -> str:
        return "<signed 256x256 PNG, JPEG and WebP>"


def _pixels(data: bytes) -> bytes | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB").tobytes()
    except Exception:
        return None


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Signed:
    stamper = Stamper(credentials(tmp_path_factory.mktemp("verify-fuzz")), watermark=True)
    files = Signed()
    for fmt in FORMATS:
        marked, record = stamper.watermark(picture(7, (256, 256)))
        data = stamper.sign(encode(marked, fmt), fmt, title=f"x.{fmt}", record=record)
        pixels = _pixels(data)
        assert pixels is not None and verify(data).verdict == "verified", fmt
        files[fmt] = (data, pixels)
    return files


@st.composite
def mutations(draw: st.DrawFn, size: int) -> list[tuple[str, int, Any]]:
    """1 to 4 edits: flip a byte, overwrite a run, delete a run, insert bytes, cut the tail."""
    edits: list[tuple[str, int, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip"] * 4 + ["overwrite"] * 2 + ["delete", "insert", "cut"]))
        at = draw(st.integers(0, size - 1))
        if kind == "flip":
            edits.append((kind, at, draw(st.integers(1, 255))))
        elif kind in ("overwrite", "insert"):
            edits.append((kind, at, draw(st.binary(min_size=1, max_size=16))))
        else:
            edits.append((kind, at, draw(st.integers(1, 64))))
    return edits


def mutate(data: bytes, edits: list[tuple[str, int, Any]]) -> bytes:
    out = bytearray(data)
    for kind, at, arg in edits:
        at = min(at, max(len(out) - 1, 0))
        if kind == "flip" and out:
            out[at] ^= arg
        elif kind == "overwrite":
            out[at : at + len(arg)] = arg
        elif kind == "delete":
            del out[at : at + arg]
        elif kind == "insert":
            out[at:at] = arg
        elif kind == "cut":
            del out[at:]
    return bytes(out)


def _check(report: object, mutated: bytes, original: bytes, pixels: bytes) -> None:
    assert isinstance(report, (VerificationReport, ProvenanceError)), repr(report)
    event(report.verdict if isinstance(report, VerificationReport) else type(report).__name__)
    if isinstance(report, VerificationReport):
        report.to_dict()
        report.to_text()
        if report.verdict == "verified" and mutated != original:
            assert _pixels(mutated) == pixels, "verified, but the pixels are not the signed ones"


@settings(max_examples=budget(90))
@given(st.sampled_from(FORMATS), st.data())
def test_mutated_files_never_verify_other_pixels(
    signed: Signed, fmt: str, data: st.DataObject
) -> None:
    original, pixels = signed[fmt]
    mutated = mutate(original, data.draw(mutations(len(original))))
    report = bounded(verify, mutated, check_watermark=False, seconds=5.0)
    _check(report, mutated, original, pixels)


@settings(max_examples=budget(9))
@given(st.sampled_from(FORMATS), st.data())
def test_mutated_files_with_the_watermark_search(
    signed: Signed, fmt: str, data: st.DataObject
) -> None:
    original, pixels = signed[fmt]
    mutated = mutate(original, data.draw(mutations(len(original))))
    report = bounded(verify, mutated, seconds=10.0)
    _check(report, mutated, original, pixels)
    decision = bounded(OptOutChecker(verify_c2pa=True).check, mutated, seconds=5.0)
    assert isinstance(decision, Decision), repr(decision)
