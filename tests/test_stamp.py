"""The provenance layer end to end: watermark -> encode -> fingerprint -> sign -> verify.

Real c2pa-python signing and reading, real development credentials, real photos.
"""

from __future__ import annotations

import io
from pathlib import Path

import c2pa
import numpy as np
import pytest
import skimage.data
from PIL import Image

from provenance import fingerprint as fp
from provenance.credentials import Credentials, init_development_credentials
from provenance.errors import ManifestError
from provenance.manifest import COMPOSITE, MIME_TYPES, TRAINED, build_definition, sign_asset
from provenance.stamp import Stamper, ingredient_from
from provenance.store import ManifestStore
from provenance.verify import verify
from provenance.watermark import Payload, embed

RECIPE = {"prompt": "a red circle", "seed": 7, "steps": 25}


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> tuple[Credentials, Path]:
    paths = init_development_credentials(tmp_path_factory.mktemp("creds"))
    creds = Credentials.from_files(paths.certificate_chain, paths.private_key)
    return creds, paths.ca_certificate


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut()).resize((320, 320))


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), quality=95)
    return buffer.getvalue()


def _stamp(stamper: Stamper, image: Image.Image, fmt: str = "png", **kw: object) -> bytes:
    marked, record = stamper.watermark(image)
    return stamper.sign(_encode(marked, fmt), fmt, title=f"x.{fmt}", record=record, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_signed_files_read_back_valid_and_trusted(
    dev: tuple[Credentials, Path], photo: Image.Image, fmt: str
) -> None:
    creds, ca = dev
    signed = _stamp(Stamper(creds), photo, fmt, recipe=RECIPE)
    # c2pa-python itself, without sdkit's reader
    with c2pa.Reader(MIME_TYPES[fmt], io.BytesIO(signed)) as reader:
        assert reader.get_validation_state() == "Valid"
    anchored = c2pa.Context(
        settings=c2pa.Settings.from_dict({"trust": {"trust_anchors": ca.read_text()}})
    )
    with c2pa.Reader(MIME_TYPES[fmt], io.BytesIO(signed), context=anchored) as reader:
        assert reader.get_validation_state() == "Trusted"
    report = verify(signed)
    assert (report.verdict, report.c2pa_state, report.trusted) == ("verified", "valid", False)
    assert report.digital_source_type == TRAINED.rsplit("/", 1)[-1]
    assert report.recipe == RECIPE
    assert report.watermark_matches_manifest is True
    assert report.fingerprint_matches is True and report.fingerprint_distance is not None
    assert report.training_mining == {"cawg.ai_generative_training": "notAllowed"}
    assert "untrusted signer" in report.to_text()
    assert report.c2pa_state == "valid" and report.watermark_found
    trusted = verify(signed, trust_anchors=ca)
    assert (trusted.verdict, trusted.c2pa_state, trusted.trusted) == ("verified", "trusted", True)
    assert trusted.c2pa_state == "trusted"


def test_trust_anchors_from_env_and_config_file(
    dev: tuple[Credentials, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds, ca = dev
    signed = _stamp(Stamper(creds, watermark=False), Image.new("RGB", (32, 32)))
    assert verify(signed).trusted is False
    monkeypatch.setenv("SDKIT_TRUST_ANCHORS", str(ca))
    assert verify(signed).trusted is True
    monkeypatch.delenv("SDKIT_TRUST_ANCHORS")
    monkeypatch.setenv("SDKIT_CONFIG_DIR", str(tmp_path))
    (tmp_path / "trust-anchors.pem").write_bytes(ca.read_bytes())
    assert verify(signed).trusted is True


def test_one_pixel_byte_changed_is_invalid(
    dev: tuple[Credentials, Path], photo: Image.Image
) -> None:
    signed = _stamp(Stamper(dev[0]), photo, "jpeg")
    # one byte in the middle of the entropy-coded scan (after the last SOS marker)
    scan = signed.rindex(b"\xff\xda")
    middle = scan + (len(signed) - scan) // 2
    while signed[middle] == 0xFF or signed[middle - 1] == 0xFF:
        middle += 1
    edited = bytearray(signed)
    edited[middle] ^= 0x10
    before = np.asarray(Image.open(io.BytesIO(signed)))
    after = np.asarray(Image.open(io.BytesIO(bytes(edited))))
    assert (before != after).any()  # the pixels changed
    report = verify(bytes(edited))
    assert report.c2pa_state == "invalid" and report.verdict == "not_verified"
    assert "assertion.dataHash.mismatch" in report.c2pa_codes
    assert "changed after signing" in report.to_text()


def test_stripped_copy_is_recovered_from_the_store(
    dev: tuple[Credentials, Path], photo: Image.Image, tmp_path: Path
) -> None:
    creds, ca = dev
    store = ManifestStore(tmp_path / "m.db")
    signed = _stamp(Stamper(creds, store=store), photo, "png", recipe=RECIPE)
    assert len(store) == 1
    stripped = _encode(Image.open(io.BytesIO(signed)), "jpeg")  # PIL writes no C2PA
    alone = verify(stripped)
    assert alone.c2pa_state == "absent" and alone.watermark is not None
    assert alone.verdict == "not_verified"  # a watermark with nothing to check it against
    report = verify(stripped, store=store, trust_anchors=ca)
    assert report.recovered_from_store and report.verdict == "similar" and report.trusted
    assert report.fingerprint_matches is True and report.watermark_matches_manifest is True
    assert report.recipe == RECIPE and report.signer is not None
    assert "manifest recovered from store" in report.to_text()


def test_watermark_on_another_image_is_flagged(
    dev: tuple[Credentials, Path], photo: Image.Image, tmp_path: Path
) -> None:
    store = ManifestStore(tmp_path / "m.db")
    stamper = Stamper(dev[0], store=store)
    marked, record = stamper.watermark(photo)
    stamper.sign(_encode(marked, "png"), "png", title="x.png", record=record)
    assert record.payload is not None
    other = Image.fromarray(skimage.data.coffee()).resize(photo.size)
    forged = _encode(embed(other, record.payload), "png")  # the payload copied elsewhere
    report = verify(forged, store=store)
    assert report.recovered_from_store and report.verdict == "not_verified"
    assert report.fingerprint_matches is False
    assert report.fingerprint_distance is not None
    assert report.fingerprint_distance > fp.MATCH_DISTANCE
    assert "belongs to another image" in report.to_text()


def test_store_entry_under_the_wrong_id_is_flagged(
    dev: tuple[Credentials, Path], photo: Image.Image, tmp_path: Path
) -> None:
    store = ManifestStore(tmp_path / "m.db")
    stamper = Stamper(dev[0])
    marked, record = stamper.watermark(photo)
    assert record.payload is not None
    # a manifest of another image filed under this image's payload
    other = Image.fromarray(skimage.data.chelsea()).resize(photo.size)
    definition = build_definition(
        title="other.png",
        software_version="test",
        recipe=None,
        watermark=record.to_assertion(),
        fingerprint={"algorithm": fp.ALGORITHM, "value": fp.fingerprint(other)},
    )
    _, manifest_bytes = sign_asset(_encode(other, "png"), "png", definition, dev[0])
    store.put(record.payload, manifest_bytes, fingerprint=fp.fingerprint(other))
    report = verify(_encode(marked, "png"), store=store)
    assert report.verdict == "not_verified" and report.fingerprint_matches is False


def test_small_image_records_why_there_is_no_watermark(dev: tuple[Credentials, Path]) -> None:
    small = Image.new("RGB", (128, 96), (10, 200, 30))
    marked, record = Stamper(dev[0]).watermark(small)
    assert marked is small and not record.embedded
    assert record.reason is not None and "too small" in record.reason
    report = verify(Stamper(dev[0]).sign(_encode(marked, "png"), "png", title="s", record=record))
    assert report.verdict == "verified"
    assert any("no watermark was embedded" in n and "128x96" in n for n in report.notes)


def test_edit_keeps_its_parent_and_the_parents_manifest(
    dev: tuple[Credentials, Path], photo: Image.Image
) -> None:
    stamper = Stamper(dev[0])
    parent_bytes = _stamp(stamper, photo, "png")
    child = _stamp(stamper, photo.rotate(90), "jpeg", parent=ingredient_from(parent_bytes))
    report = verify(child)
    assert report.verdict == "verified"
    assert report.digital_source_type == COMPOSITE.rsplit("/", 1)[-1]
    assert report.ingredients == (
        {"title": "init image", "relationship": "parentOf", "has_manifest": True},
    )
    bare = ingredient_from(photo)
    assert bare.mime == "image/png" and Image.open(io.BytesIO(bare.data)).size == photo.size


def test_training_mining_is_configurable(dev: tuple[Credentials, Path]) -> None:
    image = Image.new("RGB", (64, 64))
    stamper = Stamper(dev[0], training_mining={"ai_inference": "allowed"})
    report = verify(_stamp(stamper, image))
    assert report.training_mining == {
        "cawg.ai_generative_training": "notAllowed",
        "cawg.ai_inference": "allowed",
    }
    with pytest.raises(ManifestError, match="unknown training-and-mining use"):
        Stamper(dev[0], training_mining={"ai_dreaming": "allowed"})
    with pytest.raises(ManifestError, match="not allowed"):
        Stamper(dev[0], training_mining={"ai_training": "maybe"})


def test_a_malformed_manifest_is_a_manifest_error(dev: tuple[Credentials, Path]) -> None:
    # C2PA requires the first action to be c2pa.created or c2pa.opened; c2pa-python checks
    bad = {"claim_generator_info": [{"name": "t"}], "assertions": []}
    with pytest.raises(ManifestError, match="malformed"):
        sign_asset(_encode(Image.new("RGB", (8, 8)), "png"), "png", bad, dev[0])


def test_no_thumbnail_by_default(dev: tuple[Credentials, Path], photo: Image.Image) -> None:
    stamper = Stamper(dev[0], watermark=False)
    bare = _encode(photo, "png")
    _, record = stamper.watermark(photo)
    plain = stamper.sign(bare, "png", title="x.png", record=record)
    with_thumb = Stamper(dev[0], watermark=False, thumbnail=256).sign(
        bare, "png", title="x.png", record=record
    )
    # the manifest alone (no thumbnail) is a few KB; a thumbnail adds an encoded image
    assert len(plain) - len(bare) < 20_000
    assert len(with_thumb) - len(plain) > 5_000


def test_fingerprint_separates_copies_from_other_images(photo: Image.Image) -> None:
    base = fp.fingerprint(photo)
    jpeg = Image.open(io.BytesIO(_encode(photo, "jpeg")))
    half = photo.resize((160, 160)).resize(photo.size)
    assert fp.distance(base, fp.fingerprint(jpeg)) <= 2
    assert fp.distance(base, fp.fingerprint(half)) <= 4
    others = ["coffee", "chelsea", "rocket", "camera", "brick"]
    far = [
        fp.distance(base, fp.fingerprint(Image.fromarray(getattr(skimage.data, n)())))
        for n in others
    ]
    assert min(far) > fp.MATCH_DISTANCE, far


def test_store_keeps_every_manifest_of_a_payload(tmp_path: Path) -> None:
    payload = Payload(content_id=0xABCDEF123456, issuer_id=9)
    with ManifestStore(tmp_path / "s.db") as store:
        store.put(payload, b"one", fingerprint="0" * 16, title="a.png")
        store.put(payload, b"one", fingerprint="0" * 16, title="a.png")  # same bytes: once
        store.put(payload, b"two", fingerprint="f" * 16, title="a.jpg")
        assert len(store) == 2
        assert [e.manifest for e in store.get(payload)] == [b"one", b"two"]
        assert store.get(Payload(content_id=1, issuer_id=9)) == []
    # it persists
    with ManifestStore(tmp_path / "s.db") as again:
        assert len(again) == 2
    junk = tmp_path / "junk.db"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ManifestError, match="not a usable manifest store"):
        ManifestStore(junk)
