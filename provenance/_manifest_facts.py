"""What ``verify`` reads from a manifest, each field checked for type and range.

A validly signed manifest proves who signed it, not that its assertions are well formed: anyone
with a certificate can sign ``{"value": "zz"}`` as a fingerprint or a list as the training and
mining entries. Every field ``verify`` uses is read here, once, through one parser per field
(the table :data:`_PARSERS`), and a malformed one becomes a sentence instead of an exception:

* sdkit's own assertions (``org.sdkit.*``) that are malformed go to :attr:`ManifestFacts.malformed`;
  ``verify`` reports them as problems ("malformed sdkit assertion: ..."), so the file is not
  verified: the signature may be valid, but the data that links it to the pixels is unusable.
* Anything else that is malformed (CAWG training and mining, actions, claim generator,
  ingredients, signature info) goes to :attr:`ManifestFacts.ignored`; ``verify`` notes it and
  leaves the field empty. These describe the file; they do not link it to the pixels.

Example:
    >>> facts = read_facts({"assertions": [
    ...     {"label": "org.sdkit.fingerprint", "data": {"algorithm": "phash-64", "value": "zz"}},
    ...     {"label": "cawg.training-mining", "data": {"entries": [1, 2]}}]})
    >>> facts.fingerprint is None, facts.malformed
    (True, ("org.sdkit.fingerprint: value 'zz' is not 16 hex digits",))
    >>> facts.ignored
    ('cawg.training-mining: entries is a list, not an object',)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TRAINING_MINING_LABELS",
    "ClaimedWatermark",
    "ManifestFacts",
    "base_label",
    "find_assertion",
    "read_facts",
]

RECIPE_LABEL = "org.sdkit.recipe"
WATERMARK_LABEL = "org.sdkit.watermark"
FINGERPRINT_LABEL = "org.sdkit.fingerprint"
#: CAWG and C2PA (1.x) labels of the training-and-mining assertion, in the order ``verify``
#: looks for them.
TRAINING_MINING_LABELS = ("cawg.training-mining", "c2pa.training-mining")
FINGERPRINT_ALGORITHM = "phash-64"  # provenance.fingerprint.ALGORITHM (that module needs imagehash)
_HEX16 = re.compile(r"[0-9a-fA-F]{16}")
_HEX12 = re.compile(r"[0-9a-fA-F]{12}")
_MAX_TEXT = 1024  # longest string kept from a descriptive field (signer, generator, ...)
_MAX_ITEMS = 256  # most ingredients / training uses / actions looked at


class _Malformed(Exception):
    """A field that is not what the specification says (message: what is wrong)."""


@dataclass(frozen=True)
class ClaimedWatermark:
    """The ``org.sdkit.watermark`` assertion, checked.

    Attributes:
        embedded: whether the signer says the pixels carry a watermark.
        reason: why none was embedded.
        content_id: the payload's content id as 12 lower-case hex digits (when embedded).
        issuer_id: the payload's issuer id, 0 .. 65535 (when embedded).
    """

    embedded: bool
    reason: str | None = None
    content_id: str | None = None
    issuer_id: int | None = None


@dataclass(frozen=True)
class ManifestFacts:
    """The fields of one manifest that ``verify`` reports or checks, each well formed or None.

    Attributes:
        signer, issuer, signed_at: from the signature info.
        claim_generator: ``name version`` of the software that wrote the manifest.
        digital_source_type: the IPTC digital source type of the first action that has one.
        recipe: ``org.sdkit.recipe`` (a JSON object).
        ingredients: each ingredient's title, relationship and whether it has a manifest.
        training_mining: use -> value from the training-and-mining assertion.
        watermark: ``org.sdkit.watermark``.
        fingerprint: ``org.sdkit.fingerprint``'s value (16 hex digits) when its algorithm is
            ``phash-64``; ``fingerprint_algorithm`` the algorithm named.
        malformed: sdkit's own assertions that are malformed, in words.
        ignored: other fields that are malformed (left empty), in words.
    """

    signer: str | None = None
    issuer: str | None = None
    signed_at: str | None = None
    claim_generator: str | None = None
    digital_source_type: str | None = None
    recipe: dict[str, Any] | None = None
    ingredients: tuple[dict[str, str | bool | None], ...] = ()
    training_mining: dict[str, str | None] | None = None
    watermark: ClaimedWatermark | None = None
    fingerprint: str | None = None
    fingerprint_algorithm: str | None = None
    malformed: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    names |= {int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Malformed(f"{what} is {_kind(value)}, not an object")
    return value


def _text(value: object, what: str, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _Malformed(f"{what} is {_kind(value)}, not a string")
    return value[:_MAX_TEXT]


def _items(value: object, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Malformed(f"{what} is {_kind(value)}, not a list")
    return value[:_MAX_ITEMS]


def base_label(label: object) -> str | None:
    """An assertion's label without its instance (``__1``) and version (``.v2``) suffixes.

    The one normalisation of labels: ``verify`` (:func:`find_assertion`) and the opt-out
    reader (:mod:`provenance.optout.embedded`) both match labels through it. ``None`` for a
    label that is not a string.

    Example:
        >>> base_label("c2pa.actions.v2"), base_label("cawg.training-mining__1"), base_label(3)
        ('c2pa.actions', 'cawg.training-mining', None)
    """
    if not isinstance(label, str):
        return None
    name = label.split("__", 1)[0]
    head, dot, version = name.rpartition(".v")
    return head if dot and version.isdigit() else name


def find_assertion(manifest: Mapping[str, Any] | None, label: str) -> Any:
    """The data of the first assertion labelled ``label`` (suffixes allowed: :func:`base_label`),
    or None.

    Assertions that are not objects, or whose label is not a string, are skipped.
    """
    assertions = (manifest or {}).get("assertions")
    for item in assertions if isinstance(assertions, list) else []:
        if isinstance(item, Mapping) and base_label(item.get("label")) == label:
            return item.get("data")
    return None


def _recipe(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    data = find_assertion(manifest, RECIPE_LABEL)
    return None if data is None else dict(_object(data, "the recipe"))


def _watermark(manifest: Mapping[str, Any]) -> ClaimedWatermark | None:
    data = find_assertion(manifest, WATERMARK_LABEL)
    if data is None:
        return None
    data = _object(data, "the assertion")
    embedded = data.get("embedded", False)
    if not isinstance(embedded, bool):
        raise _Malformed(f"embedded is {_kind(embedded)}, not a boolean")
    if not embedded:
        return ClaimedWatermark(False, _text(data.get("reason"), "reason") or "no reason given")
    payload = _object(data.get("payload"), "payload")
    content_id, issuer_id = payload.get("content_id"), payload.get("issuer_id")
    if not isinstance(content_id, str) or not _HEX12.fullmatch(content_id):
        raise _Malformed(f"payload content_id {str(content_id)[:40]!r} is not 12 hex digits")
    if not isinstance(issuer_id, int) or isinstance(issuer_id, bool) or not 0 <= issuer_id < 65536:
        raise _Malformed(f"payload issuer_id {str(issuer_id)[:40]!r} is not a number 0..65535")
    return ClaimedWatermark(True, None, content_id.lower(), issuer_id)


def _fingerprint(manifest: Mapping[str, Any]) -> tuple[str | None, str | None]:
    data = find_assertion(manifest, FINGERPRINT_LABEL)
    if data is None:
        return None, None
    data = _object(data, "the assertion")
    algorithm = _text(data.get("algorithm"), "algorithm")
    if algorithm != FINGERPRINT_ALGORITHM:
        return None, algorithm  # another algorithm: not ours to compare
    value = data.get("value")
    if not isinstance(value, str) or not _HEX16.fullmatch(value):
        raise _Malformed(f"value {str(value)[:40]!r} is not 16 hex digits")
    return value.lower(), algorithm


def _training_mining(manifest: Mapping[str, Any]) -> dict[str, str | None] | None:
    for label in TRAINING_MINING_LABELS:
        data = find_assertion(manifest, label)
        if data is None:
            continue
        entries = _object(data, "the assertion").get("entries")
        entries = _object({} if entries is None else entries, "entries")
        uses: dict[str, str | None] = {}
        for key, value in list(entries.items())[:_MAX_ITEMS]:
            entry = _object(value, f"entry {str(key)[:40]!r}")
            uses[str(key)[:_MAX_TEXT]] = _text(entry.get("use"), f"{key}.use")
        return uses
    return None


def _signature(manifest: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    info = _object(manifest.get("signature_info") or {}, "signature_info")
    return (
        _text(info.get("common_name"), "signature_info.common_name"),
        _text(info.get("issuer"), "signature_info.issuer"),
        _text(info.get("time"), "signature_info.time"),
    )


def _claim_generator(manifest: Mapping[str, Any]) -> str | None:
    info = manifest.get("claim_generator_info")
    if isinstance(info, list) and info:
        first = _object(info[0], "claim_generator_info[0]")
        name = _text(first.get("name"), "claim_generator_info.name")
        version = first.get("version")
        version = None if version is None else str(version)[:_MAX_TEXT]
        return f"{name} {version}" if version else name
    value = manifest.get("claim_generator")
    return value[:_MAX_TEXT] if isinstance(value, str) else None


def _source_type(manifest: Mapping[str, Any]) -> str | None:
    actions = find_assertion(manifest, "c2pa.actions")
    if actions is None:
        return None
    for action in _items(_object(actions, "c2pa.actions").get("actions"), "actions"):
        kind = _object(action, "an action").get("digitalSourceType")
        if kind:
            return (_text(kind, "digitalSourceType") or "").rsplit("/", 1)[-1]
    return None


def _ingredients(manifest: Mapping[str, Any]) -> tuple[dict[str, str | bool | None], ...]:
    found: list[dict[str, str | bool | None]] = []
    for item in _items(manifest.get("ingredients"), "ingredients"):
        item = _object(item, "an ingredient")
        found.append(
            {
                "title": _text(item.get("title"), "ingredient title"),
                "relationship": _text(item.get("relationship"), "ingredient relationship"),
                "has_manifest": bool(item.get("active_manifest")),
            }
        )
    return tuple(found)


# field(s) of ManifestFacts -> (where it comes from, parser); sdkit's own labels make a
# malformed value a problem, the others a note.
_PARSERS: dict[tuple[str, ...], tuple[str, Callable[[Mapping[str, Any]], Any]]] = {
    ("recipe",): (RECIPE_LABEL, _recipe),
    ("watermark",): (WATERMARK_LABEL, _watermark),
    ("fingerprint", "fingerprint_algorithm"): (FINGERPRINT_LABEL, _fingerprint),
    ("training_mining",): ("cawg.training-mining", _training_mining),
    ("signer", "issuer", "signed_at"): ("signature info", _signature),
    ("claim_generator",): ("claim generator", _claim_generator),
    ("digital_source_type",): ("c2pa.actions", _source_type),
    ("ingredients",): ("ingredients", _ingredients),
}


def read_facts(manifest: object) -> ManifestFacts:
    """Check and collect the fields ``verify`` uses from a manifest (c2pa-python's JSON).

    Never raises on the manifest's content: each malformed field is left at its default and
    described in ``malformed`` (sdkit's assertions) or ``ignored`` (the others).
    """
    if not isinstance(manifest, Mapping):
        return ManifestFacts()
    values: dict[str, Any] = {}
    malformed: list[str] = []
    ignored: list[str] = []
    for names, (label, parse) in _PARSERS.items():
        try:
            value = parse(manifest)
        except _Malformed as exc:
            (malformed if label.startswith("org.sdkit.") else ignored).append(f"{label}: {exc}")
            continue
        values |= dict(zip(names, value if len(names) > 1 else (value,), strict=True))
    return ManifestFacts(**values, malformed=tuple(malformed), ignored=tuple(ignored))
