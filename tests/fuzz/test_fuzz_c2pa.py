"""Fuzzing the readers of C2PA assertions, sdkit's own and CAWG's, in validly signed files.

A signature says who signed, not that what they signed is well-formed: anyone with a
certificate can sign a manifest whose ``org.sdkit.fingerprint`` value is ``"zz"``, whose
``org.sdkit.watermark`` payload is a string, or whose ``cawg.training-mining`` entries are a
list. Each case here is a real file signed with development credentials (c2pa-python, about
0.05 s) over watermarked pixels, so every assertion reader runs.

Targets: :func:`provenance.verify.verify`, :func:`provenance.optout.embedded.file_signals` and
:meth:`provenance.optout.OptOutChecker.check` with ``verify_c2pa=True``. Property: a report or
decision, or a :class:`~provenance.errors.ProvenanceError`, within 10 s of CPU.
"""

from __future__ import annotations

from typing import Any

import pytest
from fuzzing import bounded, budget
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from optout_images import CAPTURE, credentials, encode, picture

from provenance import fingerprint as fp
from provenance.credentials import Credentials
from provenance.errors import ProvenanceError
from provenance.manifest import (
    FINGERPRINT_LABEL,
    RECIPE_LABEL,
    TRAINING_MINING_LABEL,
    WATERMARK_LABEL,
    sign_asset,
)
from provenance.optout import Decision, OptOutChecker
from provenance.optout.embedded import file_signals
from provenance.stamp import Stamper
from provenance.verify import VerificationReport, verify

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["zz", "", "0" * 16, "f" * 15, "notAllowed", "allowed", "phash-64"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
_USES = st.sampled_from(
    ["cawg.ai_training", "cawg.ai_generative_training", "cawg.data_mining", "c2pa.ai_training", "x"]
)
ENTRIES = st.one_of(
    JSON,
    st.dictionaries(
        _USES,
        st.one_of(
            JSON,
            st.fixed_dictionaries(
                {"use": JSON | st.sampled_from(["notAllowed", "allowed", "constrained"])}
            ),
        ),
        max_size=3,
    ),
)


@st.composite
def assertions(
    draw: st.DrawFn, watermark: dict[str, Any], fingerprint: str
) -> list[dict[str, Any]]:
    """sdkit's assertions (and a CAWG or C2PA training-mining one), some of them hostile."""
    good: dict[str, Any] = {
        WATERMARK_LABEL: watermark,
        FINGERPRINT_LABEL: {"algorithm": "phash-64", "value": fingerprint},
        TRAINING_MINING_LABEL: {"entries": {"cawg.ai_generative_training": {"use": "notAllowed"}}},
        RECIPE_LABEL: {"prompt": "a cat", "seed": 1},
    }
    hostile: dict[str, Any] = {
        WATERMARK_LABEL: st.one_of(
            st.fixed_dictionaries(
                {"embedded": JSON | st.just(True)},
                optional={"payload": JSON, "method": JSON, "reason": JSON},
            ),
            st.just({**watermark, "payload": "zz"}),
        ),
        FINGERPRINT_LABEL: st.fixed_dictionaries(
            {"algorithm": st.just("phash-64") | JSON, "value": JSON}
        ),
        TRAINING_MINING_LABEL: st.fixed_dictionaries({"entries": ENTRIES})
        | st.dictionaries(st.text(max_size=8), JSON),
        RECIPE_LABEL: st.dictionaries(st.text(max_size=10), JSON, max_size=4),
    }
    changed = draw(st.sets(st.sampled_from(sorted(hostile)), min_size=1))
    out = [
        {
            "label": "c2pa.actions.v2",
            "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": CAPTURE}]},
        }
    ]
    for label, data in good.items():
        out.append({"label": label, "data": draw(hostile[label]) if label in changed else data})
    if draw(st.booleans()):  # the C2PA 1.x label as well
        out.append({"label": "c2pa.training-mining", "data": {"entries": draw(ENTRIES)}})
    return out


class Signing(dict[str, Any]):
    """Credentials and a watermarked picture (a short repr: falsifying examples print it)."""

    def __repr__(self) -> str:
        return "<credentials and a watermarked 256x256 PNG>"


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> Signing:
    """Credentials, and a watermarked picture with its watermark assertion and fingerprint."""
    creds = credentials(tmp_path_factory.mktemp("c2pa-fuzz"))
    stamper = Stamper(creds, watermark=True)
    marked, record = stamper.watermark(picture(5, (256, 256)))
    return Signing(
        {
            "creds": creds,
            "png": encode(marked, "png"),
            "watermark": record.to_assertion(),
            "fingerprint": fp.fingerprint(marked),
        }
    )


def _sign(creds: Credentials, png: bytes, items: list[dict[str, Any]]) -> bytes:
    definition = {
        "claim_generator_info": [{"name": "fuzz", "version": "1"}],
        "title": "x.png",
        "assertions": items,
    }
    try:
        signed, _ = sign_asset(png, "png", definition, creds)
    except ProvenanceError:
        reject()  # c2pa-python would not sign it: no such file can exist
    return signed


@settings(max_examples=budget(12))
@given(st.data())
def test_hostile_assertions_in_signed_files(signing: dict[str, Any], data: st.DataObject) -> None:
    items = data.draw(assertions(signing["watermark"], signing["fingerprint"]))
    signed = _sign(signing["creds"], signing["png"], items)
    report = bounded(verify, signed, seconds=10.0)
    assert isinstance(report, (VerificationReport, ProvenanceError)), repr(report)
    if isinstance(report, VerificationReport):
        report.to_dict()
        report.to_text()
    signals = bounded(file_signals, signed, "<fuzz>", seconds=5.0)
    assert isinstance(signals, list), repr(signals)
    decision = bounded(OptOutChecker(verify_c2pa=True).check, signed, seconds=5.0)
    assert isinstance(decision, Decision), repr(decision)


@settings(max_examples=budget(12))
@given(ENTRIES, st.sampled_from(["cawg.training-mining", "c2pa.training-mining"]))
def test_training_mining_entries_of_any_shape(
    signing: dict[str, Any], entries: Any, label: str
) -> None:
    items = [
        {
            "label": "c2pa.actions.v2",
            "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": CAPTURE}]},
        },
        {"label": label, "data": {"entries": entries}},
    ]
    signed = _sign(signing["creds"], encode(picture(2, (64, 48)), "png"), items)
    signals = bounded(file_signals, signed, "<fuzz>", seconds=5.0)
    assert isinstance(signals, list), repr(signals)
    report = bounded(verify, signed, seconds=10.0)
    assert isinstance(report, (VerificationReport, ProvenanceError)), repr(report)
