"""C2PA manifests: what sdkit asserts about an image, signing it with c2pa-python, reading it back.

A generated image's manifest holds:

* ``c2pa.actions.v2``: ``c2pa.created`` with the IPTC digital source type
  ``trainedAlgorithmicMedia`` and sdkit as software agent; for img2img and inpaint,
  ``c2pa.opened`` (the init image, a ``parentOf`` ingredient that keeps its own manifest) then
  ``c2pa.edited`` with ``compositeWithTrainedAlgorithmicMedia``.
* ``org.sdkit.recipe``: the Recipe (every parameter that made the image).
* ``org.sdkit.watermark``: the invisible watermark's method and payload, or why none was
  embedded. invisible-watermark's and sdkit's methods are not on C2PA's list of soft-binding
  algorithms, so a conformant ``c2pa.soft-binding`` assertion cannot name them, and the
  ``c2pa.watermarked`` action is left out for the same reason: the watermark is recorded in this
  project-namespaced assertion only.
* ``org.sdkit.fingerprint``: a perceptual hash of the watermarked pixels
  (:mod:`provenance.fingerprint`), so that a manifest recovered through the watermark can be
  checked against the pixels in hand.
* ``cawg.training-mining``: what the signer allows (CAWG Training and Data Mining assertion;
  default: generative AI training ``notAllowed``).

Thumbnails are off by default (c2pa-rs's default 1024 px thumbnail adds about 250 KB).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ._manifest_facts import ManifestFacts, read_facts
from ._manifest_facts import find_assertion as _find_assertion
from .errors import ManifestError, SigningError

if TYPE_CHECKING:
    import c2pa

    from .credentials import Credentials

__all__ = [
    "COMPOSITE",
    "FINGERPRINT_LABEL",
    "MIME_TYPES",
    "RECIPE_LABEL",
    "TRAINED",
    "TRAINING_MINING_LABEL",
    "TRAINING_USES",
    "WATERMARK_LABEL",
    "Ingredient",
    "ManifestReading",
    "build_definition",
    "find_assertion",
    "read_manifest",
    "sign_asset",
    "training_mining_entries",
]

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED = IPTC + "trainedAlgorithmicMedia"
COMPOSITE = IPTC + "compositeWithTrainedAlgorithmicMedia"
RECIPE_LABEL = "org.sdkit.recipe"
WATERMARK_LABEL = "org.sdkit.watermark"
FINGERPRINT_LABEL = "org.sdkit.fingerprint"
TRAINING_MINING_LABEL = "cawg.training-mining"
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

# CAWG Training and Data Mining assertion, version 1: the four uses and their values.
TRAINING_USES = (
    "cawg.data_mining",
    "cawg.ai_inference",
    "cawg.ai_generative_training",
    "cawg.ai_training",
)
TrainingUse = Literal["allowed", "notAllowed", "constrained"]
DEFAULT_TRAINING_MINING: Mapping[str, TrainingUse] = {"cawg.ai_generative_training": "notAllowed"}

C2paState = Literal["absent", "valid", "trusted", "invalid", "remote", "unreadable"]


@dataclass(frozen=True)
class Ingredient:
    """The image an img2img or inpaint result was made from (a ``parentOf`` ingredient).

    Attributes:
        data: the file's bytes as given (its own C2PA manifest, if any, is kept), or a PNG
            encoding of the pixels when only pixels were given.
        mime: ``image/png``, ``image/jpeg`` or ``image/webp``.
        title: a name for it (the file name, or ``"init image"``).
    """

    data: bytes = field(repr=False)
    mime: str
    title: str


def training_mining_entries(
    uses: Mapping[str, str] | None = None,
) -> dict[str, dict[str, str]]:
    """The ``entries`` of a ``cawg.training-mining`` assertion, defaults filled in.

    Args:
        uses: use -> ``"allowed"`` / ``"notAllowed"`` / ``"constrained"``; a short name
            (``"ai_training"``) gets the ``cawg.`` prefix. Unset uses keep the default
            (generative training ``notAllowed``; the others are not stated).

    Raises:
        ManifestError: an unknown use or value.

    Example:
        >>> training_mining_entries({"ai_inference": "allowed"})["cawg.ai_inference"]
        {'use': 'allowed'}
    """
    chosen: dict[str, str] = dict(DEFAULT_TRAINING_MINING)
    for name, value in (uses or {}).items():
        key = name if name.startswith("cawg.") else f"cawg.{name}"
        if key not in TRAINING_USES:
            raise ManifestError(
                f"unknown training-and-mining use {name!r}",
                hint=f"use one of {', '.join(TRAINING_USES)}.",
            )
        if value not in ("allowed", "notAllowed", "constrained"):
            raise ManifestError(
                f"training-and-mining value {value!r} for {key} is not allowed",
                hint="use 'allowed', 'notAllowed' or 'constrained'.",
            )
        chosen[key] = value
    return {key: {"use": value} for key, value in chosen.items()}


def build_definition(
    *,
    title: str,
    software_version: str,
    recipe: Mapping[str, Any] | None,
    watermark: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    training_mining: Mapping[str, str] | None = None,
    edited: bool = False,
) -> dict[str, Any]:
    """The manifest definition c2pa-python signs (see the module docstring for what it holds)."""
    agent = {"name": "sdkit", "version": software_version}
    if edited:
        actions: list[dict[str, Any]] = [
            {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
            {"action": "c2pa.edited", "digitalSourceType": COMPOSITE, "softwareAgent": agent},
        ]
    else:
        actions = [{"action": "c2pa.created", "digitalSourceType": TRAINED, "softwareAgent": agent}]
    assertions: list[dict[str, Any]] = [
        {"label": "c2pa.actions.v2", "data": {"actions": actions}},
    ]
    if recipe is not None:
        assertions.append({"label": RECIPE_LABEL, "data": dict(recipe)})
    assertions += [
        {"label": WATERMARK_LABEL, "data": dict(watermark)},
        {"label": FINGERPRINT_LABEL, "data": dict(fingerprint)},
        {
            "label": TRAINING_MINING_LABEL,
            "data": {"entries": training_mining_entries(training_mining)},
        },
    ]
    definition = {"claim_generator_info": [agent], "title": title, "assertions": assertions}
    try:
        json.dumps(definition, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ManifestError(
            f"the manifest cannot be written as JSON: {exc}",
            hint="recipes and assertions may hold only strings, finite numbers, lists and objects.",
        ) from exc
    return definition


def _context(*, trust_anchors: str | None = None, thumbnail: int = 0) -> c2pa.Context:
    import c2pa

    settings: dict[str, Any] = {
        # never: c2pa-rs's HTTP has no SSRF policy; sdkit fetches (provenance._remote)
        "verify": {"remote_manifest_fetch": False},
        "builder": {"thumbnail": {"enabled": thumbnail > 0}},
    }
    if thumbnail > 0:
        settings["builder"]["thumbnail"]["long_edge"] = thumbnail
    if trust_anchors:
        settings["trust"] = {"trust_anchors": trust_anchors}
    return c2pa.Context(settings=c2pa.Settings.from_dict(settings))


def sign_asset(
    data: bytes,
    fmt: str,
    definition: Mapping[str, Any],
    credentials: Credentials,
    *,
    parent: Ingredient | None = None,
    thumbnail: int = 0,
) -> tuple[bytes, bytes]:
    """Sign ``data`` (an encoded image) with a manifest built from ``definition``.

    Args:
        data: the encoded file (PNG, JPEG or WebP bytes), metadata already written.
        fmt: ``"png"``, ``"jpeg"`` or ``"webp"``.
        definition: from :func:`build_definition`.
        credentials: who signs.
        parent: the init image of an img2img / inpaint result.
        thumbnail: long edge of the embedded thumbnail in pixels; 0 (default) for none.

    Returns:
        ``(signed file bytes, manifest store bytes)``; the latter is what a store keeps.

    Raises:
        ManifestError: c2pa-python found the definition malformed.
        SigningError: c2pa-python refused the credentials or failed to sign.
    """
    import c2pa

    mime = MIME_TYPES[fmt]
    try:
        builder = c2pa.Builder(dict(definition), context=_context(thumbnail=thumbnail))
        with builder:
            if parent is not None:
                builder.add_ingredient_from_stream(
                    {"title": parent.title, "relationship": "parentOf", "label": "parent"},
                    parent.mime,
                    io.BytesIO(parent.data),
                )
            out = io.BytesIO()
            manifest = builder.sign(credentials.signer(), mime, io.BytesIO(data), out)
    except c2pa.C2paError as exc:
        if "manifest failed validation" in str(exc):
            raise ManifestError(
                f"the C2PA manifest is malformed: {str(exc).split('with:', 1)[-1].strip()}",
                hint="this is a bug in the manifest definition; please report it.",
            ) from exc
        raise SigningError(
            f"C2PA signing failed: {exc}",
            hint="check the signing certificate chain, key and algorithm "
            "(`sdkit keys show` describes the configured credentials).",
        ) from exc
    return out.getvalue(), bytes(manifest)


@dataclass(frozen=True)
class ManifestReading:
    """What c2pa-python says about a file's (or a stored) manifest.

    Attributes:
        state: ``absent``, ``valid``, ``trusted``, ``invalid``, ``remote`` (the manifest lives
            at a URL that was not fetched) or ``unreadable``.
        codes: failure codes from the validation (``signingCredential.untrusted`` included).
        successes: the active manifest's success codes (``signingCredential.trusted``, ...).
        active: the active manifest, as c2pa-python's JSON reports it.
        manifests: every manifest of the store, by label (ingredients' manifests included).
        remote_url: where a remote manifest lives.
        error: c2pa-python's message when the manifest could not be read; for a remote
            manifest that was asked for and not fetched, why (the SSRF refusal, a timeout...).
        facts: the active manifest's fields that ``verify`` uses, each checked for type and
            range (malformed ones listed, never raised: :mod:`provenance._manifest_facts`).
    """

    state: C2paState
    codes: tuple[str, ...] = ()
    successes: tuple[str, ...] = ()
    active: dict[str, Any] | None = field(default=None, repr=False)
    manifests: dict[str, Any] = field(default_factory=dict, repr=False)
    remote_url: str | None = None
    error: str | None = None
    facts: ManifestFacts = field(default_factory=ManifestFacts)


def read_manifest(
    data: bytes,
    mime: str,
    *,
    trust_anchors: str | None = None,
    fetch_remote: bool = False,
    allow_private: bool = False,
) -> ManifestReading:
    """Read and validate the C2PA manifest in ``data`` (or a bare manifest store).

    Args:
        data: a file's bytes, or manifest store bytes with ``mime="application/c2pa"``.
        mime: the file's MIME type.
        trust_anchors: PEM certificates; a signer chaining to one is ``trusted``.
        fetch_remote: fetch a manifest that the file only points to (network access), by
            sdkit under its SSRF policy (:mod:`provenance._remote`), never by c2pa-rs.
        allow_private: let that fetch reach loopback and private addresses (intranets, tests).
    """
    import c2pa

    fetched_from: str | None = None
    try:
        context = _context(trust_anchors=trust_anchors)
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), context=context)
    except c2pa.C2paError as exc:
        message = str(exc)
        if not message.startswith("Remote"):
            return ManifestReading("unreadable", (type(exc).__name__,), error=message)
        found = re.search(r"\w+://\S+", message)
        fetched_from = found.group(0) if found else None
        if not fetch_remote or fetched_from is None:
            return ManifestReading("remote", ("manifest.inaccessible",), remote_url=fetched_from)
        fetched = _read_remote(data, mime, fetched_from, context, allow_private)
        if isinstance(fetched, ManifestReading):
            return fetched
        reader = fetched
    if reader is None:
        return ManifestReading("absent")
    with reader:
        try:
            report = json.loads(reader.json())
            remote = reader.get_remote_url() or fetched_from
        except c2pa.C2paError as exc:
            return ManifestReading("unreadable", (type(exc).__name__,), error=str(exc))
        except (ValueError, RecursionError) as exc:  # JSON too deep, or a number too long
            return ManifestReading("unreadable", (type(exc).__name__,), error=str(exc)[:200])
    report = report if isinstance(report, dict) else {}
    codes = _codes(report.get("validation_status"))
    results = report.get("validation_results")
    active_results = results.get("activeManifest") if isinstance(results, dict) else None
    successes = _codes((active_results or {}).get("success"))
    name = str(report.get("validation_state", "Invalid")).lower()
    state: C2paState = "trusted" if name == "trusted" else "valid" if name == "valid" else "invalid"
    manifests = report.get("manifests")
    manifests = manifests if isinstance(manifests, dict) else {}
    active = manifests.get(str(report.get("active_manifest") or ""))
    active = active if isinstance(active, dict) else None
    remote = remote if isinstance(remote, str) else None
    return ManifestReading(
        state, codes, successes, active, manifests, remote_url=remote, facts=read_facts(active)
    )


def _read_remote(
    data: bytes, mime: str, url: str, context: c2pa.Context, allow_private: bool
) -> c2pa.Reader | ManifestReading:
    """A reader of ``data`` with the manifest fetched from ``url``, or why there is none."""
    import c2pa

    from ._remote import fetch_manifest

    fetched = fetch_manifest(url, allow_private=allow_private)
    if fetched.data is None:
        why = fetched.failure
        return ManifestReading("remote", ("manifest.inaccessible",), remote_url=url, error=why)
    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), fetched.data, context=context)
    except c2pa.C2paError as exc:
        why = f"the manifest fetched from {url} cannot be read: {exc}"
        return ManifestReading("unreadable", (type(exc).__name__,), remote_url=url, error=why)
    if reader is None:
        why = f"what {url} answered is not a C2PA manifest"
        return ManifestReading("unreadable", ("ManifestNotFound",), remote_url=url, error=why)
    return reader


def _codes(statuses: object) -> tuple[str, ...]:
    """The ``code`` of each validation status entry (entries that are not objects skipped)."""
    items = statuses if isinstance(statuses, list) else []
    return tuple(str(s.get("code", "")) for s in items if isinstance(s, dict))


def find_assertion(manifest: Mapping[str, Any] | None, label: str) -> Any:
    """The data of the first assertion labelled ``label`` (version suffixes allowed), or None.

    Malformed entries (not objects, labels not strings) are skipped, never raised on.
    """
    return _find_assertion(manifest, label)
