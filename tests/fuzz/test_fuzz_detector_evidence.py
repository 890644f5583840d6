"""Fuzzing the detector's readers of file content: declarations, known marks, the evidence report.

Targets: :func:`provenance.detector.assess` (IPTC ``DigitalSourceType`` in the XMP of PNG iTXt,
JPEG APP1 and WebP; A1111 ``parameters``, ComfyUI ``prompt`` / ``workflow``, NovelAI
``Software`` + ``Comment`` and InvokeAI ``invokeai_metadata`` / ``sd-metadata`` / ``Dream``
text chunks; the public marks on damaged pixels) and ``sdkit detect FILE`` /
``sdkit detect FOLDER --no-probe --json`` (click's CliRunner on
:data:`provenance.cli.detect_group`). Property: a report or a
:class:`~provenance.errors.ProvenanceError`, within 2 s of CPU and 64 MB; the CLI exits with a
code of :class:`~provenance.cli.ExitCode` and prints no traceback.

What is asserted besides (the decisions, docs/detector.md): an XMP declaration is found when
its text is intact in the first MiB of a packet the container delivers (a PNG iTXt must be
UTF-8, Pillow drops one that is not), whatever surrounds it (entities, DTDs, deep nesting, huge
attributes, bytes that are not UTF-8, thousands of other source types); it is never found when
only an entity, a non-AI source type or a cut copy says so (no entity is expanded). A
generation-parameter chunk declares only when it parses to its UI's shape; JSON nested 100,000
deep, 5,000-digit numbers and over-cap chunks are no declaration.
"""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from click.testing import CliRunner
from fuzzing import bounded, budget, typed_message
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from provenance.cli import ExitCode, detect_group
from provenance.detector import EvidenceReport, assess
from provenance.detector.declarations import MAX_JSON_CHARS, MAX_XMP_CHARS
from provenance.errors import ProvenanceError

AI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CORE = (
    "<rdf:Description xmlns:Iptc4xmpExt='http://iptc.org/std/Iptc4xmpExt/2008-02-29/' "
    f"Iptc4xmpExt:DigitalSourceType='{AI}'/>"
).encode()
#: Pillow inflates a compressed PNG text chunk up to this size, and refuses the file beyond.
PNG_TEXT_LIMIT = PngImagePlugin.MAX_TEXT_CHUNK
EXIT_CODES = {int(code) for code in ExitCode}

# pieces around the declaration: billion laughs, external entities, deep nesting, other values
_LAUGHS = (
    b"<!DOCTYPE x [<!ENTITY a 'lol'>"
    + b"".join(
        f"<!ENTITY {chr(98 + i)} '{('&' + chr(97 + i) + ';') * 10}'>".encode() for i in range(9)
    )
    + b"]><x>&j;</x>"
)
_PIECES = st.sampled_from(
    [_LAUGHS, b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>&e;",
     b"<!DOCTYPE x [<!ENTITY % p SYSTEM 'http://127.0.0.1:9/x.dtd'> %p;]>",
     b"<!ENTITY t 'trainedAlgorithmicMedia'>",
     b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>", b"</x:xmpmeta>", b"<rdf:RDF>", b"</rdf:RDF>",
     b"Iptc4xmpExt:DigitalSourceType='http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture'",
     b"<Iptc4xmpExt:DigitalSourceType rdf:resource='x/minorHumanEdits'/>",
     b"Iptc4xmpExt:DigitalSourceType", b":DigitalSourceType=", b"rdf:resource='", b"&t;",
     b"\xff\xfe", b"\xc3(", b"\x00", b"<", b">", b"'", b'"', b"=", b" ", b"\n"]
)  # fmt: skip
_REPEATED = st.sampled_from(
    [b"<a>", b"<a b='", b"x:DigitalSourceType", b"x:DigitalSourceType='digitalCapture' ",
     b"x:DigitalSourceType ", b"x:DigitalSourceType>", b"a:DigitalSourceType='" + b"a" * 60,
     b"rdf:resource='", b"&a;", b"\xff", b"a" * 39 + b":"]
)  # fmt: skip


