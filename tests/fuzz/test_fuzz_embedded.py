"""Fuzzing the readers of metadata inside image files: XMP (IPTC ``plus:DataMining``) in PNG
iTXt, JPEG APP1 and WebP chunks, and the infotext of PNG text chunks and JPEG EXIF.

Targets: :func:`provenance.optout.embedded.file_signals` and
:func:`~provenance.optout.embedded.xmp_signals`; :meth:`provenance.optout.OptOutChecker.check`
on bytes (the whole in-file path); :func:`provenance.verify.read_infotext`. Property: signals
(or an infotext string or None), no exception, within 2 s of CPU and 64 MB (XMP is inflated to
a bounded size, never to what a zlib bomb asks).
"""

from __future__ import annotations

import struct
import zlib

from fuzzing import bounded, budget
from hypothesis import given, settings
from hypothesis import strategies as st

from provenance.optout import Decision, OptOutChecker
from provenance.optout.decision import Signal
from provenance.optout.embedded import file_signals, xmp_signals
from provenance.verify import read_infotext

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IHDR = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1x1, 8-bit grey
IDAT = zlib.compress(b"\x00\x00")
_VALUES = ("allowed", "disallowed", "unknown")


def chunk(kind: bytes, data: bytes, *, crc: bool = True) -> bytes:
    """One PNG chunk (with a right CRC, or a wrong one)."""
    check = zlib.crc32(kind + data) if crc else 0
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", check)


_XMP_PIECES = st.sampled_from(
    [b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>", b"</x:xmpmeta>", b"<x:xmpmeta>",
     b"<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>", b"</rdf:RDF>",
     b"<rdf:Description xmlns:plus='http://ns.useplus.org/ldf/xmp/1.0/' ",
     b"plus:DataMining='DMI-PROHIBITED-AIMLTRAINING'", b"/>", b">", b"<plus:DataMining>",
     b"</plus:DataMining>", b"DataMining", b"<!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'>]>", b"&a;",
     b"<!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>", b"&#0;", b"\x00", b"\xff", b"<", b"'"]
)  # fmt: skip
XMP = st.one_of(
    st.lists(_XMP_PIECES, max_size=40).map(b"".join),
    # an unclosed packet, repeated (the old regex took 29 s on 200 KB)
    st.tuples(_XMP_PIECES, st.integers(1, 100_000)).map(lambda t: b"<x:xmpmeta>" + t[0] * t[1]),
    st.binary(max_size=200),
)


@st.composite
def itxt(draw: st.DrawFn) -> bytes:
    """An iTXt chunk's data: keyword, flag, method, language, translated keyword, text; maybe
    compressed (well or badly), maybe cut anywhere."""
    keyword = draw(
        st.sampled_from([b"XML:com.adobe.xmp", b"parameters", b"", b"XML:com.adobe.xmp\x00x"])
    )
    flag = draw(st.sampled_from([0, 1, 2, 255]))
    text = draw(XMP)
    how = draw(st.sampled_from(["plain", "zlib", "garbage", "bomb"]))
    if flag and how == "zlib":
        text = zlib.compress(text)
    elif flag and how == "bomb":
        text = zlib.compress(b"\x00" * draw(st.integers(1, 64 * 2**20)), 9)
    elif flag and how == "garbage":
        text = draw(st.binary(max_size=50))
    data = keyword + b"\x00" + bytes([flag, draw(st.sampled_from([0, 1]))])
    data += draw(st.sampled_from([b"", b"en"])) + b"\x00" + b"\x00" + text
    cut = draw(st.none() | st.integers(0, len(data)))
    return data if cut is None else data[:cut]


