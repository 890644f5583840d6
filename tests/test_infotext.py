"""provenance.infotext: the one A1111 infotext codec, the text and the containers.

A1111's own output is the oracle: parameters text as A1111 v1.10 writes it into a PNG, and a
JPEG UserComment laid out byte by byte as piexif writes it (big-endian TIFF, ``UNICODE\\0`` +
UTF-16BE), both built here without the code under test.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from provenance import infotext
from provenance._image_input import read_infotext
from sdkit import Recipe
from sdkit.images import encode_image

# What A1111 v1.10.1 writes into a PNG's "parameters" chunk (infotext_utils.py: values with a
# comma, a colon or a new line are JSON-quoted).
A1111_PNG = (
    "masterpiece, best quality, 1girl, <lora:a:0.8>, (red hair:1.2)\n"
    "Negative prompt: lowres, bad anatomy, (worst quality:1.4)\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, "
    "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
    "Denoising strength: 0.7, Hires upscale: 2, Hires upscaler: Latent, "
    'Lora hashes: "a: 1234", TI hashes: "easynegative: c74b4e810b03, badhandv4: 5e40d722fc3d", '
    'ADetailer prompt: "face, \\"smile\\"", Version: v1.10.1'
)
A1111_PARAMS = {
    "Steps": "20",
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": "7",
    "Seed": "1",
    "Size": "512x512",
    "Model hash": "6ce0161689",
    "Model": "v1-5-pruned-emaonly",
    "Denoising strength": "0.7",
    "Hires upscale": "2",
    "Hires upscaler": "Latent",
    "Lora hashes": "a: 1234",
    "TI hashes": "easynegative: c74b4e810b03, badhandv4: 5e40d722fc3d",
    "ADetailer prompt": 'face, "smile"',
    "Version": "v1.10.1",
}
# A txt2img of A1111 without a negative prompt, multi-line prompt, written into a JPEG.
A1111_JPEG = (
    "a photo of a cat\nsitting on a mat, 8k\n"
    "Steps: 30, Sampler: Euler a, Schedule type: Automatic, CFG scale: 5.5, Seed: 3141592653, "
    "Size: 768x512, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Clip skip: 2, "
    "Version: v1.10.1"
)


def _piexif_jpeg(comment: bytes) -> bytes:
    """A JPEG whose EXIF is laid out as piexif.dump writes it (big-endian TIFF): IFD0 with the
    Exif IFD pointer, the Exif IFD with UserComment (UNDEFINED, stored after the IFDs)."""
    exif_ifd = 8 + 2 + 12 + 4
    data = exif_ifd + 2 + 12 + 4
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">HHHII", 1, 0x8769, 4, 1, exif_ifd) + struct.pack(">I", 0)
    tiff += struct.pack(">HHHII", 1, 0x9286, 7, len(comment), data) + struct.pack(">I", 0)
    tiff += comment
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG", exif=b"Exif\x00\x00" + tiff)
    return buffer.getvalue()


def _png_with_text(text: str) -> bytes:
    """A PNG with a tEXt "parameters" chunk written by hand (Latin-1, as A1111's Pillow does)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "PNG")
    png = buffer.getvalue()
    body = b"parameters\x00" + text.encode("latin-1")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF)
    end = png.index(b"IDAT") - 4  # before the pixels, where Pillow (A1111) writes it
    return png[:end] + chunk + png[end:]


# -- A1111's own files -------------------------------------------------------------------------


def test_reads_a1111_png_parameters_exactly() -> None:
    text = read_infotext(_png_with_text(A1111_PNG))
    assert text == A1111_PNG
    prompt, negative, params = infotext.parse_infotext(A1111_PNG)
    assert prompt == "masterpiece, best quality, 1girl, <lora:a:0.8>, (red hair:1.2)"
    assert negative == "lowres, bad anatomy, (worst quality:1.4)"
    assert params == A1111_PARAMS
    assert list(params) == list(A1111_PARAMS)  # in the text's order


def test_reads_a1111_piexif_jpeg_user_comment_exactly() -> None:
    data = _piexif_jpeg(b"UNICODE\x00" + A1111_JPEG.encode("utf-16-be"))
    assert read_infotext(data) == A1111_JPEG
    parsed = infotext.parse_infotext(A1111_JPEG)
    assert parsed.prompt == "a photo of a cat\nsitting on a mat, 8k"
    assert parsed.negative_prompt == ""
    assert parsed.parameters["Sampler"] == "Euler a"
    assert parsed.parameters["Seed"] == "3141592653"
    assert parsed.parameters["Clip skip"] == "2"


def test_reads_the_other_user_comment_codings() -> None:
    little = b"UNICODE\x00" + "Steps: 1, a: 2, b: 3".encode("utf-16")  # BOM + little-endian
    assert read_infotext(_piexif_jpeg(little)) == "Steps: 1, a: 2, b: 3"
    assert read_infotext(_piexif_jpeg(b"ASCII\x00\x00\x00Steps: 1")) == "Steps: 1"
    assert read_infotext(_piexif_jpeg(b"JIS\x00\x00\x00\x00\x00Steps: 1")) is None