@st.composite
def hostile_text(draw: st.DrawFn) -> bytes:
    """Junk for either side of the declaration: pieces, a unit repeated, a huge attribute."""
    kind = draw(st.sampled_from(["pieces", "repeated", "attribute", "bytes"]))
    if kind == "pieces":
        return b"".join(draw(st.lists(_PIECES, max_size=20)))
    if kind == "repeated":
        return draw(_REPEATED) * draw(st.integers(1, 50_000))
    if kind == "attribute":
        return b"<rdf:Description x='" + b"A" * draw(st.integers(0, 600_000)) + b"'/>"
    return draw(st.binary(max_size=300))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _base(fmt: str, size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (120, 60, 30)).save(out, fmt)
    return out.getvalue()


_PNG, _JPEG = _base("PNG"), _base("JPEG")


def png_with(chunks: list[bytes], base: bytes = _PNG) -> bytes:
    """``base`` with the chunks inserted after IHDR (8 bytes of magic, 25 of IHDR)."""
    return base[:33] + b"".join(chunks) + base[33:]


def png_xmp(packet: bytes, compressed: bool = False) -> bytes:
    text = zlib.compress(packet) if compressed else packet
    head = b"XML:com.adobe.xmp\x00" + bytes([int(compressed), 0]) + b"\x00\x00"
    return png_with([_png_chunk(b"iTXt", head + text)])


def jpeg_xmp(packet: bytes) -> bytes:
    body = b"http://ns.adobe.com/xap/1.0/\x00" + packet
    return _JPEG[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + _JPEG[2:]


def webp_xmp(packet: bytes) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 60, 30)).save(out, "WEBP", xmp=packet)
    return out.getvalue()


def _report(data: bytes, *, seconds: float = 2.0) -> EvidenceReport | ProvenanceError:
    result = bounded(assess, data, sdkit_watermark=False, seconds=seconds, megabytes=64)
    if isinstance(result, BaseException):
        assert isinstance(result, ProvenanceError), repr(result)
        typed_message(result)
    else:
        assert isinstance(result, EvidenceReport), repr(result)
    return result


def _sources(report: EvidenceReport) -> list[str]:
    return [d.source for d in report.declarations]


def _delivered(container: str, packet: bytes) -> bool:
    """Whether the reader sees the intact declaration: the container hands the packet over
    whole, and the declaration ends within the first MAX_XMP_CHARS characters searched."""
    if container == "jpeg" and len(packet) + 31 > 0xFFFF:
        return False  # one APP1 segment holds at most 64 KiB
    if container == "png":
        try:
            text = packet.decode("utf-8")
        except UnicodeDecodeError:
            return False  # Pillow drops an iTXt that is not UTF-8
    else:  # JPEG and WebP XMP are bytes: the first MAX_XMP_CHARS of them are decoded
        text = packet[:MAX_XMP_CHARS].decode("utf-8", "replace")
    at = text.find(CORE.decode())
    return at != -1 and at + len(CORE) <= MAX_XMP_CHARS


