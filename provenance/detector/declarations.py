"""Declarations that a file is AI-generated: what its metadata says about itself.

Three places, each read without trusting the file:

* **C2PA** (any vendor): an action of the active manifest (``c2pa.actions`` / ``c2pa.actions.v2``)
  whose ``digitalSourceType`` is IPTC's ``trainedAlgorithmicMedia`` or
  ``compositeWithTrainedAlgorithmicMedia``; read through the one C2PA reader,
  :func:`provenance.manifest.read_manifest`. The manifest's validation state is reported with it.
* **IPTC in XMP**: ``Iptc4xmpExt:DigitalSourceType`` with one of those values, in the XMP packet
  of a PNG (``XML:com.adobe.xmp`` iTXt), JPEG (APP1) or WebP (``XMP`` chunk). The packet is
  never handed to an XML parser: at most :data:`MAX_XMP_CHARS` characters are searched with
  bounded regular expressions (linear time, no entities expanded), which is all a property
  lookup needs.
* **Generation parameters** that UIs write into the file: AUTOMATIC1111's ``parameters`` text
  (PNG text chunk or EXIF UserComment, :mod:`provenance.infotext`), ComfyUI's ``prompt`` /
  ``workflow`` JSON chunks, NovelAI's ``Software: NovelAI`` with its ``Comment`` JSON, and
  InvokeAI's ``invokeai_metadata`` / ``sd-metadata`` / ``Dream`` chunks. The keys are those that
  sd-parsers 0.6 reads (``sd_parsers/parsers/_comfyui.py``, ``_novelai.py``, ``_invokeai/``);
  sdkit reads them itself (a few lines each) so that sd-parsers stays a test dependency.

What a declaration proves: that whoever wrote the file said so. Unsigned metadata (XMP,
parameters) can be added or removed by anyone; a valid C2PA manifest binds the statement to the
signer and the bytes. A stripped file has no declaration at all: absence proves nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from PIL import Image

from ..infotext import from_image, parse_infotext
from ..manifest import ManifestReading, find_assertion

__all__ = ["AI_SOURCE_TYPES", "MAX_XMP_CHARS", "Declaration", "find_declarations"]

#: IPTC digital source types that mean "made by a trained model" (cv.iptc.org/newscodes).
AI_SOURCE_TYPES = ("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia")
#: The most XMP text searched (real packets are a few KB).
MAX_XMP_CHARS = 1 << 20
#: The largest JSON chunk parsed (ComfyUI workflows are tens of KB).
MAX_JSON_CHARS = 4 << 20
#: The most A1111 parameters text parsed, from its end (where the parameters line is): real ones
#: are a few KB, and a text chunk may hold 64 MB, which the parser reads at about 1 s per MB.
MAX_PARAMETERS_CHARS = 1 << 16

_XMP_KEYS = ("XML:com.adobe.xmp", "xmp", "XMP")
_KEY = ":DigitalSourceType"
_RESOURCE_KEY = "rdf:resource"
_PREFIX = re.compile(r"[\w.-]")  # the namespace prefix's last character, before the key
# the value right after the key: an attribute (="...") or an element's text (>...<)
_VALUE = re.compile(r"\s*=\s*[\"']([^\"'<>]{0,400})[\"']|\s*>\s*([^<]{0,400})<")
# or an rdf:resource attribute within the next 400 characters of the same tag
_RESOURCE = re.compile(r"rdf:resource\s*=\s*[\"']([^\"'<>]{0,400})[\"']")


@dataclass(frozen=True)
class Declaration:
    """A statement in the file that it is AI-generated.

    Attributes:
        source: ``c2pa``, ``xmp-iptc``, ``a1111``, ``comfyui``, ``novelai`` or ``invokeai``.
        detail: what was found, in words (the source type, the generator, the signer).
        signed: the statement sits in a C2PA manifest whose signature and bindings validate.
    """

    source: str
    detail: str
    signed: bool = False

    def to_dict(self) -> dict[str, str | bool]:
        return {"source": self.source, "detail": self.detail, "signed": self.signed}


def find_declarations(
    image: Image.Image, reading: ManifestReading | None
) -> tuple[Declaration, ...]:
    """Every declaration in the file: C2PA (from ``reading``), XMP, generation parameters.

    Args:
        image: the opened file (pixels need not be decoded; its ``info`` is read).
        reading: the file's C2PA reading, or ``None`` when it was not read.
    """
    found: list[Declaration] = []
    if reading is not None:
        found += _c2pa(reading)
    found += _xmp(image)
    found += _parameters(image)
    return tuple(found)


def _ai_type(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    tail = value.rstrip("/").rsplit("/", 1)[-1]
    return tail if tail in AI_SOURCE_TYPES else None


def _c2pa(reading: ManifestReading) -> list[Declaration]:
    active = reading.active
    if active is None:
        return []
    kinds: list[str] = []
    for label in ("c2pa.actions", "c2pa.actions.v2"):
        data = find_assertion(active, label)
        actions = data.get("actions") if isinstance(data, Mapping) else None
        for action in actions if isinstance(actions, list) else []:
            if isinstance(action, Mapping) and (kind := _ai_type(action.get("digitalSourceType"))):
                kinds.append(kind)
    if not kinds:
        return []
    state = reading.checked_state
    signed = state in ("valid", "trusted")
    generator = active.get("claim_generator") or _generator_name(active)
    detail = f"C2PA manifest ({state}) by {generator or 'unknown software'}: {kinds[0]}"
    return [Declaration("c2pa", detail, signed)]


def _generator_name(active: Mapping[str, object]) -> str | None:
    info = active.get("claim_generator_info")
    if isinstance(info, list) and info and isinstance(info[0], Mapping):
        name = info[0].get("name")
        return str(name)[:100] if isinstance(name, str) else None
    return None


def _text(value: object, limit: int) -> str | None:
    if isinstance(value, bytes):
        value = value[:limit].decode("utf-8", "replace")
    return value[:limit] if isinstance(value, str) else None


def _xmp(image: Image.Image) -> list[Declaration]:
    for key in _XMP_KEYS:
        packet = _text(image.info.get(key), MAX_XMP_CHARS)
        if not packet:
            continue
        for value in _dst_values(packet):
            if kind := _ai_type(value.strip()):
                return [Declaration("xmp-iptc", f"XMP Iptc4xmpExt:DigitalSourceType {kind}")]
    return []


def _dst_values(packet: str) -> Iterator[str]:
    """Each ``prefix:DigitalSourceType`` value, in order; linear in the packet.

    The key is found with ``str.find`` and each value read by an anchored, bounded match, so a
    packet of the key repeated costs a few operations per occurrence (one regular expression
    over the packet spent seconds on 1 MB of repeated keys, tests/fuzz).
    """
    at = packet.find(_KEY)
    while at != -1:
        end = at + len(_KEY)
        if at > 0 and _PREFIX.match(packet, at - 1):
            if match := _VALUE.match(packet, end):
                yield next((g for g in match.groups() if g), "")
            else:
                close = packet.find(">", end, end + 400)
                limit = end + 400 if close == -1 else close
                ref = packet.find(_RESOURCE_KEY, end, limit + len(_RESOURCE_KEY))
                while ref != -1:
                    if resource := _RESOURCE.match(packet, ref):
                        yield resource.group(1)
                        break
                    ref = packet.find(_RESOURCE_KEY, ref + 1, limit + len(_RESOURCE_KEY))
        at = packet.find(_KEY, end)


def _json(value: object) -> object:
    text = _text(value, MAX_JSON_CHARS + 1)
    if text is None or len(text) > MAX_JSON_CHARS:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _parameters(image: Image.Image) -> list[Declaration]:
    info = image.info
    found: list[Declaration] = []
    text = from_image(image, loaded=False)
    if text:
        parsed = parse_infotext(text[-MAX_PARAMETERS_CHARS:])
        steps = parsed.parameters.get("Steps")
        if steps is not None:
            model = parsed.parameters.get("Model") or parsed.parameters.get("Model hash")
            more = f", model {str(model)[:80]}" if model else ""
            found.append(Declaration("a1111", f"A1111-style parameters (Steps: {steps}{more})"))
    prompt, workflow = _json(info.get("prompt")), _json(info.get("workflow"))
    nodes = prompt.values() if isinstance(prompt, Mapping) else ()
    if any(isinstance(n, Mapping) and "class_type" in n for n in nodes) or (
        isinstance(workflow, Mapping) and isinstance(workflow.get("nodes"), list)
    ):
        found.append(Declaration("comfyui", "ComfyUI prompt/workflow JSON"))
    software = _text(info.get("Software"), 200) or ""
    comment = _json(info.get("Comment"))
    if software.startswith("NovelAI") and isinstance(comment, Mapping):
        found.append(Declaration("novelai", f"NovelAI metadata (Software: {software})"))
    for key in ("invokeai_metadata", "sd-metadata", "Dream"):
        if key in info and (key == "Dream" or isinstance(_json(info[key]), Mapping)):
            found.append(Declaration("invokeai", f"InvokeAI metadata ({key})"))
            break
    return found
