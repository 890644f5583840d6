"""All the evidence ``sdkit detect`` reads, each source on files made here, none on photos.

Each source of evidence is made the way its tool makes it: a tiny SDXL-style diffusers pipeline
with its default watermarker, the SD 1 / SD 2 reference scripts' ``put_watermark`` (RGB -> BGR,
``WatermarkEncoder.encode(img, 'dwtDct')`` with ``set_watermark('bytes', wm.encode('utf-8'))``,
CompVis/stable-diffusion and Stability-AI/stablediffusion ``scripts/txt2img.py``), XMP with
IPTC's digital source type, A1111 / ComfyUI / NovelAI / InvokeAI chunks under the keys
sd-parsers 0.6 reads, and a C2PA manifest signed here by a non-sdkit claim generator. The
same checks on unmarked photos (and their JPEG re-encodings) find nothing; the 500-photo
count is ``benchmarks/known_watermarks_false_positives.py``.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import c2pa
import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from diffusers import StableDiffusionXLPipeline
from imwatermark import WatermarkEncoder
from PIL import Image, PngImagePlugin
from skimage import data

from provenance.credentials import Credentials
from provenance.detector import EvidenceReport, assess
from provenance.detector.known_watermarks import KNOWN_MARKS
from provenance.dev_credentials import init_development_credentials
from provenance.watermark import Payload, embed
from sdkit.cli import cli

AI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera")


def _photo(name: str = "astronaut", size: int = 384) -> Image.Image:
    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    return image.resize((size, size * image.height // image.width))


def _png(path: Path, image: Image.Image, **text: str) -> Path:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value) if key.startswith("XML") else info.add_text(key, value)
    image.save(path, pnginfo=info)
    return path


def _jpeg(path: Path, image: Image.Image, quality: int = 95) -> Path:
    image.save(path, quality=quality)
    return path


def _script_mark(image: Image.Image, message: str) -> Image.Image:
    """The SD 1 / SD 2 reference scripts' put_watermark."""
    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", message.encode("utf-8"))
    bgr = cv2.cvtColor(np.array(image), cv2.COLOR_RGB2BGR)
    return Image.fromarray(encoder.encode(bgr, "dwtDct")[:, :, ::-1])


def _quick(path: Path) -> EvidenceReport:
    """assess without sdkit's own watermark search (the slow one) for metadata-only checks."""
    return assess(path, sdkit_watermark=False)


def _summary(report: EvidenceReport) -> tuple[str, tuple[str, ...], list[str], list[str]]:
    return (
        report.verdict,
        report.decided_by,
        [d.source for d in report.declarations],
        [m.name for m in report.watermarks],
    )


@pytest.fixture(scope="module")
def sdxl_png(tiny_sdxl_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDXL-style pipeline's 512 px output, watermarked as diffusers does by default."""
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_path))
    assert pipe.watermark is not None  # invisible-watermark installed: on by default
    image = pipe(
        "a red bicycle",
        num_inference_steps=2,
        height=512,
        width=512,
        generator=__import__("torch").Generator().manual_seed(0),
    ).images[0]
    path = tmp_path_factory.mktemp("sdxl") / "sdxl.png"
    image.save(path)
    return path


def test_sdxl_pipeline_output_carries_diffusers_mark(sdxl_png: Path, tmp_path: Path) -> None:
    report = assess(sdxl_png)
    assert _summary(report) == ("ai_generated", ("watermark",), [], ["diffusers-sdxl"])
    assert "AI-GENERATED (near-certain: a known watermark)" in report.to_text()
    again = _png(tmp_path / "again.png", Image.open(sdxl_png).convert("RGB"))
    assert [m.name for m in _quick(again).watermarks] == ["diffusers-sdxl"]


@pytest.mark.parametrize(
    ("message", "name"), [("StableDiffusionV1", "sd1-script"), ("SDV2", "sd2-script")]
)
def test_reference_script_marks(message: str, name: str, tmp_path: Path) -> None:
    # dwtDct is content-dependent: on some photos (skimage's coffee) the scripts' own encoder
    # output does not decode exactly; the benchmark counts how often it does
    marked = _script_mark(_photo("astronaut", 512), message)
    report = assess(_png(tmp_path / "marked.png", marked))
    assert _summary(report) == ("ai_generated", ("watermark",), [], [name])
    assert _summary(assess(_png(tmp_path / "plain.png", _photo("astronaut", 512))))[3] == []


def test_known_marks_are_the_published_messages() -> None:
    marks = {m.name: m for m in KNOWN_MARKS}
    # diffusers: WATERMARK_MESSAGE = 0b101100111110110010010000011110111011000110011110
    from diffusers.pipelines.stable_diffusion_xl.watermark import WATERMARK_BITS

    assert list(marks["diffusers-sdxl"].bits) == WATERMARK_BITS and len(WATERMARK_BITS) == 48
    assert len(marks["sd1-script"].bits) == 136 and marks["sd2-script"].bits[:8] == (
        0,
        1,
        0,
        1,
        0,
        0,
        1,
        1,
    )