@st.composite
def pngs(draw: st.DrawFn) -> bytes:
    chunks = [chunk(b"IHDR", IHDR)]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from([b"iTXt", b"iTXt", b"tEXt", b"zTXt", b"caBX", b"eXIf"]))
        if kind == b"iTXt":
            data = draw(itxt())
        elif kind == b"tEXt":
            data = b"parameters\x00" + draw(st.binary(max_size=100))
        else:
            data = draw(st.binary(max_size=100))
        chunks.append(chunk(kind, data, crc=draw(st.booleans())))
    chunks += [chunk(b"IDAT", IDAT), chunk(b"IEND", b"")]
    data = PNG_MAGIC + b"".join(draw(st.permutations(chunks)) if draw(st.booleans()) else chunks)
    if draw(st.integers(0, 4)) == 0:  # a length field that lies
        at = draw(st.integers(8, len(data) - 4))
        data = data[:at] + draw(st.binary(min_size=4, max_size=4)) + data[at + 4 :]
    return data


@st.composite
def jpegs(draw: st.DrawFn) -> bytes:
    """SOI, APPn segments (XMP, EXIF with a UserComment, junk) with any lengths, SOS, EOI."""
    segments = []
    for _ in range(draw(st.integers(0, 4))):
        marker = draw(st.sampled_from([0xE1, 0xE1, 0xEB, 0xFE, 0x01, 0xD0, 0xFF, 0xDA]))
        body = draw(
            st.sampled_from([b"http://ns.adobe.com/xap/1.0/\x00", b"Exif\x00\x00", b"JP", b""])
        ) + draw(XMP | st.binary(max_size=60))
        length = draw(st.none() | st.integers(0, 0xFFFF))
        size = len(body) + 2 if length is None else length
        segments.append(bytes([0xFF, marker]) + struct.pack(">H", size & 0xFFFF) + body)
    tail = draw(st.sampled_from([b"\xff\xda\x00\x02\xff\xd9", b"", b"\xff\xd9", b"\xff"]))
    return b"\xff\xd8" + b"".join(segments) + tail


@st.composite
def webps(draw: st.DrawFn) -> bytes:
    chunks = b""
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from([b"XMP ", b"EXIF", b"VP8X", b"C2PA", b"VP8L"]))
        data = draw(XMP | st.binary(max_size=60))
        size = draw(st.none() | st.integers(0, 2**32 - 1))
        chunks += kind + struct.pack("<I", len(data) if size is None else size) + data
    return b"RIFF" + struct.pack("<I", len(chunks) + 4) + b"WEBP" + chunks


FILES = st.one_of(pngs(), jpegs(), webps(), st.binary(max_size=200))


def _valid(signals: object) -> None:
    assert isinstance(signals, list), repr(signals)
    for signal in signals:
        assert isinstance(signal, Signal) and signal.value in _VALUES, signal


@settings(max_examples=budget(200))
@given(FILES)
def test_file_metadata_gives_signals(data: bytes) -> None:
    _valid(bounded(file_signals, data, "<fuzz>", seconds=2.0, megabytes=64))


@settings(max_examples=budget(20))
@given(
    st.sampled_from([b"<x:xmpmeta>", b"<x:xmpmeta ", b"<x:xmpmeta>DataMining"]),
    st.integers(1, 30_000),
    st.sampled_from([b"\xff\xd8\xff\xe1", b"RIFF\x00\x00\x00\x00WEBP", b""]),
)
def test_unclosed_xmp_is_found_in_bounded_time(piece: bytes, count: int, start: bytes) -> None:
    _valid(bounded(file_signals, start + piece * count, "<fuzz>", seconds=2.0, megabytes=64))


@settings(max_examples=budget(100))
@given(XMP)
def test_xmp_packets_give_signals(xmp: bytes) -> None:
    _valid(bounded(xmp_signals, xmp, "<fuzz>", seconds=2.0, megabytes=64))


@settings(max_examples=budget(60))
@given(FILES)
def test_checker_on_file_bytes_decides(data: bytes) -> None:
    decision = bounded(OptOutChecker().check, data, seconds=3.0)
    assert isinstance(decision, Decision) and decision.verdict in _VALUES, repr(decision)


@settings(max_examples=budget(100))
@given(FILES)
def test_infotext_reader_never_raises(data: bytes) -> None:
    text = bounded(read_infotext, data, seconds=2.0, megabytes=64)
    assert text is None or isinstance(text, (str, BaseException)), repr(text)
