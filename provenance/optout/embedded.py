"""Opt-outs written inside the file: C2PA / CAWG training-and-mining, IPTC ``plus:DataMining``.

* C2PA: the active manifest's ``c2pa.training-mining`` or ``cawg.training-mining`` assertion
  (read by :func:`provenance.manifest.read_manifest`, the reader ``verify`` uses; labels
  matched by the same :func:`~provenance.manifest.base_label`). Each entry names a use; for the uses that matter to dataset builders
  (:data:`DEFAULT_USES`) ``notAllowed`` disallows, ``constrained`` also disallows (its
  constraints cannot be checked by a machine), ``allowed`` allows. sdkit's own outputs carry
  ``cawg.ai_generative_training: notAllowed`` by default, so they are disallowed too. A manifest
  that is present but unreadable, or only referenced remotely, is unknown; one whose signature
  does not validate (or is not checked: the default reads without validation, about 4x
  faster) still states the creator's wish and counts, so a file with a broken signature that
  says ``notAllowed`` is disallowed (fail closed), and one that says ``allowed`` is allowed: an
  invalid manifest may carry any training-and-mining entry, and each counts as stated.
* XMP (IPTC Photo Metadata 2023.1, PLUS vocabulary): ``plus:DataMining`` with any
  ``DMI-PROHIBITED-*`` value disallows, ``DMI-ALLOWED`` allows, ``DMI-UNSPECIFIED`` says nothing.
  An XMP packet that mentions data mining but does not parse is unknown.

Example:
    >>> xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf='
    ...        b'"http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    ...        b'xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/" plus:DataMining='
    ...        b'"http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-AIMLTRAINING"/></rdf:RDF></x:xmpmeta>')
    >>> [(s.name, s.value, s.evidence) for s in xmp_signals(xmp, "a.jpg")]
    [('iptc-data-mining', 'disallowed', 'plus:DataMining = DMI-PROHIBITED-AIMLTRAINING')]
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any
from xml.parsers import expat

from ..manifest import TRAINING_MINING_LABELS, base_label, read_manifest
from .decision import Signal, Value, few_signals

__all__ = [
    "CAWG_VALUES",
    "DEFAULT_USES",
    "MAX_JPEG_MARKERS",
    "MAX_XMP",
    "TRAINING_LABELS",
    "file_signals",
    "iptc_value",
    "jpeg_header_end",
    "sniff_mime",
    "xmp_signals",
]

#: C2PA (1.x) and CAWG labels of the training-and-mining assertion (as ``verify`` reads them).
TRAINING_LABELS = TRAINING_MINING_LABELS
#: Uses (without the ``c2pa.`` / ``cawg.`` prefix) that a dataset for AI training falls under.
DEFAULT_USES = ("ai_training", "ai_generative_training", "data_mining")
#: Entry value -> signal value.
CAWG_VALUES: Mapping[str, Value] = {
    "notAllowed": "disallowed",
    "constrained": "disallowed",
    "allowed": "allowed",
}
#: plus:DataMining code prefix -> signal value (None: no signal); the first prefix that fits wins.
IPTC_VALUES: tuple[tuple[str, Value | None], ...] = (
    ("DMI-PROHIBITED", "disallowed"),
    ("DMI-ALLOWED", "allowed"),
    ("DMI-UNSPECIFIED", None),
)
_DATA_MINING = "http://ns.useplus.org/ldf/xmp/1.0/ DataMining"  # as expat names it
_MAX_LABEL = 256  # characters of a label, use or value shown in evidence
_RDF_RESOURCE = "http://www.w3.org/1999/02/22-rdf-syntax-ns# resource"
#: Bytes of an XMP packet read at most (a larger one, or a PNG chunk inflating beyond it, is
#: unreadable: an ``unknown`` signal).
MAX_XMP = 1024 * 1024
_XML_FEED = 16 * 1024
_PNG_XMP_KEYWORD = b"XML:com.adobe.xmp\x00"
_PNG_XMP_CHUNK = b"iTXt" + _PNG_XMP_KEYWORD
_XML_SPACE = (b" ", b"\t", b"\r", b"\n")
_XML_SPACE_OR_CLOSE = (*_XML_SPACE, b">")
#: Markers of a JPEG walked looking for its scan (more: the metadata is read from the whole file).
MAX_JPEG_MARKERS = 1_000
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"WEBP", 8, "image/webp"),
    (b"GIF8", 0, "image/gif"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
    (b"ftypavif", 4, "image/avif"),
    (b"ftypheic", 4, "image/heic"),
)


def sniff_mime(data: bytes) -> str | None:
    """The image type from the first bytes, or None.

    Example:
        >>> sniff_mime(b"\\x89PNG\\r\\n\\x1a\\n...."), sniff_mime(b"hello")
        ('image/png', None)
    """
    return next((m for magic, at, m in _MAGIC if data[at : at + len(magic)] == magic), None)


def jpeg_header_end(data: bytes) -> int | None:
    """Offset of a JPEG's start-of-scan marker, where its metadata (APPn segments) ends.

    At most :data:`MAX_JPEG_MARKERS` markers are walked (a real file has a few dozen before
    its scan), so a call takes milliseconds even on 32 MB of 4-byte segments or fill bytes.

    Returns:
        The offset, ``None`` when more bytes are needed, or ``-1`` when the segments do not
        parse or are too many (then read the whole file).
    """
    i = 2
    for _ in range(MAX_JPEG_MARKERS):
        if i + 4 > len(data):
            return None
        if data[i] != 0xFF:
            return -1
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0xDA:
            return i
        elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return -1


def iptc_value(code: str) -> Value | None:
    """A ``plus:DataMining`` value (code or vocabulary URI) -> signal value.

    Example:
        >>> iptc_value("DMI-PROHIBITED-GENAIMLTRAINING"), iptc_value("DMI-UNSPECIFIED")
        ('disallowed', None)
    """
    name = code.strip().rsplit("/", 1)[-1].upper()
    return next((value for prefix, value in IPTC_VALUES if name.startswith(prefix)), "unknown")


class MalformedMetadata(ValueError):
    """Metadata in a file that cannot be read (a cut or corrupt chunk, a packet over its cap)."""


def _png_xmp(data: bytes) -> bytes | None:
    """The XMP packet of a PNG's ``iTXt XML:com.adobe.xmp`` chunk (compressed or not).

    The chunk is found by its type and keyword (one ``bytes.find``, linear in the file, where
    walking a file of millions of empty chunks would take seconds), then read field by field.

    Raises:
        MalformedMetadata: the chunk is cut short, its compressed text is not zlib data, or
            it inflates beyond :data:`MAX_XMP` bytes.
    """
    at = data.find(_PNG_XMP_CHUNK, 12)
    if at < 0:
        return None
    length = int.from_bytes(data[at - 4 : at], "big")
    body = data[at + 4 : at + 4 + length]
    if len(body) < length or length < len(_PNG_XMP_KEYWORD) + 2:
        raise MalformedMetadata("the PNG's XMP chunk (iTXt) is cut short")
    compressed, method = body[len(_PNG_XMP_KEYWORD)], body[len(_PNG_XMP_KEYWORD) + 1]
    rest = body[len(_PNG_XMP_KEYWORD) + 2 :]
    _lang, _, rest = rest.partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    if not compressed:
        return text
    if method != 0:
        raise MalformedMetadata(f"the PNG's XMP chunk (iTXt) names compression method {method}")
    inflater = zlib.decompressobj()
    try:
        packet = inflater.decompress(text, MAX_XMP)
    except zlib.error as exc:
        raise MalformedMetadata(f"the PNG's XMP chunk (iTXt) does not inflate: {exc}") from None
    if inflater.unconsumed_tail or (len(packet) == MAX_XMP and not inflater.eof):  # a bomb?
        raise MalformedMetadata(f"the PNG's XMP chunk (iTXt) inflates beyond {MAX_XMP} bytes")
    return packet


def _xmp_packet(data: bytes) -> bytes | None:
    """The first ``<x:xmpmeta>`` … ``</x:xmpmeta>`` in ``data``, found with ``bytes.find``.

    Linear in ``data``: the first start tag is the only one tried (an end tag after a later
    start tag also follows the first one), and end tags are looked for once, left to right (a
    lazy ``.*?`` regex rescans the rest of the file from every unclosed start tag).
    """
    start = data.find(b"<x:xmpmeta")
    while start >= 0 and data[start + 10 : start + 11] not in _XML_SPACE_OR_CLOSE:
        start = data.find(b"<x:xmpmeta", start + 10)
    if start < 0:
        return None
    end = data.find(b"</x:xmpmeta", start)
    while end >= 0:
        close = end + 11
        while data[close : close + 1] in _XML_SPACE:
            close += 1
        if data[close : close + 1] == b">":
            return data[start : close + 1]
        end = data.find(b"</x:xmpmeta", close)
    return None


def find_xmp(data: bytes) -> bytes | None:
    """The XMP packet in a file's bytes (JPEG APP1, PNG iTXt, WebP ``XMP `` chunk, TIFF), or None.

    Raises:
        MalformedMetadata: a PNG's XMP chunk is malformed.
    """
    if data.startswith(b"\x89PNG"):
        packet = _png_xmp(data)
        if packet is not None:
            return packet
    return _xmp_packet(data)


class _DataMiningReader:
    """Collects ``plus:DataMining`` values as expat reads a packet: no element tree is built,
    so memory stays flat (a tree of a 1 MiB packet of tiny elements is ~50 MB, and the
    garbage collector's passes over it cost ten times the parse)."""

    def __init__(self) -> None:
        self.codes: dict[str, None] = {}  # in order, each once
        self._depth = 0
        self._open: list[tuple[int, list[str]]] = []  # DataMining elements: depth, own text

    def start(self, name: str, attributes: dict[str, str]) -> None:
        self._depth += 1
        if _DATA_MINING in attributes:
            self.codes[attributes[_DATA_MINING].strip()] = None
        if name == _DATA_MINING:
            resource = attributes.get(_RDF_RESOURCE)
            if resource:
                self.codes[resource.strip()] = None
            else:
                self._open.append((self._depth, []))

    def text(self, data: str) -> None:
        if self._open and self._open[-1][0] == self._depth:
            self._open[-1][1].append(data)

    def end(self, name: str) -> None:
        if self._open and self._open[-1][0] == self._depth:
            self.codes["".join(self._open.pop()[1]).strip()] = None
        self._depth -= 1

    def read(self, xmp: bytes) -> list[str]:
        """Every code in ``xmp``, fed to expat in :data:`_XML_FEED`-byte pieces (expat holds
        the GIL while it parses; between pieces other threads, the event loop, run).

        Raises:
            xml.parsers.expat.ExpatError: the packet is not well-formed XML (or expands
                entities beyond expat's amplification limit).
        """
        parser = expat.ParserCreate(namespace_separator=" ")
        parser.buffer_text = True
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.text
        for at in range(0, len(xmp), _XML_FEED):
            parser.Parse(xmp[at : at + _XML_FEED], False)
        parser.Parse(b"", True)
        return list(self.codes)


def xmp_signals(xmp: bytes, source: str) -> list[Signal]:
    """``plus:DataMining`` in an XMP packet (at most :data:`MAX_XMP` bytes are parsed).

    A packet that mentions DataMining but does not parse, or is over the cap, gives one
    ``unknown`` signal. Repeated codes are shown once, and at most
    :data:`~provenance.optout.decision.MAX_SIGNALS` signals are kept (see
    :func:`~provenance.optout.decision.few_signals`).
    """
    if b"DataMining" not in xmp:
        return []
    try:
        if len(xmp) > MAX_XMP:
            raise ValueError(f"the packet is larger than {MAX_XMP} bytes")
        codes = _DataMiningReader().read(xmp)
    except (expat.ExpatError, ValueError) as exc:
        return [
            Signal(
                "iptc-data-mining",
                "unknown",
                source,
                f"XMP mentions DataMining but does not parse: {exc}",
            )
        ]
    found = []
    for code in codes:
        value = iptc_value(code)
        if value is not None:
            short = code.rsplit("/", 1)[-1][:_MAX_LABEL]
            found.append(Signal("iptc-data-mining", value, source, f"plus:DataMining = {short}"))
    return few_signals(found)


def _training_entries(manifest: Mapping[str, Any]) -> Iterable[tuple[str, str, str]]:
    """(label, use, value) of every training-and-mining entry in a manifest, in order (where
    ``verify`` reports the first such assertion, every one counts here: fail closed). Labels
    are matched through :func:`provenance.manifest.base_label`, as ``verify`` matches them.

    The assertions are the signer's data, checked against the CAWG shape: an assertion whose
    ``data`` is not an object, or whose ``entries`` is not an object of uses, yields one entry
    with use ``*`` and the value ``malformed: …`` (an ``unknown`` signal for every use).
    """
    assertions = manifest.get("assertions") if isinstance(manifest, Mapping) else None
    for item in assertions if isinstance(assertions, list) else ():
        if not isinstance(item, Mapping):
            continue
        base = base_label(item.get("label"))
        if base not in TRAINING_MINING_LABELS:
            continue
        data = item.get("data")
        entries = data.get("entries") if isinstance(data, Mapping) else data
        if entries is None:  # no entries: nothing stated
            continue
        if not isinstance(data, Mapping) or not isinstance(entries, Mapping):
            what = "entries" if isinstance(data, Mapping) else "data"
            kind = type(entries).__name__
            yield base, "*", f"malformed: {what} is a {kind}, not an object of uses"
            continue
        for use, entry in entries.items():
            value = entry.get("use") if isinstance(entry, Mapping) else None
            yield base, str(use)[:_MAX_LABEL], str(value)[:_MAX_LABEL]


def c2pa_signals(
    data: bytes,
    mime: str,
    source: str,
    uses: Iterable[str],
    *,
    complete: bool = True,
    verify: bool = False,
) -> list[Signal]:
    """Training-and-mining assertions of the file's active C2PA manifest.

    The decision never depends on the signature (an invalid manifest still states the creator's
    wish), so it is only checked, and reported in the evidence, with ``verify=True``. The
    manifest is read by :func:`provenance.manifest.read_manifest`, the reader ``verify`` uses.

    Args:
        data: the file's bytes (or, with ``complete=False``, a JPEG's metadata segments).
        mime: its MIME type.
        source: the URL or path, for the evidence.
        uses: the uses that count, without prefix.
        complete: whether ``data`` is the whole file (a signature cannot be checked otherwise).
        verify: validate the manifest (about 4x slower) and report its state.
    """
    if b"jumb" not in data and b"c2pa" not in data:
        return []
    reading = read_manifest(data, mime, verify=verify and complete)
    if reading.state == "absent":
        return []
    if reading.state == "remote":
        where = reading.remote_url or "an unknown URL"
        text = f"the C2PA manifest is remote ({where}) and was not fetched"
        return [Signal("c2pa-training-mining", "unknown", source, text)]
    if reading.state == "unreadable" or reading.active is None:
        why = reading.error or "the manifest store has no active manifest"
        text = f"the C2PA manifest could not be read: {why}"
        return [Signal("c2pa-training-mining", "unknown", source, text)]
    note = ""
    if verify:
        note = (
            f" (manifest {reading.state})"
            if complete
            else " (signature not checked: metadata read only)"
        )
    wanted = set(uses)
    found = []
    for label, use, value in _training_entries(reading.active):
        if use == "*" or use.split(".", 1)[-1] in wanted:
            kind = CAWG_VALUES.get(value, "unknown")
            text = f"{label}: {value}{note}" if use == "*" else f"{label}: {use} = {value}{note}"
            found.append(Signal("c2pa-training-mining", kind, source, text))
    return few_signals(found)


def file_signals(
    data: bytes,
    source: str,
    *,
    uses: Iterable[str] = DEFAULT_USES,
    complete: bool = True,
    mime: str | None = None,
    verify: bool = False,
) -> list[Signal]:
    """Every in-file signal of an image file's bytes (C2PA first, then XMP)."""
    mime = sniff_mime(data) or mime or "application/octet-stream"
    found = c2pa_signals(data, mime, source, uses, complete=complete, verify=verify)
    try:
        xmp = find_xmp(data)
    except MalformedMetadata as exc:  # it may hold an opt-out that cannot be read
        return [*found, Signal("iptc-data-mining", "unknown", source, f"{exc}: XMP not read")]
    if xmp is not None:
        found += xmp_signals(xmp, source)
    return found
