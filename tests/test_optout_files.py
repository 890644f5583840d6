"""Opt-outs inside files (real C2PA from c2pa-python, real XMP from Pillow) and the registry."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from optout_images import (
    REGISTERED,
    c2pa_signed,
    credentials,
    edits,
    encode,
    picture,
    sdkit_signed,
    skimage_photo,
    unrelated_images,
    with_xmp,
    xmp_packet,
)
from PIL import Image

from provenance.credentials import Credentials
from provenance.errors import OptOutError
from provenance.optout import MATCH_DISTANCE, OptOutChecker, OptOutRegistry


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return credentials(tmp_path_factory.mktemp("creds"))


@pytest.fixture(scope="module")
def checker() -> OptOutChecker:
    return OptOutChecker(verify_c2pa=True)  # the manifest's state is named in the evidence


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_sdkit_outputs_are_disallowed_by_default(
    creds: Credentials, checker: OptOutChecker, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"out.{fmt}"
    path.write_bytes(sdkit_signed(creds, fmt))
    decision = checker.check(path)
    assert decision.verdict == "disallowed" and decision.allowed is False
    (signal,) = decision.signals
    assert (signal.name, signal.source) == ("c2pa-training-mining", str(path))
    assert (
        signal.evidence
        == "cawg.training-mining: cawg.ai_generative_training = notAllowed (manifest valid)"
    )
    assert signal.to_dict()["spec"].startswith("C2PA / CAWG")


def test_signature_is_not_checked_by_default(creds: Credentials) -> None:
    decision = OptOutChecker().check(sdkit_signed(creds, "jpeg"))
    text = "cawg.training-mining: cawg.ai_generative_training = notAllowed"
    assert decision.evidence == (f"c2pa-training-mining: {text} (<bytes>)",)


def test_sdkit_output_whose_signer_allows_training(
    creds: Credentials, checker: OptOutChecker
) -> None:
    data = sdkit_signed(
        creds,
        "png",
        training_mining={"ai_generative_training": "allowed", "ai_training": "allowed"},
    )
    decision = checker.check(data)
    assert decision.verdict == "allowed"
    assert sorted(s.evidence for s in decision.signals) == [
        "cawg.training-mining: cawg.ai_generative_training = allowed (manifest valid)",
        "cawg.training-mining: cawg.ai_training = allowed (manifest valid)",
    ]


@pytest.mark.parametrize(
    ("label", "entries", "verdict"),
    [
        ("c2pa.training-mining", {"c2pa.ai_training": {"use": "notAllowed"}}, "disallowed"),
        (
            "c2pa.training-mining",
            {"c2pa.data_mining": {"use": "constrained", "constraint_info": "ask"}},
            "disallowed",
        ),
        (
            "cawg.training-mining",
            {"cawg.ai_generative_training": {"use": "constrained"}},
            "disallowed",
        ),
        (
            "cawg.training-mining",
            {"cawg.ai_inference": {"use": "notAllowed"}},
            "allowed",
        ),  # inference is not training
        ("cawg.training-mining", {"cawg.ai_training": {"use": "maybe"}}, "unknown"),
    ],
)
def test_c2pa_training_mining_values(
    creds: Credentials,
    checker: OptOutChecker,
    label: str,
    entries: dict[str, dict[str, str]],
    verdict: str,
) -> None:
    decision = checker.check(c2pa_signed(creds, label, entries))
    assert decision.verdict == verdict
    if verdict != "allowed":
        use, entry = next(iter(entries.items()))
        assert decision.evidence == (
            f"c2pa-training-mining: {label}: {use} = {entry['use']} (manifest valid) (<bytes>)",
        )


def test_uses_can_include_inference(creds: Credentials) -> None:
    strict = OptOutChecker(uses=("ai_inference",))
    data = c2pa_signed(creds, "cawg.training-mining", {"cawg.ai_inference": {"use": "notAllowed"}})
    assert strict.check(data).verdict == "disallowed"


def test_tampered_manifest_still_states_the_opt_out(
    creds: Credentials, checker: OptOutChecker
) -> None:
    data = bytearray(sdkit_signed(creds, "jpeg"))
    data[-10] ^= 0xFF  # pixels changed after signing: the hash binding breaks, the wish stays
    decision = checker.check(bytes(data))
    assert decision.verdict == "disallowed"
    assert "(manifest invalid)" in decision.evidence[0]


def test_unreadable_manifest_is_unknown(creds: Credentials, checker: OptOutChecker) -> None:
    data = bytearray(sdkit_signed(creds, "jpeg"))
    start = data.find(b"jumb")
    data[start + 40 : start + 400] = b"\x00" * 360  # the manifest store itself is garbage
    decision = checker.check(bytes(data))
    assert decision.verdict == "unknown" and decision.allowed is False
    assert decision.deciding[0].name == "c2pa-training-mining"
    assert "could not be read" in decision.deciding[0].evidence


@pytest.mark.parametrize(
    ("fmt", "compressed", "code", "verdict"),
    [
        ("jpeg", False, "DMI-PROHIBITED-AIMLTRAINING", "disallowed"),
        ("webp", False, "DMI-PROHIBITED-GENAIMLTRAINING", "disallowed"),
        ("png", False, "DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING", "disallowed"),
        ("png", True, "DMI-PROHIBITED", "disallowed"),
        ("jpeg", False, "DMI-PROHIBITED-SEECONSTRAINT", "disallowed"),
        ("jpeg", False, "DMI-ALLOWED", "allowed"),
        ("jpeg", False, "DMI-UNSPECIFIED", "allowed"),
    ],
)
def test_iptc_data_mining_in_xmp(
    checker: OptOutChecker, tmp_path: Path, fmt: str, compressed: bool, code: str, verdict: str
) -> None:
    path = tmp_path / f"x.{fmt}"
    path.write_bytes(with_xmp(code, fmt, compressed=compressed))
    with Image.open(path) as opened:  # Pillow reads back what it wrote
        assert code.encode() in (opened.info.get("xmp") or b"")
    decision = checker.check(path)
    assert decision.verdict == verdict
    expected = (
        [] if code == "DMI-UNSPECIFIED" else [("iptc-data-mining", f"plus:DataMining = {code}")]
    )
    assert [(s.name, s.evidence) for s in decision.signals] == expected


def test_malformed_xmp_is_unknown(checker: OptOutChecker) -> None:
    broken = xmp_packet("DMI-PROHIBITED").replace(b"</rdf:RDF>", b"")
    decision = checker.check(encode(picture(), "jpeg", xmp=broken))
    assert decision.verdict == "unknown" and "does not parse" in decision.evidence[0]


def test_pil_image_xmp(checker: OptOutChecker) -> None:
    with Image.open(io.BytesIO(with_xmp("DMI-PROHIBITED-AIMLTRAINING"))) as opened:
        opened.load()
        assert checker.check(opened).verdict == "disallowed"


# -- registry -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> OptOutRegistry:
    path = tmp_path_factory.mktemp("reg") / "registry.sqlite"
    with OptOutRegistry(path) as reg:
        for name in REGISTERED:
            reg.add(skimage_photo(name), label=f"skimage {name}", source=name)
    return OptOutRegistry(path)  # reopened: everything came back from the file


def test_registered_works_survive_edits(registry: OptOutRegistry) -> None:
    assert len(registry) == len(REGISTERED)
    worst: dict[str, int] = {}
    for name in REGISTERED:
        photo = skimage_photo(name)
        for edit, apply in edits().items():
            match = registry.match(apply(photo))
            assert match is not None, (name, edit)
            assert match.label == f"skimage {name}"
            worst[edit] = max(worst.get(edit, 0), match.distance)
    # measured: 0-2 bits for the grid crops, resize and JPEG; up to 7 for an off-grid crop
    assert max(worst.values()) <= 8 < MATCH_DISTANCE, worst
    assert max(v for k, v in worst.items() if "3%" not in k) <= 3, worst


def test_unrelated_images_do_not_match(registry: OptOutRegistry) -> None:
    started = time.monotonic()
    images = unrelated_images(1000)
    matches = [m for m in (registry.match(im, max_distance=64) for im in images) if m is not None]
    nearest = min(m.distance for m in matches)
    assert nearest > MATCH_DISTANCE + 4, nearest  # measured: 18 and more
    assert all(registry.match(im) is None for im in images[:50])
    assert time.monotonic() - started < 30


def test_checker_flags_registered_copies(registry: OptOutRegistry, tmp_path: Path) -> None:
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(encode(skimage_photo("rocket").resize((320, 213)), "jpeg", quality=70))
    other = tmp_path / "other.png"
    other.write_bytes(encode(picture(9), "png"))
    with OptOutChecker(registry=registry) as checker:
        hit, miss = checker.check(copy), checker.check(other)
    assert hit.verdict == "disallowed"
    assert hit.deciding[0].name == "registry"
    assert hit.deciding[0].evidence.startswith(
        "matches registered work #4 'skimage rocket' at distance "
    )
    assert miss.verdict == "allowed"


def test_registry_refuses_flat_and_unreadable_images(tmp_path: Path) -> None:
    with OptOutRegistry(tmp_path / "r.sqlite") as reg:
        with pytest.raises(OptOutError, match="almost uniform"):
            reg.add(Image.new("RGB", (64, 64), "white"))
        (tmp_path / "not.png").write_text("hello")
        with pytest.raises(OptOutError, match="cannot read") as info:
            reg.add(tmp_path / "not.png")
        assert info.value.hint
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(OptOutError, match=r"cannot use .* as an opt-out registry"):
        OptOutRegistry(tmp_path / "junk.sqlite")
