"""Hostile model files: sdkit.json, .safetensors headers, pickle beside safetensors (issue 18).

Every file here is written byte by byte as an attacker would, and every one must end as a
:class:`sdkit.errors.ModelLoadError` naming the file and the rule (CLI exit 3), never a raw
exception, and a pickle file must never be unpickled.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdkit import Generator
from sdkit._single_file import detect_family, read_checkpoint_header
from sdkit.cli import cli
from sdkit.errors import ModelLoadError, UnsafeCheckpointError
from sdkit.models import load_pipeline, model_defaults, resolve_source

# -- helpers -------------------------------------------------------------------------------------


def safetensors_bytes(
    header: dict[str, Any] | bytes, data: bytes = b"", length: int | None = None
) -> bytes:
    """The file format by hand: 8-byte little-endian header length, JSON header, data."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def tensor(dtype: str = "F32", shape: Any = (1,), offsets: Any = (0, 4)) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "shape": list(shape) if isinstance(shape, tuple) else shape,
        "data_offsets": list(offsets) if isinstance(offsets, tuple) else offsets,
    }


_TO_K = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"

# (id, file bytes, words the message must contain)
HOSTILE_FILES: list[tuple[str, bytes, str]] = [
    ("negative-shape", safetensors_bytes({"w": tensor(shape=(-1,), offsets=(0, 0))}), "shape"),
    ("huge-shape", safetensors_bytes({"w": tensor(shape=(10**12, 10**12))}, b"\0" * 4), "fit"),
    (
        "product-overflows-64-bits",
        safetensors_bytes({"w": tensor(shape=(2**32, 2**32), offsets=(0, 0))}),
        "fit",
    ),
    ("shape-a-string", safetensors_bytes({"w": tensor(shape="abc")}, b"\0" * 4), "shape"),
    ("shape-a-dict", safetensors_bytes({"w": tensor(shape={"a": 1})}, b"\0" * 4), "shape"),
    ("shape-floats", safetensors_bytes({"w": tensor(shape=(1.0,))}, b"\0" * 4), "shape"),
    ("shape-bool", safetensors_bytes({"w": tensor(shape=(True,))}, b"\0" * 4), "shape"),
    (
        "shape-5000-digits",
        safetensors_bytes(
            b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}',
            b"\0" * 4,
        ),
        "JSON",
    ),
    ("rank-100", safetensors_bytes({"w": tensor(shape=(1,) * 100)}, b"\0" * 4), "shape"),
    (
        "deep-header",
        safetensors_bytes(b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        "nested",
    ),
    ("deep-header-unclosed", safetensors_bytes(b"[" * 200_000), "nested"),
    ("unknown-dtype", safetensors_bytes({"w": tensor(dtype="F128")}, b"\0" * 4), "dtype"),
    ("dtype-not-a-string", safetensors_bytes({"w": tensor(dtype=["F32"])}, b"\0" * 4), "dtype"),
    ("offsets-past-the-end", safetensors_bytes({"w": tensor(offsets=(0, 4))}), "cover"),
    ("offsets-backwards", safetensors_bytes({"w": tensor(offsets=(4, 0))}, b"\0" * 4), "offsets"),
    (
        "offsets-negative",
        safetensors_bytes({"w": tensor(shape=(0,), offsets=(-4, -4))}, b"\0" * 4),
        "offsets",
    ),
    ("offsets-three", safetensors_bytes({"w": tensor(offsets=(0, 4, 8))}, b"\0" * 4), "offsets"),
    (
        "overlapping",
        safetensors_bytes({"a": tensor(), "b": tensor(offsets=(2, 6))}, b"\0" * 6),
        "overlaps",
    ),
    ("gap", safetensors_bytes({"a": tensor(offsets=(4, 8))}, b"\0" * 8), "gap"),
    ("trailing-data", safetensors_bytes({"a": tensor()}, b"\0" * 12), "cover"),
    ("entry-a-list", safetensors_bytes({"w": [1, 2]}), "object"),
    ("header-a-list", safetensors_bytes(b"[1, 2]"), "object"),
    ("metadata-not-strings", safetensors_bytes({"__metadata__": {"a": [1]}}), "__metadata__"),
    ("not-utf8", safetensors_bytes(b'{"\xff": 1}'), "UTF-8"),
    ("not-json", safetensors_bytes(b"{nope"), "JSON"),
    ("length-past-the-file", safetensors_bytes({}, length=10**6), "length"),
    ("length-2**64-1", safetensors_bytes({}, length=2**64 - 1), "length"),
    ("length-zero", safetensors_bytes(b"", length=0), "length"),
    ("three-bytes", b"abc", "8-byte"),
    ("empty", b"", "8-byte"),
]