def test_malformed_exif_counts_as_none() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG", exif=b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xff")
    assert read_infotext(buffer.getvalue()) is None


def test_sdkit_writes_what_a1111_writes() -> None:
    """The bytes of sdkit's UserComment are piexif's: "UNICODE\\0" + UTF-16BE, no BOM."""
    image = Image.open(io.BytesIO(encode_image(Image.new("RGB", (8, 8)), "jpeg", infotext="é")))
    raw = image.getexif().get_ifd(infotext.EXIF_IFD)[infotext.USER_COMMENT]
    assert raw == b"UNICODE\x00\x00\xe9"


def test_png_chunk_is_text_when_latin1_else_international() -> None:
    latin = encode_image(Image.new("RGB", (8, 8)), "png", infotext="café, Steps: 1")
    other = encode_image(Image.new("RGB", (8, 8)), "png", infotext="猫 🐈, Steps: 1")
    assert b"tEXtparameters\x00caf\xe9" in latin
    assert b"iTXtparameters" in other
    assert read_infotext(latin) == "café, Steps: 1"
    assert read_infotext(other) == "猫 🐈, Steps: 1"


# -- the text ----------------------------------------------------------------------------------


def test_format_quotes_as_a1111_does() -> None:
    assert infotext.quote("plain") == "plain"
    assert infotext.quote("a, b") == '"a, b"'
    assert infotext.quote("a: b") == '"a: b"'
    assert infotext.quote("two\nlines") == '"two\\nlines"'
    assert infotext.quote('"starts quoted') == '"\\"starts quoted"'
    assert infotext.quote("猫") == "猫"
    assert infotext.unquote('"a, b"') == "a, b"
    assert infotext.unquote('"broken') == '"broken'
    assert infotext.unquote('"1"') == "1"
    assert infotext.format_value(7.0) == "7.0" and infotext.format_value(7) == "7"


def test_fewer_than_three_pairs_are_prompt_text() -> None:
    parsed = infotext.parse_infotext("a cat\nstyle: oil, mood: calm")
    assert parsed == ("a cat\nstyle: oil, mood: calm", "", {})


TRICKY = [
    ("Steps", 20),
    ("CFG scale", 7.5),
    ("Commas", "a, b, c"),
    ("Colons", "k: v"),
    ("Quotes", '"quoted", and \\ backslash'),
    ("Lines", "one\ntwo"),
    ("Unicode", "猫 🐈 é"),
    ("JSON", '{"a": [1, 2], "b": "c, d"}'),
]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_every_kind_of_value_round_trips_through_each_container(fmt: str) -> None:
    text = infotext.format_infotext("a (red:1.2) cat, 🐈\nline two", "dog, blurry\nugly", TRICKY)
    data = encode_image(Image.new("RGB", (16, 16)), fmt, infotext=text)  # type: ignore[arg-type]
    assert read_infotext(data) == text
    with Image.open(io.BytesIO(data)) as image:
        assert infotext.from_image(image, loaded=False) == text
        image.load()
        assert infotext.from_image(image) == text
    parsed = infotext.parse_infotext(text)
    assert parsed.prompt == "a (red:1.2) cat, 🐈\nline two"
    assert parsed.negative_prompt == "dog, blurry\nugly"
    assert parsed.parameters == {k: infotext.format_value(v) for k, v in TRICKY}


def _every_field() -> Recipe:
    return Recipe(
        prompt="a (red:1.3) circle, on blue\nsecond line: yes",
        negative_prompt="blurry, low quality",
        model="C:\\models\\my model, v2.safetensors",
        model_sha256="ab" * 32,
        pipeline="StableDiffusionXLInpaintPipeline",
        sampler="DPM++ 2M SDE",
        schedule="karras",
        scheduler="DPMSolverMultistepScheduler",
        scheduler_config={"use_karras_sigmas": True, "beta_start": 0.00085, "x": "a, b"},
        steps=30,
        guidance_scale=7.25,
        guidance_rescale=0.7,
        clip_skip=2,
        seed=4294967295,
        width=1024,
        height=768,
        mode="inpaint",
        strength=0.55,
        init_image_sha256="cd" * 32,
        mask_sha256="ef" * 32,
        feature_cache=3,
        dtype="float16",
        versions={"sdkit": "0.1.0", "diffusers": "0.42.1", "torch": "2.5.1+cu124"},
    )


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
@pytest.mark.parametrize("sampler", ["DPM++ 2M SDE", None])
def test_every_recipe_field_round_trips_through_each_format(fmt: str, sampler: str | None) -> None:
    recipe = Recipe(**{**_every_field().__dict__, "sampler": sampler})
    data = encode_image(Image.new("RGB", (16, 16)), fmt, infotext=recipe.to_infotext())  # type: ignore[arg-type]
    text = read_infotext(data)
    assert text == recipe.to_infotext()
    assert text is not None and Recipe.from_infotext(text) == recipe
