"""Fuzzing what sdkit reads from model files before loading them: ``sdkit.json`` and
``.safetensors`` headers.

Targets: :func:`sdkit.models.model_defaults` (a model folder's ``sdkit.json``);
:func:`sdkit._single_file.read_checkpoint_header`, :func:`~sdkit._single_file.read_checkpoint_metadata`
and :func:`~sdkit._single_file.detect_family` (a single-file checkpoint's header). Property:
defaults / a header / a family, or a :class:`~sdkit.errors.ModelLoadError`, within 2 s and 64 MB.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

from fuzzing import bounded, budget
from hypothesis import given, settings
from hypothesis import strategies as st

from sdkit._single_file import detect_family, read_checkpoint_header, read_checkpoint_metadata
from sdkit.models import ModelDefaults, model_defaults, resolve_source

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.integers(1, 6000).map(lambda n: int("9" * n) if n < 4300 else 0)
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as Python writes them: JSON5-ish, hostile


_DEEP = st.tuples(
    st.sampled_from(["[", '{"a":', '{"defaults": {"steps": [']), st.integers(1, 100_000)
)
DEFAULTS_FILES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "steps": JSON_VALUES,
            "guidance_scale": JSON_VALUES,
            "extra": JSON_VALUES,
        },
    ).map(lambda d: _dumps({"defaults": d})),
    JSON_VALUES.map(_dumps),
    _DEEP.map(lambda t: (t[0] * t[1]).encode()),
    st.integers(4000, 20_000).map(lambda n: b'{"defaults": {"steps": ' + b"1" * n + b"}}"),
    st.binary(max_size=200),
)


@settings(max_examples=budget(150))
@given(DEFAULTS_FILES)
def test_sdkit_json_gives_defaults_or_a_load_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "sdkit.json").write_bytes(content)
        source = resolve_source(folder)
        result = bounded(model_defaults, source, seconds=2.0, megabytes=64)
    assert isinstance(result, (ModelDefaults, BaseException))
    if isinstance(result, ModelDefaults):
        assert isinstance(result.steps, int) and 1 <= result.steps <= 1000
        assert 0.0 <= result.guidance_scale <= 100.0


# -- safetensors headers ------------------------------------------------------------------------

_UNET = "model.diffusion_model."
_KEYS = st.sampled_from(
    [
        _UNET + "input_blocks.0.0.weight",
        _UNET + "label_emb.0.0.weight",
        _UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
        "cond_stage_model.model.ln_final.weight",
        "conditioner.embedders.0.transformer.x",
        "conditioner.embedders.1.model.x",
        "conditioner.embedders.0.model.x",
        "v_pred",
        "__metadata__",
    ]
) | st.text(max_size=12)
_DTYPES = st.sampled_from(["F16", "F32", "BF16", "I64", "BOOL", "F8_E4M3", "X"]) | JSON_VALUES
_SHAPES = st.one_of(
    st.lists(st.sampled_from([0, 1, 4, 9, 768, 1024, 1280, 2048]), max_size=5),
    st.lists(st.integers(-(2**70), 2**70), max_size=4),
    JSON_VALUES,
)
_ENTRIES = st.fixed_dictionaries(
    {},
    optional={
        "dtype": _DTYPES,
        "shape": _SHAPES,
        "data_offsets": st.lists(st.integers(-10, 2**66), max_size=3) | JSON_VALUES,
    },
)
_METADATA = st.dictionaries(st.text(max_size=30), JSON_VALUES, max_size=4) | JSON_VALUES
HEADERS = st.one_of(
    st.dictionaries(_KEYS, _ENTRIES | JSON_VALUES, max_size=8)
    .flatmap(lambda h: st.just(h) | _METADATA.map(lambda m: {**h, "__metadata__": m}))
    .map(_dumps),
    JSON_VALUES.map(_dumps),
    _DEEP.map(lambda t: (t[0] * t[1]).encode()),
    st.integers(4000, 20_000).map(lambda n: b'{"a": {"shape": [' + b"7" * n + b"]}}"),
    st.binary(max_size=100),
)
# The 8-byte length: right, or any number (larger than the file, zero, 2**64 - 1).
_LENGTHS = st.one_of(st.none(), st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 7, 2**63]))
SAFETENSORS = st.tuples(HEADERS, _LENGTHS, st.binary(max_size=64)).map(
    lambda t: struct.pack("<Q", len(t[0]) if t[1] is None else t[1]) + t[0] + t[2]
) | st.binary(max_size=40)


def _read_all(path: Path) -> str:
    header = read_checkpoint_header(path)
    metadata = read_checkpoint_metadata(path)
    assert isinstance(header, dict) and isinstance(metadata, dict)
    for key, (dtype, shape) in header.items():
        assert isinstance(key, str) and isinstance(dtype, str)
        assert all(isinstance(n, int) for n in shape)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    return detect_family(header, metadata)


@settings(max_examples=budget(300))
@given(SAFETENSORS)
def test_safetensors_header_is_read_or_a_load_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        path.write_bytes(content)
        result = bounded(_read_all, path, seconds=2.0, megabytes=64)
    assert isinstance(result, (str, BaseException))
