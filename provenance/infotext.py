"""The one A1111 infotext codec: the "parameters" text, and where image files carry it.

sdkit writes it (``sdkit.images``), verify and detect read it back (``provenance._image_input``).
It knows the text format and the containers, never a Recipe: ``sdkit.recipe`` maps Recipe fields
to keys and checks the values.

The text, as AUTOMATIC1111 writes it (``modules/infotext_utils.py``)::

    <prompt, may span lines>
    Negative prompt: <negative prompt, may span lines>
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Lora hashes: "a: 1, b: 2"

The last line holds the parameters: ``Key: value`` pairs separated by commas; a value that
holds a comma, a colon or a new line (or starts with a quote) is written as a JSON string.
A1111 reads the line with the regex ``\\s*(\\w[\\w \\-/]+):\\s*("(?:\\\\.|[^\\\\"])+"|[^,]*)(?:,|$)``
and counts it as parameters only when it finds at least three pairs; :func:`parse_infotext`
reads the same pairs in one linear pass (the regex is quadratic on a long line without colons).
No length limit here: callers bound the text (``sdkit.recipe`` at ``MAX_RECIPE_CHARS``, verify
by the file size it reads).

The containers:

* PNG: a text chunk with the keyword ``parameters`` (``tEXt`` when the text is Latin-1, else
  ``iTXt``, UTF-8), as A1111 writes it.
* JPEG and WebP: EXIF UserComment (tag 0x9286 in the Exif IFD, 0x8769), ``b"UNICODE\\0"`` and
  the text in UTF-16 big-endian, as A1111 writes it through piexif. Reading also takes
  little-endian UTF-16 with a byte-order mark and ``b"ASCII\\0\\0\\0"``, which other tools write,
  and counts malformed EXIF as no infotext.

Example:
    >>> text = format_infotext("a cat", "dog", [("Steps", 20), ("CFG scale", 7.5), ("Note", "a, b")])
    >>> text
    'a cat\\nNegative prompt: dog\\nSteps: 20, CFG scale: 7.5, Note: "a, b"'
    >>> parse_infotext(text)
    Infotext(prompt='a cat', negative_prompt='dog', parameters={'Steps': '20', 'CFG scale': '7.5', 'Note': 'a, b'})
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from PIL import Image, PngImagePlugin

__all__ = [
    "ADDON_SHORT_HASH",
    "EXIF_IFD",
    "PNG_KEY",
    "USER_COMMENT",
    "Infotext",
    "Verbatim",
    "addon_fields",
    "exif_bytes",
    "format_infotext",
    "format_value",
    "from_image",
    "parse_infotext",
    "png_info",
    "quote",
    "read_user_comment",
    "unquote",
]

PNG_KEY = "parameters"
"""The PNG text chunk's keyword."""
EXIF_IFD = 0x8769
"""The Exif sub-IFD's tag (its pointer in IFD0)."""
USER_COMMENT = 0x9286
"""EXIF UserComment's tag, in the Exif IFD."""
_UNICODE = b"UNICODE\x00"
_ASCII = b"ASCII\x00\x00\x00"
_NEGATIVE = "Negative prompt:"


class Infotext(NamedTuple):
    """Infotext split into its parts (a tuple: ``prompt, negative, params = ...``).

    Attributes:
        prompt: the prompt lines.
        negative_prompt: the lines after ``Negative prompt:`` ("" when none).
        parameters: key -> value, JSON-quoted values unquoted, in the text's order.
    """

    prompt: str
    negative_prompt: str
    parameters: dict[str, str]


# -- the text -----------------------------------------------------------------------------------

_SPACE = re.compile(r"\s*")
_KEY = re.compile(r"\w[\w \-/]*")
_QUOTED = re.compile(r'"(?:\\.|[^\\"])+"')
_PLAIN = re.compile(r"[^,]*")


def _param_pairs(line: str) -> list[tuple[str, str]]:
    """The ``(key, value)`` pairs A1111's parameters regex finds in ``line``, in linear time.

    Where the regex fails at one character, it fails at every later one up to the end of that
    run of key characters (the run ends at the same character, which is not a colon), so the
    scan resumes after the run instead of one character on.
    """
    pairs: list[tuple[str, str]] = []
    pos, end = 0, len(line)
    while pos < end:
        start = _SPACE.match(line, pos).end()  # type: ignore[union-attr]
        key = _KEY.match(line, start)
        if key is None or key.end() - start < 2 or line[key.end() : key.end() + 1] != ":":
            pos = max(start + 1, key.end() if key is not None else 0)
            continue
        value_start = _SPACE.match(line, key.end() + 1).end()  # type: ignore[union-attr]
        value = _QUOTED.match(line, value_start)
        if value is None or line[value.end() : value.end() + 1] not in ("", ","):
            value = _PLAIN.match(line, value_start)  # up to the next comma: always matches
        assert value is not None
        pairs.append((key.group(), value.group()))
        pos = value.end() + 1  # past the comma
    return pairs


