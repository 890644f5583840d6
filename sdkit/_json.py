"""Small JSON files of a model folder, read as outside data.

A model folder comes from anywhere, so its ``sdkit.json``, ``model_index.json`` and the JSON
header of each ``.safetensors`` file are parsed with every failure said in words, as a
``ValueError``: bytes that are not UTF-8, nesting deeper than the parser recurses, integers past
Python's digit limit, or plain bad syntax. Callers wrap the words in their own
:class:`~sdkit.errors.ModelLoadError`.

Example:
    >>> parse_json(b'{"steps": 4}')
    {'steps': 4}
    >>> parse_json(b"[" * 100_000)
    Traceback (most recent call last):
    ValueError: nested too deeply
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["MAX_CONFIG_BYTES", "parse_json", "read_json"]

#: The most bytes of a model folder's own JSON file read (they are a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20


def parse_json(data: bytes) -> Any:
    """``data`` as UTF-8 JSON; every failure a ``ValueError`` saying why."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        raise ValueError(f"not valid JSON ({str(exc)[:120]})") from None


def read_json(path: Path, limit: int = MAX_CONFIG_BYTES) -> Any:
    """The JSON file ``path``, read up to ``limit`` bytes; every failure a ``ValueError``."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return parse_json(data)
