"""The checks behind :meth:`sdkit.Recipe.from_dict` and :meth:`~sdkit.Recipe.from_infotext`.

A Recipe comes from outside: a manifest's JSON, an image's infotext, text pasted from the web.
One function per kind of field (a string, a SHA-256, an integer or a number in a range, a JSON
object), and one per kind of infotext value (text to int, float, size, JSON); the tables that
say which field gets which are in :mod:`sdkit.recipe`. Every failure is a
:class:`~sdkit.errors.RecipeParseError` naming the field, never a TypeError, a RecursionError
or a float that is not finite, and the limits below bound the work whatever the text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

from .addons._record import ADDON_KINDS, AddonKind, AddonRecord
from .errors import RecipeParseError

MAX_RECIPE_CHARS = 1_000_000
"""Longest infotext or Recipe JSON read, in characters (two 100,000-character prompts fit)."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of ``scheduler_config`` (diffusers' configs nest two or three levels)."""
MAX_JSON_ITEMS = 10_000
"""Most values (keys, items and scalars) in ``scheduler_config``."""

_HINT = "a Recipe is read from the infotext or the manifest sdkit wrote; this one was altered."


def _bad(name: str, value: Any, expected: str, what: str = "recipe field") -> RecipeParseError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    return RecipeParseError(
        f"{what} {name!r} is {shown}: expected {expected}", field=name, hint=_HINT
    )


def _check_size(what: str, text: str | bytes) -> None:
    if len(text) > MAX_RECIPE_CHARS:
        raise RecipeParseError(
            f"{what} is {len(text)} characters long: at most {MAX_RECIPE_CHARS} are read",
            hint=_HINT,
        )


def _load_json(what: str, text: str | bytes, name: str | None, kind: type) -> Any:
    """``json.loads`` with every failure (syntax, depth, a 5,000-digit number) typed."""
    value: Any = None
    problem: str | None = None
    try:
        value = json.loads(text)
    except RecursionError:
        problem = "is nested too deep"
    except json.JSONDecodeError as exc:
        problem = f"is not JSON ({exc.msg} at character {exc.pos})"
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    except ValueError:  # int(): over sys.get_int_max_str_digits() digits
        problem = "has a number with too many digits"
    if problem is not None:
        raise RecipeParseError(f"{what} {problem}", field=name, hint=_HINT)
    if not isinstance(value, kind):
        raise RecipeParseError(
            f"{what} must be a JSON {'object' if kind is dict else kind.__name__}, "
            f"not {type(value).__name__}",
            field=name,
            hint=_HINT,
        )
    return value


# -- field checks: one per kind of field; sdkit.recipe._CHECKS says which field gets which ----

_Check = Callable[[str, Any], Any]
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad(name, value, "a string")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in JSON): not writable text
            raise _bad(name, value, "Unicode text (no lone surrogates)") from None
    return value


def _sha256(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise _bad(name, value, "64 lowercase hex digits (a SHA-256)")
    return value


def _integer(low: int, high: int) -> _Check:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _bad(name, value, f"an integer in {low}..{high}")
        return value

    return check


def _number(low: float, high: float) -> _Check:
    def check(name: str, value: Any) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not low <= value <= high  # NaN fails too
        ):
            raise _bad(name, value, f"a number in {low:g}..{high:g}")
        return float(value)

    return check


def _one_of(*allowed: str) -> _Check:
    def check(name: str, value: Any) -> str:
        if value not in allowed:
            raise _bad(name, value, "one of " + ", ".join(map(repr, allowed)))
        return str(value)

    return check


def _json_object(name: str, value: Any) -> dict[str, Any]:
    """A JSON object with string keys, at most MAX_JSON_DEPTH deep and MAX_JSON_ITEMS values
    (walked without recursion, so that no depth raises RecursionError)."""
    if not isinstance(value, Mapping):
        raise _bad(name, value, "a JSON object")
    stack: list[tuple[Any, int]] = [(value, 1)]
    count = 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if depth > MAX_JSON_DEPTH or count > MAX_JSON_ITEMS:
            raise RecipeParseError(
                f"recipe field {name!r} is too large: at most {MAX_JSON_DEPTH} levels and "
                f"{MAX_JSON_ITEMS} values",
                field=name,
                hint=_HINT,
            )
        if isinstance(item, Mapping):
            if not all(isinstance(key, str) for key in item):
                raise _bad(name, value, "a JSON object with string keys")
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
        elif item is not None and not isinstance(item, (bool, int, float, str)):
            raise _bad(name, item, "JSON values (strings, numbers, lists, objects)")
    return dict(value)


