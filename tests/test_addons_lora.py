"""LoRA: parity with plain diffusers, weights, several at once, switching, fusing, errors.

LoRAs are made in the test with peft (tests/addon_files.py) and saved in kohya/A1111 and in
diffusers format. The oracle is plain diffusers as its docs show it: ``load_lora_weights``
with an ``adapter_name``, then ``set_adapters(names, weights)``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from addon_files import make_lora, save_diffusers, save_kohya
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

from sdkit import Generator, InvalidOptionError, UnsafeCheckpointError
from sdkit.addons.lora import inspect_lora
from sdkit.errors import AddonError, AddonNotFoundError
from sdkit.prompts import extract_lora_tags

EULER = {"timestep_spacing": "linspace", "use_karras_sigmas": False}  # sdkit's "Euler"
CALL: dict[str, Any] = dict(sampler="Euler", steps=2, seed=3, width=64, height=64)


@pytest.fixture(scope="module")
def lora_dir(tiny_sd_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    save_kohya(make_lora(tiny_sd_path, 1), folder / "film.safetensors", xl=False)
    save_kohya(make_lora(tiny_sd_path, 2), folder / "ink.safetensors", xl=False)
    save_diffusers(make_lora(tiny_sd_path, 1), folder / "film_diffusers", xl=False)
    return folder


@pytest.fixture(scope="module")
def sd(tiny_sd_path: Path, lora_dir: Path) -> Generator:
    return Generator.from_pretrained(
        tiny_sd_path, device="cpu", progress=False, watermark=False, lora_dirs=[lora_dir]
    )


def _pixels(result: Any) -> np.ndarray:
    return np.asarray(result.image.image.convert("RGB"), dtype=np.int16)


def _plain(
    model: Path, prompt: str, loras: list[tuple[Any, str, Any]], xl: bool = False
) -> np.ndarray:
    if model not in _PIPES:  # one plain pipeline per model; its adapters removed after each use
        cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
        _PIPES[model] = cls.from_pretrained(model)
        _PIPES[model].set_progress_bar_config(disable=True)
    pipe = _PIPES[model]
    pipe.scheduler = EulerDiscreteScheduler.from_config({**pipe.scheduler.config, **EULER})
    for source, name, _ in loras:
        with warnings.catch_warnings():  # peft warns that a model holds several adapters
            warnings.simplefilter("ignore", UserWarning)
            pipe.load_lora_weights(source, adapter_name=name)
    if loras:
        pipe.set_adapters([n for _, n, _ in loras], [w for _, _, w in loras])
    kwargs = {} if xl else {"negative_prompt": ""}
    out = pipe(prompt, num_inference_steps=2, guidance_scale=7.0 if not xl else 5.0,
               generator=torch.Generator("cpu").manual_seed(3), height=64, width=64, **kwargs)  # fmt: skip
    if loras:
        pipe.delete_adapters([n for _, n, _ in loras])
    return np.asarray(out.images[0].convert("RGB"), dtype=np.int16)


_PIPES: dict[Path, Any] = {}


def test_kohya_and_diffusers_files_give_plain_diffusers_pixels(
    sd: Generator, tiny_sd_path: Path, lora_dir: Path
) -> None:
    kohya = str(lora_dir / "film.safetensors")
    expected = _plain(tiny_sd_path, "a red circle ", [(load_file(kohya), "film", 0.7)])
    got = _pixels(sd("a red circle <lora:film:0.7>", **CALL))
    assert np.abs(expected - _plain(tiny_sd_path, "a red circle ", [])).max() > 0
    np.testing.assert_array_equal(got, expected)
    # the same peft weights saved by diffusers' own writer: the same pixels
    sd.load_lora(lora_dir / "film_diffusers", name="film_d")
    np.testing.assert_array_equal(
        _pixels(sd("a red circle ", loras={"film_d": 0.7}, **CALL)), expected
    )
    assert (
        sd("a red circle ", loras={"film_d": 0.7}, **CALL).image.recipe.addons[0].name == "film_d"
    )


def test_weight_zero_is_the_base_and_the_delta_scales_linearly(
    sd: Generator, lora_dir: Path
) -> None:
    base = _pixels(sd("a cat", **CALL))
    np.testing.assert_array_equal(_pixels(sd("a cat", loras={"film": 0.0}, **CALL)), base)
    half, full = (
        _pixels(sd("a cat", loras={"film": 0.5}, **CALL)),
        _pixels(sd("a cat <lora:film:1>", **CALL)),
    )
    assert np.abs(half - base).max() > 0 and np.abs(full - half).max() > 0
    # one UNet layer: delta = w * (alpha / rank) * up @ down, alpha = rank = 4 in the file
    tensors = load_file(str(lora_dir / "film.safetensors"))
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    up, down = tensors[f"{key}.lora_up.weight"], tensors[f"{key}.lora_down.weight"]
    layer = sd.pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    for weight in (0.5, 1.0):
        sd("a cat", loras={"film": weight}, steps=1, seed=1, width=64, height=64)
        adapter = sd.prompt_addons.loras.loaded["film"].adapter
        torch.testing.assert_close(layer.get_delta_weight(adapter), weight * 1.0 * (up @ down))
    sd("a cat", steps=1)  # a call without LoRAs leaves them off
    assert all(not m.active_adapters or m.disable_adapters for m in [layer])


def test_two_loras_combine_and_te_unet_weights_are_separate(
    sd: Generator, tiny_sd_path: Path, lora_dir: Path
) -> None:
    film, ink = (load_file(str(lora_dir / f"{n}.safetensors")) for n in ("film", "ink"))
    expected = _plain(tiny_sd_path, "a cat  ", [(film, "film", 1.0), (ink, "ink", 0.5)])
    np.testing.assert_array_equal(
        _pixels(sd("a cat <lora:film:1> <lora:ink:0.5>", **CALL)), expected
    )
    # A1111's order <lora:name:te:unet>: text encoder 0, UNet 1
    split = _plain(tiny_sd_path, "a cat ", [(film, "film", {"unet": 1.0, "text_encoder": 0.0})])
    got = sd("a cat <lora:film:0:1>", **CALL)
    np.testing.assert_array_equal(_pixels(got), split)
    assert dict(got.image.recipe.addons[0].settings) == {
        "unet": 1.0, "te": 0.0, "fused": False, "from_prompt": True,
    }  # fmt: skip


def test_switching_sets_equals_a_fresh_generator(
    sd: Generator, tiny_sd_path: Path, lora_dir: Path
) -> None:
    sd("a cat <lora:film:1>", **CALL)
    switched = _pixels(sd("a cat <lora:ink:0.8>", **CALL))
    fresh = Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False, watermark=False,
                                      lora_dirs=lora_dir)  # fmt: skip
    np.testing.assert_array_equal(_pixels(fresh("a cat <lora:ink:0.8>", **CALL)), switched)


def test_fuse_is_nearly_the_same_and_unfusing_restores_every_bit(sd: Generator) -> None:
    before = {k: v.clone() for k, v in sd.pipe.unet.state_dict().items() if "base_layer" in k}
    base = _pixels(sd("a cat", **CALL))
    unfused = _pixels(sd("a cat", loras={"film": 1.0, "ink": 0.5}, **CALL))
    fused = sd("a cat", loras={"film": 1.0, "ink": 0.5}, fuse_loras=True, **CALL)
    assert np.abs(_pixels(fused) - unfused).max() <= 2
    assert fused.image.recipe.addons[0].settings["fused"] is True
    again = sd("a cat", loras={"film": 1.0, "ink": 0.5}, fuse_loras=True, **CALL)  # stays fused
    np.testing.assert_array_equal(_pixels(again), _pixels(fused))
    np.testing.assert_array_equal(_pixels(sd("a cat", **CALL)), base)
    after = sd.pipe.unet.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_family_mismatch_unknown_names_and_non_loras_fail_before_work(
    sd: Generator, tiny_sdxl_path: Path, lora_dir: Path, tmp_path: Path
) -> None:
    xl = save_kohya(make_lora(tiny_sdxl_path, 5), tmp_path / "xl_style.safetensors", xl=True)
    assert inspect_lora(xl).family == "SDXL"
    with pytest.raises(AddonError, match=r"is for SDXL, this model is SD 1\.x") as info:
        sd.load_lora(xl)
    assert info.value.kind == "lora" and "film" not in str(info.value)
    with pytest.raises(AddonNotFoundError, match="close names: film") as missing:
        sd("a cat <lora:flim:1>", **CALL)
    assert missing.value.close[0] == "film"
    not_lora = tmp_path / "weights.safetensors"
    save_file({"emb_params": torch.zeros(2, 32)}, str(not_lora))
    with pytest.raises(AddonError, match="is not a LoRA"):
        sd.load_lora(not_lora)
    pickle = tmp_path / "old.pt"
    torch.save(load_file(str(lora_dir / "film.safetensors")), pickle)
    with pytest.raises(UnsafeCheckpointError):
        sd.load_lora(pickle)
    with pytest.raises(InvalidOptionError, match="loras"):
        sd("a cat", loras={"film": float("nan")}, **CALL)
    with pytest.raises(InvalidOptionError, match="LoRA multiplier"):
        sd("a cat <lora:film:strong>", **CALL)
    # a prompt (which an app's users may write) names LoRAs in the folders only, as in A1111:
    # a path in a tag is never opened, even to a real LoRA file outside the folders
    stray = tmp_path / "stray"
    stray.mkdir()
    copied = stray / "stray_lora.safetensors"
    copied.write_bytes((lora_dir / "film.safetensors").read_bytes())
    for tag in (str(copied), f"../{stray.name}/stray_lora.safetensors", "/etc/passwd"):
        with pytest.raises(AddonNotFoundError, match="no lora named"):
            sd(f"a cat <lora:{tag}:1>", **CALL)


def test_sdxl_kohya_lora_matches_plain_diffusers(tiny_sdxl_path: Path, tmp_path: Path) -> None:
    path = save_kohya(make_lora(tiny_sdxl_path, 7), tmp_path / "xl.safetensors", xl=True)
    gen = Generator.from_pretrained(tiny_sdxl_path, device="cpu", progress=False, watermark=False,
                                    lora_dirs=str(tmp_path))  # fmt: skip
    got = gen("a blue square <lora:xl:0.8>", guidance_scale=5.0, **CALL)
    expected = _plain(
        tiny_sdxl_path, "a blue square ", [(load_file(str(path)), "xl", 0.8)], xl=True
    )
    np.testing.assert_array_equal(_pixels(got), expected)
    assert got.image.recipe.addons[0].sha256 == inspect_lora(path).sha256


def test_tags_read_as_a1111_reads_them() -> None:
    # A1111 extensions-builtin/Lora/extra_networks_lora.py: positional[1] is te, positional[2]
    # unet (defaults to te); te= / unet= by name; modules/extra_networks.py removes the tag.
    assert extract_lora_tags("x <lora:a:0.3:0.7>") == ("x ", [("a", 0.3, 0.7)])
    assert extract_lora_tags("<lora:a>y") == ("y", [("a", 1.0, 1.0)])
    assert extract_lora_tags("<lora:a:unet=0.2:te=0.6>") == ("", [("a", 0.6, 0.2)])
    assert extract_lora_tags("<lyco:b:0.5> <hypernet:c:1>") == (
        " <hypernet:c:1>",
        [("b", 0.5, 0.5)],
    )