# -- .safetensors headers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "needle"), [c[1:] for c in HOSTILE_FILES], ids=[c[0] for c in HOSTILE_FILES]
)
def test_hostile_safetensors_headers_are_load_errors_naming_the_rule(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    path = write(tmp_path / "hostile.safetensors", content)
    with pytest.raises(ModelLoadError) as info:
        read_checkpoint_header(path)
    assert "hostile.safetensors" in info.value.message and needle in info.value.message
    assert info.value.hint


def test_a_header_over_the_safetensors_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from sdkit._safetensors import MAX_HEADER_BYTES

    # a sparse file: 8 bytes of length, then a hole past 100 MB (nothing is allocated or read)
    path = tmp_path / "big.safetensors"
    with path.open("wb") as f:
        f.write(struct.pack("<Q", MAX_HEADER_BYTES + 1))
        f.truncate(MAX_HEADER_BYTES + 100)
    with pytest.raises(ModelLoadError, match=f"outside 2..{MAX_HEADER_BYTES}"):
        read_checkpoint_header(path)


def test_valid_headers_read_with_every_rule_checked(tmp_path: Path) -> None:
    header = {
        "__metadata__": {"format": "pt"},
        "b": tensor("F16", (2, 3), (4, 16)),
        "a": tensor("F32", (), (0, 4)),  # a scalar
        "empty": tensor("BF16", (0, 7), (16, 16)),
        "packed": tensor("F4", (3, 2), (16, 19)),  # 4 bits each
    }
    path = write(tmp_path / "ok.safetensors", safetensors_bytes(header, b"\0" * 19))
    from sdkit._safetensors import read_safetensors_header

    tensors, metadata = read_safetensors_header(path)
    assert tensors["b"] == ("F16", [2, 3], (4, 16)) and tensors["a"] == ("F32", [], (0, 4))
    assert metadata == {"format": "pt"}
    assert read_checkpoint_header(path)["packed"] == ("F4", [3, 2])


def test_a_shapeless_cross_attention_tensor_is_not_a_crash_in_family_detection(
    tmp_path: Path,
) -> None:
    # valid by the format (a scalar), absurd as a UNet weight: detection must refuse, not IndexError
    path = write(
        tmp_path / "scalar.safetensors", safetensors_bytes({_TO_K: tensor(shape=())}, b"\0" * 4)
    )
    with pytest.raises(ModelLoadError, match="unrecognised checkpoint"):
        detect_family(read_checkpoint_header(path))
    with pytest.raises(ModelLoadError, match="channels"):
        detect_family(
            {
                _TO_K: ("F32", [1, 768]),
                "model.diffusion_model.input_blocks.0.0.weight": ("F32", [1]),
            }
        )


@pytest.mark.parametrize(
    "name", ["shape-a-string", "deep-header", "shape-5000-digits", "negative-shape", "overlapping"]
)
def test_cli_exits_6_on_a_hostile_single_file(tmp_path: Path, name: str) -> None:
    content = next(c for i, c, _ in HOSTILE_FILES if i == name)
    path = write(tmp_path / "model.safetensors", content)
    result = CliRunner().invoke(
        cli, ["generate", "x", "-m", str(path), "-o", str(tmp_path / "a.png")]
    )
    assert result.exit_code == 6, result.output
    assert "error: model.safetensors is not a readable .safetensors file" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not (tmp_path / "a.png").exists()


@pytest.fixture
def model_copy(tiny_sd_path: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_sd_path, folder)
    return folder


def test_a_hostile_weight_file_in_a_folder_is_a_load_error_naming_it(model_copy: Path) -> None:
    unet = model_copy / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(safetensors_bytes({"conv_in.weight": tensor(shape=(-3, 4))}, b"\0" * 4))
    with pytest.raises(ModelLoadError) as info:
        Generator(model_copy, device="cpu", progress=False)
    assert "diffusion_pytorch_model.safetensors" in info.value.message
    assert "shape" in info.value.message


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=6), inner, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    st.binary(max_size=64),
)
def test_fuzzed_headers_are_valid_or_a_load_error(
    tmp_path: Path, header: bytes, data: bytes
) -> None:
    path = write(tmp_path / "fuzz.safetensors", safetensors_bytes(header, data))
    with contextlib.suppress(ModelLoadError):  # valid, or refused: nothing else
        read_checkpoint_header(path)


# -- sdkit.json ----------------------------------------------------------------------------------

BAD_DEFAULTS: list[tuple[str, bytes, str]] = [
    ("deep", b'{"defaults": ' + b"[" * 100_000, "nested"),
    ("deep-object", b'{"a": ' * 100_000, "nested"),
    ("5000-digit-steps", b'{"defaults": {"steps": ' + b"9" * 5000 + b"}}", "JSON"),
    ("5000-digit-key", b'{"x": ' + b"1" * 5000 + b', "defaults": {}}', "JSON"),
    ("too-big", b'{"defaults": {}, "pad": "' + b"a" * (1 << 20) + b'"}', "larger than"),
    ("not-utf8", b'{"defaults": {"\xff": 1}}', "UTF-8"),
    ("a-list", b"[1]", "defaults"),
    ("defaults-a-string", b'{"defaults": "fast"}', "defaults"),
    ("steps-a-string", b'{"defaults": {"steps": "5"}}', "steps"),
    ("steps-a-float", b'{"defaults": {"steps": 5.5}}', "steps"),
    ("steps-bool", b'{"defaults": {"steps": true}}', "steps"),
    ("steps-huge", b'{"defaults": {"steps": ' + b"9" * 4000 + b"}}", "steps"),
    ("guidance-nan", b'{"defaults": {"guidance_scale": NaN}}', "guidance_scale"),
    ("guidance-infinity", b'{"defaults": {"guidance_scale": Infinity}}', "guidance_scale"),
    ("guidance-a-list", b'{"defaults": {"guidance_scale": [1]}}', "guidance_scale"),
    ("unknown-key", b'{"defaults": {"stepz": 5}}', "stepz"),
    ("unknown-top-level-key", b'{"defaults": {}, "stpes": 5}', "'stpes'"),
]