def parse_infotext(text: str) -> Infotext:
    """Split A1111 infotext into prompt, negative prompt and parameters, in linear time.

    Works on any A1111-style text, not only sdkit's. The caller bounds its length.
    """
    lines = text.strip("\n").split("\n")
    params: dict[str, str] = {}
    pairs = _param_pairs(lines[-1])
    if len(pairs) >= 3:
        lines.pop()
        for key, value in pairs:
            params[key.strip()] = unquote(value.strip())
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if target is prompt_lines and line.startswith(_NEGATIVE):
            target = negative_lines
            # format_infotext writes one space after the colon: the rest is the prompt's own
            line = line[len(_NEGATIVE) :].removeprefix(" ")
        target.append(line)
    return Infotext("\n".join(prompt_lines), "\n".join(negative_lines), params)


def format_value(value: object) -> str:
    """A value as infotext writes it: floats by ``repr`` (``7.0``, ``0.55``), the rest by ``str``."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def quote(text: str) -> str:
    """``text`` as a JSON string when it holds a comma, a colon or a new line, or starts with a
    quote (A1111's rule, so the parameters line splits back the same); else unchanged."""
    if "," not in text and "\n" not in text and ":" not in text and not text.startswith('"'):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """The string of a JSON-quoted value; any other text unchanged."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(value, str):
            return value
    return text


# -- add-ons: A1111's own fields -----------------------------------------------------------------

#: kind -> how many hex digits of the file's SHA-256 A1111 shows, when a record has no
#: ``short_hash`` of its own: embeddings 12 (modules/textual_inversion/textual_inversion.py,
#: ``shorthash = hash[0:12]``), VAE 10 (modules/sd_vae.py ``get_loaded_vae_hash``), ControlNet
#: models 8 (sd-webui-controlnet's ``Model: name [hash]``), refiner 10 (a checkpoint's short
#: hash, as "Model hash"). A LoRA's is not a prefix of the file's SHA-256 (the LoRA module
#: gives it: the "addnet" hash of the tensor bytes).
ADDON_SHORT_HASH = {"lora": 12, "embedding": 12, "vae": 10, "controlnet": 8, "refiner": 10}
_NO_SYMBOLS = str.maketrans("", "", ":,")  # A1111 lora_script: remove_symbols
_NOT_IN_HASHES = re.compile(r'[,:"{}\\\x00-\x1f]')


class Verbatim(str):
    """A value :func:`format_infotext` writes as it is, unquoted (``Hashes: {...}``)."""


def addon_fields(
    records: Sequence[Mapping[str, Any]],
    hires: Mapping[str, Any] | None = None,
    *,
    model_hash: str | None = None,
) -> list[tuple[str, str]]:
    """A1111's infotext fields for add-on records (``AddonRecord.to_dict()`` dicts).

    ``Lora hashes: "name: hash, …"`` (A1111 ``extensions-builtin/Lora/extra_networks_lora.py``,
    names without ``:`` and ``,``), ``TI hashes: "name: hash, …"`` (``modules/sd_hijack_clip.py``),
    ``VAE hash`` and ``VAE`` (``modules/processing.py``), ``ControlNet N: "Module: …, Model:
    name [hash], Weight: …, Guidance Start: …, Guidance End: …"`` (sd-webui-controlnet),
    ``Refiner: name [hash]`` and ``Refiner switch at``, and, from ``hires`` (keys ``scale``,
    ``upscaler``, ``steps``, ``strength``), ``Hires upscale``, ``Hires steps``,
    ``Hires upscaler`` and ``Denoising strength`` (``modules/processing.py``); last,
    Civitai's ``Hashes: {"model": …, "lora:name": …, "embed:name": …, "vae": …}`` (written
    unquoted, as A1111 with the Civitai extension writes it: sd-parsers and Civitai read that
    object, not the quoted A1111 lists; names lose ``,:"{}\\`` so the object splits only where
    A1111's parser expects).

    Example:
        >>> addon_fields([{"kind": "lora", "name": "film", "sha256": "ab" * 32,
        ...                "short_hash": "0123456789ab", "settings": {}},
        ...               {"kind": "embedding", "name": "easyneg", "sha256": "cd" * 32}],
        ... )  # doctest: +NORMALIZE_WHITESPACE
        [('Lora hashes', 'film: 0123456789ab'), ('TI hashes', 'easyneg: cdcdcdcdcdcd'),
         ('Hashes', '{"lora:film": "0123456789ab", "embed:easyneg": "cdcdcdcdcdcd"}')]
    """

    def short(record: Mapping[str, Any]) -> str:
        given = record.get("short_hash") or ""
        return (
            str(given) or str(record.get("sha256", ""))[: ADDON_SHORT_HASH.get(record["kind"], 10)]
        )

    def named(kind: str) -> list[Mapping[str, Any]]:
        return [r for r in records if r.get("kind") == kind]

    fields: list[tuple[str, str]] = []
    for kind, key in (("lora", "Lora hashes"), ("embedding", "TI hashes")):
        if named(kind):
            pairs = (f"{str(r['name']).translate(_NO_SYMBOLS)}: {short(r)}" for r in named(kind))
            fields.append((key, ", ".join(pairs)))
    for vae in named("vae")[:1]:
        fields += [("VAE hash", short(vae)), ("VAE", str(vae["name"]))]
    for net in named("controlnet"):
        settings = net.get("settings") or {}
        parts = [
            f"Module: {settings.get('preprocessor') or 'none'}",
            f"Model: {net['name']} [{short(net)}]",
            f"Weight: {format_value(settings.get('scale', 1.0))}",
            f"Guidance Start: {format_value(settings.get('start', 0.0))}",
            f"Guidance End: {format_value(settings.get('end', 1.0))}",
        ]
        fields.append((f"ControlNet {settings.get('index', 0)}", ", ".join(parts)))
    for upscaler in named("upscaler")[:1] if hires is None else []:
        # sdkit's upscaler record carries the hires settings: scale, steps, strength
        hires = {**(upscaler.get("settings") or {}), "upscaler": upscaler["name"]}
    if hires:
        fields.append(("Hires upscale", format_value(hires.get("scale"))))
        if hires.get("steps") is not None:  # A1111 writes it only when set
            fields.append(("Hires steps", format_value(hires.get("steps"))))
        fields.append(("Hires upscaler", str(hires.get("upscaler"))))
        if hires.get("strength") is not None:
            fields.append(("Denoising strength", format_value(hires.get("strength"))))
    for refiner in named("refiner")[:1]:
        switch = (refiner.get("settings") or {}).get("switch")
        fields.append(("Refiner", f"{refiner['name']} [{short(refiner)}]"))
        if switch is not None:
            fields.append(("Refiner switch at", format_value(switch)))
    civitai = {"model": model_hash} if model_hash else {}
    for prefix, kind in (("lora:", "lora"), ("embed:", "embedding")):
        civitai.update(
            {prefix + _NOT_IN_HASHES.sub("", str(r["name"])): short(r) for r in named(kind)}
        )
    if named("vae"):
        civitai["vae"] = short(named("vae")[0])
    if len(civitai) > bool(model_hash):
        fields.append(("Hashes", Verbatim(json.dumps(civitai, ensure_ascii=True))))
    return fields


def format_infotext(
    prompt: str, negative_prompt: str, parameters: Iterable[tuple[str, object]]
) -> str:
    """The infotext of a prompt, a negative prompt ("" for none) and ``(key, value)`` pairs."""
    params = ", ".join(
        f"{key}: {value if isinstance(value, Verbatim) else quote(format_value(value))}"
        for key, value in parameters
    )
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{_NEGATIVE} {negative_prompt}")
    lines.append(params)
    return "\n".join(lines)


# -- the containers -----------------------------------------------------------------------------


def png_info(infotext: str | None) -> PngImagePlugin.PngInfo:
    """PNG text chunks for ``Image.save(..., pnginfo=...)``: ``parameters`` when given."""
    info = PngImagePlugin.PngInfo()
    if infotext is not None:
        info.add_text(PNG_KEY, infotext)
    return info


def exif_bytes(infotext: str | None) -> bytes:
    """EXIF for ``Image.save(..., exif=...)`` (JPEG, WebP): UserComment as A1111 writes it,
    ``b"UNICODE\\0"`` + UTF-16BE, when given; else an empty EXIF block."""
    exif = Image.Exif()
    if infotext is not None:
        exif.get_ifd(EXIF_IFD)[USER_COMMENT] = _UNICODE + infotext.encode("utf-16-be")
    return exif.tobytes()


def read_user_comment(raw: object) -> str | None:
    """The text of an EXIF UserComment value (``UNICODE`` or ``ASCII`` coded, or already text).

    Example:
        >>> read_user_comment(b"UNICODE\\x00" + "Steps: 20".encode("utf-16-be"))
        'Steps: 20'
    """
    if isinstance(raw, bytes):
        if raw.startswith(_UNICODE):
            body = raw[len(_UNICODE) :]
            # piexif (A1111) writes big-endian; some tools write little-endian with a BOM.
            if body.startswith(b"\xff\xfe"):
                return body.decode("utf-16", errors="replace")
            return body.decode("utf-16-be", errors="replace")
        if raw.startswith(_ASCII):
            return raw[len(_ASCII) :].decode("ascii", errors="replace")
    return raw if isinstance(raw, str) else None


def from_image(image: Image.Image, *, loaded: bool = True) -> str | None:
    """The infotext an opened image carries: its PNG ``parameters`` chunk or EXIF UserComment.

    Args:
        image: an image from ``Image.open``.
        loaded: False reads only what the header holds, decoding nothing (the image may be
            damaged or over a pixel budget).

    Returns:
        The text, or ``None`` when there is none or the EXIF is malformed.
    """
    text = image.info.get(PNG_KEY)
    if isinstance(text, str):
        return text
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data": said by returning None
            if loaded:
                exif = image.getexif()
            else:
                exif = Image.Exif()
                raw_exif = image.info.get("exif")
                if isinstance(raw_exif, bytes):
                    exif.load(raw_exif)
            raw = exif.get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception:  # Pillow's EXIF parser raises many types on bad data
        return None
    return read_user_comment(raw)