def test_sdkit_watermark_on_a_stripped_file(tmp_path: Path) -> None:
    marked = embed(_photo("astronaut", 320), Payload(content_id=0x0123456789AB, issuer_id=7))
    report = assess(_png(tmp_path / "stripped.png", marked))
    assert _summary(report) == ("ai_generated", ("watermark",), [], ["sdkit"])
    assert "content id 0123456789ab" in report.to_text()


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_iptc_digital_source_type_in_xmp(fmt: str, tmp_path: Path) -> None:
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-'
        'syntax-ns#"><rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        f' Iptc4xmpExt:DigitalSourceType="{AI}"/></rdf:RDF></x:xmpmeta>'
    )
    path = tmp_path / f"xmp.{fmt}"
    if fmt == "png":
        _png(path, _photo(), **{"XML:com.adobe.xmp": xmp})
    else:
        _photo().save(path, xmp=xmp.encode())
    report = _quick(path)
    assert _summary(report) == ("ai_generated", ("declaration",), ["xmp-iptc"], [])
    element = xmp.replace(f' Iptc4xmpExt:DigitalSourceType="{AI}"/>', ">") + ""
    element = element.replace(
        "</rdf:RDF>",
        f"<Iptc4xmpExt:DigitalSourceType>{AI.replace('trained', 'compositeWithTrained')}"
        "</Iptc4xmpExt:DigitalSourceType></rdf:Description></rdf:RDF>",
    )
    assert [
        d.source
        for d in _quick(
            _png(tmp_path / "el.png", _photo(), **{"XML:com.adobe.xmp": element})
        ).declarations
    ] == ["xmp-iptc"]
    photo_type = xmp.replace("trainedAlgorithmicMedia", "digitalCapture")
    assert (
        _quick(
            _png(tmp_path / "cam.png", _photo(), **{"XML:com.adobe.xmp": photo_type})
        ).declarations
        == ()
    )


def test_hostile_xmp_is_bounded(tmp_path: Path) -> None:
    bomb = (
        '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]>'
        + "<a:DigitalSourceType " * 50_000
        + "&a;" * 100_000
    )
    report = _quick(_png(tmp_path / "bomb.png", _photo(), **{"XML:com.adobe.xmp": bomb}))
    assert report.declarations == ()


def test_generation_parameters_of_the_uis(tmp_path: Path) -> None:
    a1111 = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 384x288, Model: sd15"
    comfy_prompt = {"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20}}}
    comfy_workflow = {"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}]}
    novelai = {"steps": 28, "sampler": "k_euler", "seed": 1, "scale": 5}
    cases = {
        "a1111": {"parameters": a1111},
        "comfyui": {"prompt": json.dumps(comfy_prompt), "workflow": json.dumps(comfy_workflow)},
        "novelai": {"Software": "NovelAI", "Comment": json.dumps(novelai), "Description": "a cat"},
        "invokeai": {"invokeai_metadata": json.dumps({"positive_prompt": "a cat", "steps": 30})},
    }
    for source, chunks in cases.items():
        report = assess(_png(tmp_path / f"{source}.png", _photo(), **chunks), sdkit_watermark=False)
        assert _summary(report) == ("ai_generated", ("declaration",), [source], []), source
    only_workflow = _png(tmp_path / "wf.png", _photo(), workflow=json.dumps(comfy_workflow))
    assert [d.source for d in _quick(only_workflow).declarations] == ["comfyui"]
    # JPEG: A1111 writes the text into EXIF UserComment
    from provenance.infotext import exif_bytes

    jpg = tmp_path / "a1111.jpg"
    _photo().save(jpg, exif=exif_bytes(a1111))
    assert [d.source for d in _quick(jpg).declarations] == ["a1111"]
    # not declarations: a caption, JSON that is not ComfyUI's, NovelAI's name without metadata
    plain = {"parameters": "holiday photo", "prompt": '{"a": 1}', "Software": "NovelAI"}
    assert _quick(_png(tmp_path / "plain.png", _photo(), **plain)).declarations == ()
    deep = {"prompt": "[" * 100_000, "invokeai_metadata": "[" * 100_000}
    assert _quick(_png(tmp_path / "deep.png", _photo(), **deep)).declarations == ()


def test_third_party_c2pa_ai_manifest(tmp_path: Path) -> None:
    dev = init_development_credentials(tmp_path / "creds")
    creds = Credentials.from_files(dev.certificate_chain, dev.private_key)
    manifest = {
        "claim_generator_info": [{"name": "OtherVendor Image AI", "version": "3.1"}],
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": AI}]},
            }
        ],
    }
    source = io.BytesIO()
    _photo().save(source, "JPEG", quality=90)
    signed = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(creds.signer(), "image/jpeg", io.BytesIO(source.getvalue()), signed)
    path = tmp_path / "vendor.jpg"
    path.write_bytes(signed.getvalue())
    report = assess(path)
    assert _summary(report) == ("ai_generated", ("declaration",), ["c2pa"], [])
    assert report.declarations[0].signed and "OtherVendor Image AI" in report.declarations[0].detail
    assert "trainedAlgorithmicMedia" in report.declarations[0].detail
    # the interop fixtures (c2pa-rs test files, no AI source type) declare nothing
    fixtures = Path(__file__).parent / "fixtures" / "c2pa-interop"
    for fixture in sorted(fixtures.glob("*.jpg")):
        assert assess(fixture, sdkit_watermark=False).declarations == (), fixture