@settings(max_examples=budget(40))
@given(
    hostile_text(),
    hostile_text(),
    st.sampled_from(["png", "png-zlib", "jpeg", "webp"]),
    st.booleans(),
)
@example(_LAUGHS, b"", "png", True)  # billion laughs before it: no entity expanded
@example(b"x:DigitalSourceType" * 55_000, b"", "webp", True)  # 1 MB of keys (was 5 s of CPU)
@example(b"\xff\xfe", b"", "webp", True)  # not UTF-8: a WebP's bytes are still searched
@example(b"\xff\xfe", b"", "png", True)  # ... a PNG iTXt that is not UTF-8 is dropped
@example(b"<a>" * 100_000, b"</a>" * 100_000, "png-zlib", True)  # deep nesting
@example(b"<rdf:Description x='" + b"A" * (MAX_XMP_CHARS + 10), b"'/>", "webp", True)  # past cap
def test_xmp_declaration_in_hostile_packets(
    before: bytes, after: bytes, container: str, declared: bool
) -> None:
    packet = before + (CORE if declared else b"") + after
    data = {
        "png": lambda p: png_xmp(p),
        "png-zlib": lambda p: png_xmp(p, compressed=True),
        "jpeg": jpeg_xmp,
        "webp": webp_xmp,
    }[container](packet)
    report = _report(data)
    if container == "png-zlib" and len(packet) > PNG_TEXT_LIMIT:
        return  # Pillow refuses to inflate it: a typed error (not an image sdkit can read)
    assert isinstance(report, EvidenceReport), f"a valid {container} was refused: {report!r}"
    found = "xmp-iptc" in _sources(report)
    if declared and _delivered(container.split("-")[0], packet):
        assert found, f"the declaration in a {len(packet):,}-byte {container} packet was missed"
        assert report.verdict == "ai_generated" and "declaration" in report.decided_by
    elif not declared:
        # only non-AI values, entities, keys without a value: never a declaration
        assert not found, report
        assert report.verdict == "no_evidence", report


def test_xmp_declaration_behind_an_entity_or_cut_is_not_found() -> None:
    """No entity is expanded (so ``&t;`` declares nothing) and a value cut short is no value."""
    behind_entity = (
        b"<!DOCTYPE x [<!ENTITY t '" + AI.encode() + b"'>]>"
        b"<rdf:Description Iptc4xmpExt:DigitalSourceType='&t;'/>"
    )
    cut = CORE[: CORE.index(b"trained") + 7]
    for packet in (behind_entity, cut, CORE.replace(b"trained", b"untrained")):
        report = _report(png_xmp(packet))
        assert isinstance(report, EvidenceReport) and report.declarations == (), report
    many = b"x:DigitalSourceType='digitalCapture' " * 20_000 + CORE  # the AI value is the last
    report = _report(webp_xmp(many))
    assert isinstance(report, EvidenceReport) and _sources(report) == ["xmp-iptc"]
    assert (
        report.declarations[0].detail == "XMP Iptc4xmpExt:DigitalSourceType trainedAlgorithmicMedia"
    )


# --- generation parameters in PNG text chunks ------------------------------------------------

_COMFY_PROMPT = '{"3": {"class_type": "KSampler", "inputs": {"seed": 1, "cfg": NaN}}}'
_COMFY_WORKFLOW = '{"nodes": [{"id": 3, "type": "KSampler"}], "links": [], "x": Infinity}'
_OBJECT = '{"prompt": "a cat", "steps": 20, "seed": -Infinity}'
_A1111 = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"
_DEEP = st.integers(100_000, 300_000)


def _deep(n: int, kind: str) -> str:
    if kind == "array":
        return "[" * n + "]" * n
    if kind == "object":
        return '{"a":' * n + "1" + "}" * n
    return '{"3": {"class_type": ' + "[" * n + "]" * n + "}}"  # a Comfy node, too deep


