"""C2PA manifests: what sdkit asserts about an image, signing it with c2pa-python, reading it back.

:func:`read_manifest` is the one reader of C2PA manifests (``verify`` and the opt-out checks
both use it), with c2pa-python's typed errors (:func:`remote_manifest_url` for the one case
that c2pa-python 0.38 leaves untyped).

A generated image's manifest holds:

* ``c2pa.actions.v2``: ``c2pa.created`` with the IPTC digital source type
  ``trainedAlgorithmicMedia`` and sdkit as software agent; for img2img and inpaint,
  ``c2pa.opened`` (the init image, a ``parentOf`` ingredient that keeps its own manifest) then
  ``c2pa.edited`` with ``compositeWithTrainedAlgorithmicMedia``.
* ``org.sdkit.recipe``: the Recipe (every parameter that made the image).
* one ``componentOf`` ingredient per add-on the Recipe records (LoRA, embedding, VAE,
  ControlNet model, control image, upscaler, refiner): its name, kind and SHA-256 in the
  ingredient's ``metadata`` (``org.sdkit.sha256``…) and ``instance_id``
  (``sdkit:<kind>:sha256:<hex>``). They are declared in the definition, without a stream:
  c2pa-python 0.38's ``add_ingredient`` hashes a stream it is given (a LoRA's hundreds of MB),
  and its ingredient JSON drops a ``hash`` field, so the SHA-256 is written where it is kept.
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
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ._manifest_facts import TRAINING_MINING_LABELS, ManifestFacts, base_label, read_facts
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
    "TRAINING_MINING_LABELS",
    "TRAINING_USES",
    "WATERMARK_LABEL",
    "C2paState",
    "Ingredient",
    "ManifestReading",
    "ReadState",
    "addon_ingredients",
    "base_label",
    "build_definition",
    "find_assertion",
    "read_manifest",
    "remote_manifest_url",
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

#: A manifest's state as a verification reports it.
C2paState = Literal["absent", "valid", "trusted", "invalid", "remote", "unreadable"]
#: A reading's state: :data:`C2paState`, or ``unchecked`` when read without validation.
ReadState = C2paState | Literal["unchecked"]


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
    definition: dict[str, Any] = {
        "claim_generator_info": [agent],
        "title": title,
        "assertions": assertions,
    }
    ingredients = addon_ingredients((recipe or {}).get("addons") or [])
    if ingredients:
        definition["ingredients"] = ingredients
    try:
        json.dumps(definition, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ManifestError(
            f"the manifest cannot be written as JSON: {exc}",
            hint="recipes and assertions may hold only strings, finite numbers, lists and objects.",
        ) from exc
    return definition


_ADDON_TITLES = {
    "lora": "LoRA",
    "embedding": "textual-inversion embedding",
    "vae": "VAE",
    "controlnet": "ControlNet model",
    "control_image": "control image",
    "upscaler": "upscaler",
    "refiner": "refiner",
}


def addon_ingredients(records: Sequence[Any]) -> list[dict[str, Any]]:
    """``componentOf`` ingredients for a Recipe's add-on records (JSON objects).

    Example:
        >>> [i["instance_id"] for i in addon_ingredients([{"kind": "lora", "name": "film",
        ...     "sha256": "ab" * 32}])] == ["sdkit:lora:sha256:" + "ab" * 32]
        True
    """
    out = []
    for record in records:
        if not isinstance(record, Mapping):
            continue
        kind, name, sha = (
            str(record.get("kind")),
            str(record.get("name")),
            str(record.get("sha256")),
        )
        image = kind == "control_image"
        out.append(
            {
                "title": name,
                "format": "image/png" if image else "application/octet-stream",
                "relationship": "componentOf",
                "instance_id": f"sdkit:{kind}:sha256:{sha}",
                "description": f"{_ADDON_TITLES.get(kind, kind)} {name} (sha256 {sha})",
                "metadata": {
                    "org.sdkit.kind": kind,
                    "org.sdkit.name": name,
                    "org.sdkit.sha256": sha,
                },
            }
        )
    return out


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
        if credentials.timestamp_url and isinstance(exc, c2pa.C2paError.Signature):
            raise SigningError(
                f"C2PA signing failed: no time-stamp from {credentials.timestamp_url}: {exc}",
                hint="check the time-stamp authority's URL (--timestamp-url, "
                "SDKIT_TIMESTAMP_URL) and the network; nothing is signed without its time-stamp.",
            ) from exc
        raise SigningError(
            f"C2PA signing failed: {exc}",
            hint="check the signing certificate chain, key and algorithm "
            "(`sdkit keys show` describes the configured credentials).",
        ) from exc
    return out.getvalue(), bytes(manifest)


@dataclass(frozen=True)
class ManifestReading:
    """What c2pa-python says about a file's (or a stored) manifest: the one reading that
    ``verify`` and the opt-out checks (:mod:`provenance.optout.embedded`) both use.

    Attributes:
        state: ``absent``, ``valid``, ``trusted``, ``invalid``, ``remote`` (the manifest lives
            at a URL that was not fetched), ``unreadable``, or ``unchecked`` (read with
            ``verify=False``: the manifest was parsed, its signature and bindings not checked).
        codes: failure codes from the validation (``signingCredential.untrusted`` included);
            for an unreadable manifest, the name of c2pa-python's exception class.
        successes: the active manifest's success codes (``signingCredential.trusted``, ...).
        active: the active manifest, as c2pa-python's JSON reports it (``None``: the store
            names no active manifest, or there is none).
        manifests: every manifest of the store, by label (ingredients' manifests included).
        remote_url: where a remote manifest lives.
        error: c2pa-python's message when the manifest could not be read; for a remote
            manifest that was asked for and not fetched, why (the SSRF refusal, a timeout...).
        facts: the active manifest's fields that ``verify`` uses, each checked for type and
            range (malformed ones listed, never raised: :mod:`provenance._manifest_facts`).
    """

    state: ReadState
    codes: tuple[str, ...] = ()
    successes: tuple[str, ...] = ()
    active: dict[str, Any] | None = field(default=None, repr=False)
    manifests: dict[str, Any] = field(default_factory=dict, repr=False)
    remote_url: str | None = None
    error: str | None = None
    facts: ManifestFacts = field(default_factory=ManifestFacts)

    @property
    def checked_state(self) -> C2paState:
        """:attr:`state` as a verification reports it (``unchecked`` counts as ``invalid``:
        an unchecked signature proves nothing)."""
        return "invalid" if self.state == "unchecked" else self.state


_READ_CONTEXTS = threading.local()  # per thread: verify -> c2pa Context (no trust anchors)


def _read_context(*, verify: bool, trust_anchors: str | None) -> c2pa.Context:
    """The c2pa Context a reading runs under: remote manifests never fetched by c2pa-rs
    (sdkit fetches them, :mod:`provenance._remote`), validation on or off. Contexts without
    trust anchors (the opt-out checks' many reads) are made once per thread."""
    import c2pa

    settings: dict[str, Any] = {
        "verify": {"verify_after_reading": verify, "remote_manifest_fetch": False}
    }
    if trust_anchors:
        settings["trust"] = {"trust_anchors": trust_anchors}
        return c2pa.Context(settings=c2pa.Settings.from_dict(settings))
    cache: dict[bool, c2pa.Context] | None = getattr(_READ_CONTEXTS, "by_verify", None)
    if cache is None:
        cache = _READ_CONTEXTS.by_verify = {}
    if verify not in cache:
        cache[verify] = c2pa.Context(settings=c2pa.Settings.from_dict(settings))
    return cache[verify]


def remote_manifest_url(exc: BaseException) -> str | None:
    """The URL of the manifest that c2pa-python refused to fetch, if ``exc`` says so; else None.

    c2pa-python 0.38 types the errors that c2pa-rs names (``C2paError.ManifestNotFound``,
    ``.RemoteManifest``, ``.Verify``, ...), but a manifest that a file only references comes
    back as c2pa-rs's ``RemoteManifestUrl`` error, whose text starts ``Remote:``, a prefix its
    table of types lacks, so it is raised as a plain ``C2paError``. This is the one place that
    reads that text; ``C2paError.RemoteManifest`` is taken as remote too (a later c2pa-python
    may raise it), with ``""`` when its text names no URL.
    """
    import c2pa

    message = str(exc)
    typed = isinstance(exc, c2pa.C2paError.RemoteManifest)
    untyped = type(exc) is c2pa.C2paError and message.startswith("Remote")
    if not (typed or untyped):
        return None
    found = re.search(r"\w+://\S+", message)
    return found.group(0) if found else ""


def read_manifest(
    data: bytes,
    mime: str,
    *,
    trust_anchors: str | None = None,
    verify: bool = True,
    remote: tuple[str, bytes] | None = None,
) -> ManifestReading:
    """Read (and by default validate) the C2PA manifest in ``data`` (or a bare manifest store).

    The one reader of C2PA manifests: ``verify`` and the opt-out checks both call it.

    Args:
        data: a file's bytes, or manifest store bytes with ``mime="application/c2pa"``.
        mime: the file's MIME type.
        trust_anchors: PEM certificates; a signer chaining to one is ``trusted``.
        remote: ``(url, manifest store bytes)`` of the manifest that the file only points to,
            fetched by the caller (``verify`` fetches it under its SSRF policy,
            :mod:`provenance._remote`; c2pa-rs never fetches). Without it, such a file is
            ``remote``, with the URL in ``remote_url``.
        verify: check the signature and the hash bindings (the state says the result). With
            ``False`` (about 4x faster; the opt-out checks' default) a manifest that parses
            is ``unchecked``: its assertions are read all the same, which is what opt-outs
            need (a creator's ``notAllowed`` counts whether or not its signature holds).

    Returns:
        The reading; never raises on the file's content. A file with no C2PA data is
        ``absent``; one that c2pa-python cannot parse (a malformed JUMBF box, a file cut
        short, JSON nested too deeply) is ``unreadable`` with the reason in ``error``.
    """
    import c2pa

    fetched_from, store = remote if remote is not None else (None, None)
    context = _read_context(verify=verify, trust_anchors=trust_anchors)
    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), store, context=context)
    except c2pa.C2paError as exc:
        if fetched_from is not None:
            why = f"the manifest fetched from {fetched_from} cannot be read: {exc}"
            return ManifestReading(
                "unreadable", (type(exc).__name__,), remote_url=fetched_from, error=why
            )
        url = remote_manifest_url(exc)
        if url is None:
            return ManifestReading("unreadable", (type(exc).__name__,), error=str(exc))
        return ManifestReading("remote", ("manifest.inaccessible",), remote_url=url or None)
    if reader is None and fetched_from is not None:
        why = f"what {fetched_from} answered is not a C2PA manifest"
        return ManifestReading(
            "unreadable", ("ManifestNotFound",), remote_url=fetched_from, error=why
        )
    if reader is None:
        return ManifestReading("absent")
    with reader:
        try:
            report = json.loads(reader.json())
            remote_url = reader.get_remote_url() or fetched_from
        except c2pa.C2paError as exc:
            return ManifestReading("unreadable", (type(exc).__name__,), error=str(exc))
        except RecursionError:  # assertion data nested deeper than the JSON parser recurses
            return ManifestReading(
                "unreadable", ("RecursionError",), error="the manifest store is nested too deeply"
            )
        except ValueError as exc:  # a number too long for int()
            return ManifestReading("unreadable", (type(exc).__name__,), error=str(exc)[:200])
    report = report if isinstance(report, dict) else {}
    codes = _codes(report.get("validation_status"))
    results = report.get("validation_results")
    active_results = results.get("activeManifest") if isinstance(results, dict) else None
    successes = _codes((active_results or {}).get("success"))
    name = str(report.get("validation_state", "Invalid")).lower()
    state: ReadState = (
        "unchecked"
        if not verify
        else "trusted"
        if name == "trusted"
        else "valid"
        if name == "valid"
        else "invalid"
    )
    manifests = report.get("manifests")
    manifests = manifests if isinstance(manifests, dict) else {}
    active = manifests.get(str(report.get("active_manifest") or ""))
    active = active if isinstance(active, dict) else None
    remote_url = remote_url if isinstance(remote_url, str) else None
    return ManifestReading(
        state, codes, successes, active, manifests, remote_url=remote_url, facts=read_facts(active)
    )


def _codes(statuses: object) -> tuple[str, ...]:
    """The ``code`` of each validation status entry (entries that are not objects skipped)."""
    items = statuses if isinstance(statuses, list) else []
    return tuple(str(s.get("code", "")) for s in items if isinstance(s, dict))


def find_assertion(manifest: Mapping[str, Any] | None, label: str) -> Any:
    """The data of the first assertion labelled ``label`` (instance and version suffixes
    allowed: :func:`base_label`), or None.

    Malformed entries (not objects, labels not strings) are skipped, never raised on.
    """
    return _find_assertion(manifest, label)
