"""Check a ``.safetensors`` header before any library parses the file.

A model file is outside data: its header is JSON an attacker writes. sdkit reads it (family
detection, model listings) and checks every rule of the format here, before diffusers, torch or
the safetensors library see the file, so that a hostile header is a
:class:`~sdkit.errors.ModelLoadError` naming the file, the tensor and the broken rule, never a
traceback or a huge allocation.

The format (https://github.com/huggingface/safetensors#format)::

    8 bytes      N, the header length, unsigned little-endian
    N bytes      UTF-8 JSON object: {"__metadata__": {str: str},
                                     NAME: {"dtype": D, "shape": [d0, d1, …], "data_offsets": [b, e]}, …}
    the rest     the tensor data; offsets count from its first byte

The rules checked (the safetensors library checks the same ones when it loads):

=====================  ==========================================================================
header length N        ``2 <= N <= min(100 MB, file size - 8)``; 100 MB (:data:`MAX_HEADER_BYTES`)
                       is the cap safetensors itself enforces
JSON                   UTF-8, an object; nesting too deep for the parser and integers of more than
                       4,300 digits (Python's limit) are refused, not raised
``__metadata__``       an object of strings (optional)
``dtype``              a name of :data:`DTYPE_BITS`
``shape``              a list of at most :data:`MAX_RANK` whole numbers ``>= 0``
``data_offsets``       two whole numbers, ``0 <= begin <= end``
size                   ``(end - begin) * 8 == prod(shape) * bits(dtype)``
coverage               sorted by offset, the tensors tile the data exactly: no gap, no overlap,
                       nothing past the end of the file
=====================  ==========================================================================

Example:
    >>> DTYPE_BITS["BF16"]
    16
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._json import parse_json
from .errors import ModelLoadError, ModelNotFoundError

__all__ = ["DTYPE_BITS", "MAX_HEADER_BYTES", "MAX_RANK", "TensorInfo", "read_safetensors_header"]

#: The header cap safetensors itself enforces (``MAX_HEADER_SIZE``), in bytes.
MAX_HEADER_BYTES = 100_000_000
#: Most dimensions a tensor may have (torch's own limit is 64 too).
MAX_RANK = 64

#: Bits per element of each dtype name safetensors writes.
DTYPE_BITS: Mapping[str, int] = MappingProxyType(
    {
        "BOOL": 8,
        "U8": 8,
        "I8": 8,
        "F8_E5M2": 8,
        "F8_E4M3": 8,
        "F8_E4M3FNUZ": 8,
        "F8_E5M2FNUZ": 8,
        "F8_E8M0": 8,
        "F4": 4,
        "F6_E2M3": 6,
        "F6_E3M2": 6,
        "I16": 16,
        "U16": 16,
        "F16": 16,
        "BF16": 16,
        "I32": 32,
        "U32": 32,
        "F32": 32,
        "I64": 64,
        "U64": 64,
        "F64": 64,
        "C64": 64,
    }
)

#: ``name -> (dtype, shape, (begin, end))`` of one checked header.
TensorInfo = tuple[str, list[int], tuple[int, int]]

_HINT = "check that the download finished, or get the file again from its source."


def read_safetensors_header(
    path: str | os.PathLike[str],
) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Read and check the header of a ``.safetensors`` file (no tensor data is read).

    Args:
        path: the file.

    Returns:
        ``({name: (dtype, shape, (begin, end))}, metadata)``.

    Raises:
        ModelNotFoundError: no file at ``path``.
        ModelLoadError: the header breaks a rule of the format (the message names the rule).
    """
    src = Path(path)
    try:
        with src.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(8)
            if len(raw) < 8:
                raise _bad(src, f"{size} bytes, shorter than the 8-byte header length")
            (length,) = struct.unpack("<Q", raw)
            limit = min(MAX_HEADER_BYTES, size - 8)
            if not 2 <= length <= limit:
                raise _bad(src, f"header length {length} outside 2..{limit}")
            text = f.read(length)
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"no checkpoint at {src}", source=src) from exc
    except IsADirectoryError as exc:
        raise _bad(src, "a folder, not a file") from exc
    except OSError as exc:
        raise _bad(src, exc.strerror or str(exc)) from exc
    header = _parse(src, text)
    data_size = size - 8 - length
    tensors = {
        name: _tensor(src, name, entry) for name, entry in header.items() if name != "__metadata__"
    }
    _check_coverage(src, tensors, data_size)
    return tensors, _metadata(src, header.get("__metadata__", {}))


def _bad(src: Path, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"{src.name} is not a readable .safetensors file: {why}", source=src, hint=_HINT
    )


def _parse(src: Path, text: bytes) -> dict[str, Any]:
    try:
        header = parse_json(text)
    except ValueError as exc:
        raise _bad(src, f"header is {exc}") from None
    if not isinstance(header, dict):
        raise _bad(src, f"header is a JSON {type(header).__name__}, not an object")
    return header


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor(src: Path, name: str, entry: Any) -> TensorInfo:
    where = f"tensor {name[:200]!r}"
    if not isinstance(entry, dict):
        raise _bad(src, f"{where} is a JSON {type(entry).__name__}, not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise _bad(src, f"{where} has unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or len(shape) > MAX_RANK:
        raise _bad(src, f"{where} shape is not a list of at most {MAX_RANK} numbers")
    if not all(_whole(n) and n >= 0 for n in shape):
        raise _bad(
            src, f"{where} shape {str(shape)[:80]} has a value that is not a whole number >= 0"
        )
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(n) for n in offsets)):
        raise _bad(src, f"{where} data_offsets is not two whole numbers")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise _bad(src, f"{where} data_offsets {begin}..{end} are not 0 <= begin <= end")
    bits = (end - begin) * 8
    elements = 0 if 0 in shape else 1
    for n in shape if elements else ():
        elements *= n
        if elements * DTYPE_BITS[dtype] > bits:  # stop before the product grows without bound
            break
    if elements * DTYPE_BITS[dtype] != bits:
        raise _bad(
            src, f"{where} shape {shape[:8]} of {dtype} does not fit its {end - begin} data bytes"
        )
    return dtype, list(shape), (begin, end)


def _check_coverage(src: Path, tensors: Mapping[str, TensorInfo], data_size: int) -> None:
    position = 0
    for name, (_, _, (begin, end)) in sorted(tensors.items(), key=lambda kv: kv[1][2]):
        if begin != position:
            what = (
                "overlaps the one before"
                if begin < position
                else f"leaves a gap at byte {position}"
            )
            raise _bad(src, f"tensor {name[:200]!r} {what}")
        position = end
    if position != data_size:
        raise _bad(src, f"the tensors cover {position} data bytes, the file holds {data_size}")


def _metadata(src: Path, meta: Any) -> dict[str, str]:
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _bad(src, "__metadata__ is not an object of strings")
    return dict(meta)