# (label, text): the label is what the value parses to: comfy-prompt, comfy-workflow, object
# (any other JSON object), none (not a JSON object), or maybe (any text: not predicted)
VALUES = st.one_of(
    st.sampled_from(
        [
            ("comfy-prompt", _COMFY_PROMPT),
            ("comfy-workflow", _COMFY_WORKFLOW),
            ("object", _OBJECT),
            ("none", "NaN"),
            ("none", "[1, 2]"),
            ("none", '"text"'),
            ("none", "null"),
            ("none", "1e999999"),
            ("none", "9" * 5_000),
            ("none", '{"3": ' + "9" * 5_000 + "}"),
            ("none", '{"3": {"class_type": "KSampler"}'),
            ("none", "{" * 50_000),
            ("none", ""),
            ("none", "{" + " " * MAX_JSON_CHARS + "}"),
            ("a1111", _A1111),
            ("none", "Steps: " + "9" * 5_000),
        ]
    ),
    st.tuples(_DEEP, st.sampled_from(["array", "object", "node"])).map(
        lambda t: ("none", _deep(*t))
    ),
    st.text(max_size=200).map(lambda t: ("maybe", t)),
)
KEYS = st.sampled_from(
    ["prompt", "workflow", "Comment", "invokeai_metadata", "sd-metadata", "Dream", "parameters"]
)
SOFTWARE = st.sampled_from(["NovelAI", "NovelAI Diffusion V4 37C1A7F1", "GIMP 2.10", "", "Novel"])


def _text_chunk(key: str, value: str, how: str) -> bytes:
    if how == "tEXt":
        return _png_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1"))
    if how == "zTXt":
        data = key.encode("latin-1") + b"\x00\x00" + zlib.compress(value.encode("latin-1"))
        return _png_chunk(b"zTXt", data)
    return _png_chunk(b"iTXt", key.encode() + b"\x00\x00\x00\x00\x00" + value.encode())


@settings(max_examples=budget(40))
@given(
    st.dictionaries(KEYS, st.tuples(VALUES, st.sampled_from(["tEXt", "zTXt", "iTXt"])), max_size=4),
    SOFTWARE,
)
def test_generation_parameters_in_hostile_chunks(
    chunks: dict[str, tuple[tuple[str, str], str]], software: str
) -> None:
    labels = {key: label for key, ((label, _), _) in chunks.items()}
    parts = []
    for key, ((_, value), how) in chunks.items():
        if how != "iTXt" and not value.isascii():
            how = "iTXt"  # tEXt and zTXt are Latin-1: the text goes in an iTXt
        parts.append(_text_chunk(key, value, how))
    if software:
        parts.append(_text_chunk("Software", software, "tEXt"))
    report = _report(png_with(parts), seconds=3.0)
    if isinstance(report, ProvenanceError):
        # only Pillow's own text limits (a zTXt inflating past 1 MiB) refuse the file
        assert any(how == "zTXt" and len(v) > PNG_TEXT_LIMIT for (_, v), how in chunks.values()), (
            report
        )
        return
    sources = _sources(report)
    if "maybe" in labels.values():
        return  # any text: only the property (typed, bounded) holds
    objects = ("comfy-prompt", "comfy-workflow", "object")
    comfy = labels.get("prompt") == "comfy-prompt" or labels.get("workflow") == "comfy-workflow"
    assert ("comfyui" in sources) == comfy, (labels, sources)
    novelai = software.startswith("NovelAI") and labels.get("Comment") in objects
    assert ("novelai" in sources) == novelai, (labels, software, sources)
    invokeai = "Dream" in labels or any(
        labels.get(k) in objects for k in ("invokeai_metadata", "sd-metadata")
    )
    assert ("invokeai" in sources) == invokeai, (labels, sources)
    assert ("a1111" in sources) == (labels.get("parameters") == "a1111"), (labels, sources)
    assert (report.verdict == "ai_generated") == bool(sources), report
    assert report.decided_by == (("declaration",) if sources else ()), report


def test_huge_parameters_text_is_read_from_its_end() -> None:
    """A 6 MB prompt before the parameters line: found, within the bound (the whole text took
    the infotext parser about 6 s); 6 MB of JSON nesting is no declaration."""
    line = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Model: x"
    for text, found in (
        ("a cat, " * 900_000 + "\n" + line, True),
        (_deep(500_000, "object"), False),
    ):
        report = _report(png_with([_text_chunk("parameters", text, "tEXt")]))
        assert isinstance(report, EvidenceReport), report
        assert _sources(report) == (["a1111"] if found else []), report