def _string_map(name: str, value: Any) -> dict[str, str]:
    if (
        not isinstance(value, Mapping)
        or len(value) > 100
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        raise _bad(name, value, "a JSON object of at most 100 strings")
    return dict(value)


# -- infotext values: text to the Python value, before the field checks above ---------------

_INTEGER_TEXT = re.compile(r"\s*[+-]?\d{1,20}\s*")
_SIZE_TEXT = re.compile(r"\s*(\d{1,6})\s*x\s*(\d{1,6})\s*")


def _int_text(key: str, text: str) -> int:
    if not _INTEGER_TEXT.fullmatch(text):
        raise _bad(key, text, "an integer", "infotext field")
    return int(text)


def _float_text(key: str, text: str) -> float:
    try:
        value = float(text) if len(text) <= 64 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _bad(key, text, "a finite number", "infotext field")
    return value


def _size_text(key: str, text: str) -> tuple[int, int]:
    match = _SIZE_TEXT.fullmatch(text)
    if match is None:
        raise _bad(key, text, "WIDTHxHEIGHT, e.g. 512x512", "infotext field")
    return int(match[1]), int(match[2])


def _json_text(key: str, text: str) -> Any:
    return _load_json(f"infotext field {key!r}", text, key, dict)


def _same(key: str, text: str) -> str:
    return text


# -- add-on records ------------------------------------------------------------------------------

MAX_ADDONS = 64
"""Most add-on records in one Recipe (LoRAs, embeddings, VAE, ControlNets…)."""
_ADDON_KEYS = ("kind", "name", "sha256", "source", "settings", "short_hash")
_SHORT_HASH = re.compile(r"[0-9a-f]{8,64}")


def _addons(name: str, value: Any) -> tuple[AddonRecord, ...]:
    """A list of add-on records (:class:`sdkit.addons.AddonRecord` or their JSON objects)."""
    if not isinstance(value, (list, tuple)) or len(value) > MAX_ADDONS:
        raise _bad(name, value, f"a list of at most {MAX_ADDONS} add-on records")
    return tuple(_addon(f"{name}[{i}]", item) for i, item in enumerate(value))


def _addon(name: str, item: Any) -> AddonRecord:
    if isinstance(item, AddonRecord):
        item = item.to_dict()
    if not isinstance(item, Mapping) or not all(isinstance(k, str) for k in item):
        raise _bad(name, item, "an add-on record (a JSON object)")
    unknown = [k for k in item if k not in _ADDON_KEYS]
    if unknown or not {"kind", "name", "sha256"} <= set(item):
        raise _bad(
            name, item, f"an object with kind, name, sha256 (and {', '.join(_ADDON_KEYS[3:])})"
        )
    kind = _one_of(*ADDON_KINDS)(f"{name}.kind", item["kind"])
    label = _text(f"{name}.name", item["name"])
    if not 0 < len(label) <= 256 or any(c in label for c in "\n\r\0"):
        raise _bad(f"{name}.name", label, "a name of 1..256 characters on one line")
    source = _text(f"{name}.source", item.get("source", ""))
    if len(source) > 4096:
        raise _bad(f"{name}.source", source, "at most 4096 characters")
    short = item.get("short_hash", "")
    if short != "" and (not isinstance(short, str) or not _SHORT_HASH.fullmatch(short)):
        raise _bad(f"{name}.short_hash", short, "8..64 lowercase hex digits")
    settings = item.get("settings", {})
    if not isinstance(settings, Mapping) or len(settings) > 32:
        raise _bad(f"{name}.settings", settings, "a JSON object of at most 32 values")
    for key, setting in settings.items():
        where = f"{name}.settings.{str(key)[:40]}"
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise _bad(where, key, "a key of 1..64 characters")
        if isinstance(setting, float) and not math.isfinite(setting):
            raise _bad(where, setting, "a finite number")
        if isinstance(setting, str) and len(setting) > 1024:
            raise _bad(where, setting, "at most 1024 characters")
        if setting is not None and not isinstance(setting, (bool, int, float, str)):
            raise _bad(where, setting, "a string, number, true/false or null")
        if key in ("unet", "te", "scale", "start", "end", "switch", "strength") and (
            isinstance(setting, bool)
            or not isinstance(setting, (int, float))
            or not -1000 <= setting <= 1000
        ):
            raise _bad(where, setting, "a number within ±1000")
    # a built-in upscaler ("Latent", "Lanczos") is no file: its hash is ""
    builtin = kind == "upscaler" and item["sha256"] == "" and label in ("Latent", "Lanczos")
    digest = "" if builtin else _sha256(f"{name}.sha256", item["sha256"])
    return AddonRecord(cast(AddonKind, kind), label, digest, source,
                       dict(settings), short)  # fmt: skip


def _addons_text(key: str, text: str) -> Any:
    return _load_json(f"infotext field {key!r}", text, key, list)