def test_nothing_on_unmarked_photos_and_their_jpeg_reencodings(tmp_path: Path) -> None:
    rng = random.Random(0)
    files = []
    for i, name in enumerate(PHOTOS[:4]):
        image = _photo(name, rng.choice((320, 512)))
        files.append(_png(tmp_path / f"{i}.png", image))
        files.append(_jpeg(tmp_path / f"{i}.jpg", image, rng.randint(60, 95)))
    for path in files:  # the public marks and declarations (sdkit's mark: tests/test_watermark.py)
        report = _quick(path)
        assert _summary(report) == ("no_evidence", (), [], []), path


def test_folder_mode_table_summary_and_json(sdxl_png: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.open(sdxl_png).save(folder / "a-sdxl.png")
    _png(folder / "b-a1111.png", _photo(), parameters="a cat\nSteps: 20, Sampler: Euler, Seed: 1")
    _jpeg(folder / "c-photo.jpg", _photo("chelsea"))
    runner = CliRunner()
    result = runner.invoke(cli, ["detect", str(folder), "--no-probe"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["file", "verdict", "probe", "evidence"]
    assert "ai_generated" in lines[1] and "watermark:diffusers-sdxl" in lines[1]
    assert "declaration:a1111" in lines[2] and "no_evidence" in lines[3]
    assert "3 files: ai_generated 2, no_evidence 1" in result.output
    result = runner.invoke(cli, ["detect", str(folder), "--no-probe", "--json"])
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert rows[-1]["summary"]["by_verdict"] == {"ai_generated": 2, "no_evidence": 1}
    assert rows[-1]["summary"]["by_evidence"]["watermark:diffusers-sdxl"] == 1
    assert [r["verdict"] for r in rows[:-1]] == ["ai_generated", "ai_generated", "no_evidence"]


def test_verify_attaches_the_evidence_to_files_without_credentials(
    sdxl_png: Path, tmp_path: Path
) -> None:
    import jsonschema

    from provenance import verify

    schema = json.loads(
        (
            Path(__file__).parents[1] / "provenance" / "schemas" / "detect-report.schema.json"
        ).read_text()
    )
    report = verify(sdxl_png)
    assert report.verdict == "no_provenance" and report.evidence is not None
    jsonschema.validate(report.evidence, schema)
    assert report.evidence["verdict"] == "ai_generated"
    assert [m["name"] for m in report.evidence["watermarks"]] == ["diffusers-sdxl"]
    assert "AI-generated? ai generated: known watermark (diffusers-sdxl)" in report.to_text()
    result = CliRunner().invoke(
        cli, ["detect", str(sdxl_png), str(sdxl_png), "--no-probe", "--json"]
    )
    for line in result.output.splitlines():
        if line.startswith("{"):
            jsonschema.validate(json.loads(line), schema)


def test_images_over_the_mark_budget_are_not_searched_and_say_so(tmp_path: Path) -> None:
    from provenance.detector.known_watermarks import MAX_MARK_PIXELS

    big = _photo("astronaut", 2100).resize((2100, 2100))
    assert MAX_MARK_PIXELS < 2100 * 2100
    report = _quick(_png(tmp_path / "big.png", big))
    assert report.watermarks == () and any("2100x2100 is over" in n for n in report.notes)


def test_folder_mode_reports_an_unreadable_file_and_goes_on(tmp_path: Path) -> None:
    import jsonschema

    folder = tmp_path / "some-bad"
    folder.mkdir()
    _png(folder / "a-a1111.png", _photo(), parameters="a cat\nSteps: 20, Sampler: Euler, Seed: 1")
    (folder / "b-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    _jpeg(folder / "c-photo.jpg", _photo("chelsea"))
    runner = CliRunner()
    result = runner.invoke(cli, ["detect", str(folder), "--no-probe"])
    assert result.exit_code == 4, result.output
    assert "Traceback" not in result.output
    rows = result.output.splitlines()
    assert "declaration:a1111" in rows[1] and "no_evidence" in rows[2]
    assert "b-broken.png" in rows[3] and "unreadable" in rows[3]
    assert "3 files: ai_generated 1, no_evidence 1, unreadable 1" in result.output
    assert "1 of 3 files could not be read" in result.output
    result = runner.invoke(cli, ["detect", str(folder), "--no-probe", "--json"])
    assert result.exit_code == 4
    schema = json.loads(
        (
            Path(__file__).parents[1] / "provenance" / "schemas" / "detect-report.schema.json"
        ).read_text()
    )
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    for line in lines:
        jsonschema.validate(line, schema)
    assert lines[2]["path"].endswith("b-broken.png") and lines[2]["error"]
    assert lines[-1]["summary"]["files"] == {"total": 3, "unreadable": 1}