# --- damaged files ---------------------------------------------------------------------------


def _seed_files() -> list[bytes]:
    """A 256 px PNG (searched for the public marks), JPEG and WebP, each with a declaration."""
    image = Image.effect_noise((256, 256), 40).convert("RGB")
    png = io.BytesIO()
    image.save(png, "PNG")
    jpeg = io.BytesIO()
    image.save(jpeg, "JPEG", xmp=CORE)
    webp = io.BytesIO()
    image.save(webp, "WEBP", xmp=CORE)
    prompt = _text_chunk("prompt", _COMFY_PROMPT, "tEXt")
    return [png_with([prompt], png.getvalue()), jpeg.getvalue(), webp.getvalue()]


SEEDS = _seed_files()


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A seed file cut anywhere, with bytes flipped, overwritten or inserted; or magic + junk."""
    if draw(st.integers(0, 5)) == 0:
        magic = draw(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF", b""]))
        return magic + draw(st.binary(max_size=300))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(["flip", "run", "insert"]))
        if edit == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "run":
            data[at : at + 8] = draw(st.binary(min_size=8, max_size=8))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    cut = draw(st.none() | st.integers(0, len(data)))
    return bytes(data if cut is None else data[:cut])


@settings(max_examples=budget(40))
@given(damaged())
def test_damaged_files_give_a_report_or_a_typed_error(data: bytes) -> None:
    report = _report(data, seconds=3.0)
    if isinstance(report, EvidenceReport):
        assert report.verdict in ("ai_generated", "no_evidence"), report  # no probe ran
        assert report.watermarks == (), report  # noise carries none of the public marks


def test_seed_files_declare() -> None:
    """The undamaged seeds are found (the damaged ones above start from real declarations)."""
    reports = [_report(seed, seconds=5.0) for seed in SEEDS]
    found = [_sources(r) if isinstance(r, EvidenceReport) else r for r in reports]
    assert found == [["comfyui"], ["xmp-iptc"], ["xmp-iptc"]]


# --- the command line ------------------------------------------------------------------------

FILES = st.one_of(
    damaged(),
    st.tuples(hostile_text(), st.booleans()).map(lambda t: png_xmp(t[0] + CORE * t[1])),
    st.tuples(VALUES, KEYS).map(lambda t: png_with([_text_chunk(t[1], t[0][1], "iTXt")])),
)


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(detect_group, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"sdkit detect raised {result.exception!r}") from result.exception
    return result.exit_code, result.output


@settings(max_examples=budget(12))
@given(st.lists(FILES, min_size=1, max_size=3))
def test_detect_command_exits_with_a_table_code(
    tmp_path_factory: pytest.TempPathFactory, files: list[bytes]
) -> None:
    folder = tmp_path_factory.mktemp("detect")
    paths = []
    for i, data in enumerate(files):
        (path := folder / f"f{i}.png").write_bytes(data)
        paths.append(str(path))
    _run([paths[0]])  # warm: imports and the default detector's cache check, outside the bound
    for args in ([paths[0]], [str(folder), "--no-probe", "--json"], [*paths, "--no-probe"]):
        result = bounded(_run, args, seconds=8.0)
        assert isinstance(result, tuple), result  # _run raises nothing typed: click catches it
        code, output = result
        assert code in EXIT_CODES, (args, code, output)
        assert "Traceback" not in output, output
        assert code in (ExitCode.OK, ExitCode.FILE, ExitCode.MODEL), (args, code, output)
        if code == ExitCode.FILE:
            assert "error:" in output and "hint:" in output, output
        if code == ExitCode.OK and "--json" in args:
            lines = [json.loads(line) for line in output.splitlines()]
            assert lines[-1]["summary"]["files"]["total"] == len(files), output
            assert all(line["verdict"] in ("ai_generated", "no_evidence") for line in lines[:-1])