@pytest.mark.parametrize(
    ("content", "needle"), [c[1:] for c in BAD_DEFAULTS], ids=[c[0] for c in BAD_DEFAULTS]
)
def test_hostile_sdkit_json_is_a_load_error_with_path_and_hint(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    path = write(tmp_path / "sdkit.json", content)
    with pytest.raises(ModelLoadError) as info:
        model_defaults(resolve_source(tmp_path))
    assert str(path) in info.value.message and needle in info.value.message
    assert info.value.hint and "defaults" in info.value.hint


@pytest.mark.parametrize("name", ["deep", "5000-digit-steps"])
def test_cli_exits_3_on_a_hostile_sdkit_json(tmp_path: Path, name: str) -> None:
    write(tmp_path / "model" / "sdkit.json", next(c for i, c, _ in BAD_DEFAULTS if i == name))
    out = tmp_path / "a.png"
    result = CliRunner().invoke(
        cli, ["generate", "x", "-m", str(tmp_path / "model"), "-o", str(out)]
    )
    assert result.exit_code == 6, result.output
    assert "sdkit.json is not a valid sdkit defaults file" in result.output
    assert "hint:" in result.output and "Traceback" not in result.output
    assert not out.exists()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.binary(max_size=200)
    | st.from_regex(rb'\A\{"defaults": \{"(steps|guidance_scale)": [-0-9.eE]{1,30}\}\}\Z')
)
def test_fuzzed_sdkit_json_is_defaults_or_a_load_error(tmp_path: Path, content: bytes) -> None:
    write(tmp_path / "sdkit.json", content)
    try:
        defaults = model_defaults(resolve_source(tmp_path))
    except ModelLoadError:
        return
    assert 1 <= defaults.steps <= 1000 and 0 <= defaults.guidance_scale <= 100


# -- pickle beside safetensors -------------------------------------------------------------------


class _Bomb:
    """Unpickling this creates ``marker``: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _plant_pickles(folder: Path, marker: Path) -> list[Path]:
    names = {
        "text_encoder": "pytorch_model.bin",
        "unet": "diffusion_pytorch_model.bin",
        "vae": "diffusion_pytorch_model.bin",
    }
    planted = []
    for part, name in names.items():
        planted.append(folder / part / name)
        planted[-1].write_bytes(pickle.dumps(_Bomb(marker)))
    return planted


def test_pickle_beside_safetensors_is_ignored_and_never_unpickled(
    model_copy: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pickle-ran"
    planted = _plant_pickles(model_copy, marker)
    gen = Generator(model_copy, device="cpu", progress=False)
    assert gen(prompt="x", steps=1, seed=1).image.image.size == (64, 64)
    assert not marker.exists()
    # the model's identity is what was loaded: the pickle files are not part of it, even allowed
    for allow in (False, True):
        _, files = load_pipeline(
            resolve_source(model_copy), torch_dtype=gen.dtype, allow_pickle=allow
        )
        assert (
            files
            and not set(planted) & set(files)
            and all(f.suffix == ".safetensors" for f in files)
        )
    assert not marker.exists()


def test_a_component_with_only_pickle_is_refused_naming_the_file(
    model_copy: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pickle-ran"
    _plant_pickles(model_copy, marker)
    (model_copy / "text_encoder" / "model.safetensors").unlink()
    with pytest.raises(UnsafeCheckpointError) as info:
        Generator(model_copy, device="cpu", progress=False)
    assert "text_encoder/pytorch_model.bin" in info.value.message
    assert "unet" not in info.value.message  # the components with safetensors are fine
    assert "allow_pickle" in (info.value.hint or "")
    assert not marker.exists()
    result = CliRunner().invoke(
        cli, ["generate", "x", "-m", str(model_copy), "-o", str(tmp_path / "a.png")]
    )
    assert result.exit_code == 6 and "text_encoder/pytorch_model.bin" in result.output
    assert "--allow-pickle" in result.output and not marker.exists()


def test_weights_under_a_hidden_parent_folder_are_found(model_copy: Path, tmp_path: Path) -> None:
    # e.g. the hub cache in ~/.cache: a dot in the folder's own path must not hide its weights
    hidden = tmp_path / ".cache" / "model"
    shutil.copytree(model_copy, hidden)
    _, files = load_pipeline(resolve_source(hidden), torch_dtype=__import__("torch").float32)
    assert len(files) == 3
