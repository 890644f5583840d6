"""Single-file (LDM / A1111) checkpoints: export, detection, offline loading, shipped configs."""

from __future__ import annotations

import json
import os
import socket
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from ldm_export import export_ldm_checkpoint
from safetensors.torch import load_file, save_file
from tiny_models import SDXL_SCHEDULER, _text_config, _vae
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from sdkit._clip_vocab import clip_tokenizer
from sdkit._single_file import (
    FAMILIES,
    config_dir,
    detect_family,
    load_single_file,
    read_checkpoint_header,
    read_checkpoint_metadata,
)
from sdkit.errors import (
    InvalidOptionError,
    ModelLoadError,
    ModelNotFoundError,
    UnsafeCheckpointError,
)

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def unplugged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """Hub libraries in *online* mode, but every socket refuses: any network use is recorded."""
    import diffusers.utils.hub_utils
    import huggingface_hub.constants

    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args[:3]))
        raise OSError("network access attempted during an offline load")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # Offline mode would stop the hub clients before they touch a socket; turn it off so that
    # the socket guard, not the environment, proves that nothing is fetched.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(diffusers.utils.hub_utils, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("SDKIT_CACHE", str(tmp_path / "cache"))
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


@pytest.fixture(scope="module")
def exported(
    tiny_sd_path: Path, tiny_sdxl_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Path, Any]]:
    """``{name: (diffusers folder, LDM checkpoint, folder pipeline)}`` for tiny SD and SDXL."""
    out = tmp_path_factory.mktemp("ldm")
    found = {}
    for name, folder, cls in (
        ("sd", tiny_sd_path, StableDiffusionPipeline),
        ("sdxl", tiny_sdxl_path, StableDiffusionXLPipeline),
    ):
        pipe = cls.from_pretrained(folder)
        found[name] = (folder, export_ldm_checkpoint(pipe, out / f"{name}.safetensors"), pipe)
    return found


def _assert_same_weights(a: Any, b: Any) -> None:
    for name in COMPONENTS:
        left, right = getattr(a, name, None), getattr(b, name, None)
        assert (left is None) == (right is None), name
        if left is None:
            continue
        sa, sb = left.state_dict(), right.state_dict()
        assert sa.keys() == sb.keys(), name
        bad = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert bad == [], f"{name}: {bad[:5]}"


def _generate(pipe: Any) -> np.ndarray:
    out = pipe(
        "a red circle",
        num_inference_steps=3,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return np.asarray(out.images)


# -- (a) + (b): round trip through the LDM layout, offline ----------------------------------------


@pytest.mark.parametrize("name", ["sd", "sdxl"])
def test_round_trip_weights_and_pixels(
    name: str, exported: dict[str, tuple[Path, Path, Any]], unplugged: list[str]
) -> None:
    folder, ckpt, reference = exported[name]
    pipe = load_single_file(ckpt, config=folder)
    assert type(pipe) is type(reference)
    assert dict(pipe.scheduler.config) == dict(reference.scheduler.config)
    _assert_same_weights(reference, pipe)
    # Bitwise-equal weights can still differ in the last float32 bit of a matmul: the folder
    # pipeline's tensors sit unaligned in the mmap-ed file, which picks another CPU kernel.
    np.testing.assert_allclose(_generate(pipe), _generate(reference), rtol=0, atol=1e-5)


def _tiny_unet(**kw: Any) -> UNet2DConditionModel:
    base: dict[str, Any] = dict(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, norm_num_groups=32
    )
    return UNet2DConditionModel(**(base | kw))


def _build_sd2(folder: Path) -> Any:
    unet = _tiny_unet(
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True,
        upcast_attention=True,
    )  # fmt: skip
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        clip_sample=False, set_alpha_to_one=False, prediction_type="v_prediction",
    )  # fmt: skip
    return StableDiffusionPipeline(
        unet=unet, vae=_vae(), text_encoder=CLIPTextModel(_text_config(act="gelu")),
        tokenizer=clip_tokenizer(folder / "_tok", pad_token="!"), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def _xl_unet(context: int, pooled: int, n_time_ids: int) -> UNet2DConditionModel:
    return _tiny_unet(
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=n_time_ids * 8 + pooled,
        cross_attention_dim=context,
    )  # fmt: skip


def _build_sdxl_wide(folder: Path) -> Any:
    # Unlike the tiny SDXL fixture, the two text towers differ in width (32 and 48), as in the
    # real model (768 and 1280): diffusers routes each tower by itself, no help from sdkit.
    return StableDiffusionXLPipeline(
        unet=_xl_unet(32 + 48, 48, 6), vae=_vae(),
        text_encoder=CLIPTextModel(_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(48, act="gelu")),
        tokenizer=clip_tokenizer(folder / "_tok"),
        tokenizer_2=clip_tokenizer(folder / "_tok2", pad_token="!"),
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
    )  # fmt: skip


def _build_refiner(folder: Path) -> Any:
    return StableDiffusionXLImg2ImgPipeline(
        unet=_xl_unet(32, 32, 5), vae=_vae(), text_encoder=None,
        text_encoder_2=CLIPTextModelWithProjection(_text_config(act="gelu")), tokenizer=None,
        tokenizer_2=clip_tokenizer(folder / "_tok2", pad_token="!"),
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("build", "layout_key"),
    [
        (_build_sd2, "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"),
        (_build_sdxl_wide, "conditioner.embedders.1.model.text_projection"),
        (_build_refiner, "conditioner.embedders.0.model.text_projection"),
    ],
    ids=["sd2-openclip", "sdxl-distinct-widths", "sdxl-refiner"],
)
def test_round_trip_other_layouts(
    build: Any, layout_key: str, tmp_path: Path, unplugged: list[str]
) -> None:
    torch.manual_seed(0)
    pipe = build(tmp_path)
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder, safe_serialization=True)
    ckpt = export_ldm_checkpoint(pipe, tmp_path / "model.safetensors")
    assert layout_key in read_checkpoint_header(ckpt)
    loaded = load_single_file(ckpt, config=folder)
    assert type(loaded) is type(pipe)
    _assert_same_weights(pipe, loaded)


def test_openclip_text_projection_is_stored_transposed(
    tiny_sdxl_path: Path, tmp_path: Path
) -> None:
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path)
    ckpt = load_file(str(export_ldm_checkpoint(pipe, tmp_path / "m.safetensors")))
    weight = pipe.text_encoder_2.text_projection.weight  # Linear: [projection, width]
    torch.testing.assert_close(ckpt["conditioner.embedders.1.model.text_projection"], weight.T)


# -- prediction type and scheduler -------------------------------------------------------------


def test_prediction_type_override_and_v_pred_key(
    exported: dict[str, tuple[Path, Path, Any]], tmp_path: Path, unplugged: list[str]
) -> None:
    folder, ckpt, reference = exported["sd"]
    assert load_single_file(ckpt, config=folder).scheduler.config.prediction_type == "epsilon"
    forced = load_single_file(ckpt, config=folder, prediction_type="v_prediction")
    assert forced.scheduler.config.prediction_type == "v_prediction"
    assert forced.scheduler.config.beta_end == reference.scheduler.config.beta_end
    marked = export_ldm_checkpoint(
        reference, tmp_path / "v.safetensors", extra={"v_pred": torch.zeros(0)}
    )
    assert (
        load_single_file(marked, config=folder).scheduler.config.prediction_type == "v_prediction"
    )
    with pytest.raises(InvalidOptionError):
        load_single_file(ckpt, config=folder, prediction_type="sample")


def test_ztsnr_key_turns_on_zero_terminal_snr(
    exported: dict[str, tuple[Path, Path, Any]], tmp_path: Path
) -> None:
    folder, _, reference = exported["sdxl"]
    extra = {"v_pred": torch.zeros(0), "ztsnr": torch.zeros(0)}
    ckpt = export_ldm_checkpoint(reference, tmp_path / "z.safetensors", extra=extra)
    config = load_single_file(ckpt, config=folder).scheduler.config
    assert config.prediction_type == "v_prediction"
    assert config.rescale_betas_zero_snr is True
    assert config.timestep_spacing == "trailing"


def test_pipeline_class_override(exported: dict[str, tuple[Path, Path, Any]]) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    folder, ckpt, _ = exported["sd"]
    pipe = load_single_file(ckpt, config=folder, pipeline_class="StableDiffusionImg2ImgPipeline")
    assert isinstance(pipe, StableDiffusionImg2ImgPipeline)
    with pytest.raises(ModelLoadError, match="not a diffusers pipeline"):
        load_single_file(ckpt, config=folder, pipeline_class="NoSuchPipeline")


# -- (c) family detection on synthetic headers ---------------------------------------------------

_U = "model.diffusion_model."
_CLIP_L = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
_OPENCLIP_H = "cond_stage_model.model.token_embedding.weight"
_XL_L = "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"
_XL_G = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
_REFINER_G = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"


def _synthetic(path: Path, *, context: int, channels: int, text: tuple[str, ...],
               label_emb: bool = False, attn_block: int = 2, extra: tuple[str, ...] = (),
               metadata: dict[str, str] | None = None) -> Path:  # fmt: skip
    """Write a safetensors file holding only the tensors that tell the families apart."""
    tensors = {
        f"{_U}input_blocks.0.0.weight": torch.zeros(1, channels, 1, 1),
        f"{_U}input_blocks.{attn_block}.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(
            1, context
        ),
        **{key: torch.zeros(1) for key in (*text, *extra)},
    }
    if label_emb:
        tensors[f"{_U}label_emb.0.0.weight"] = torch.zeros(1)
    save_file(tensors, str(path), metadata=metadata)
    return path


_CASES: dict[str, dict[str, Any]] = {
    "sd1": dict(context=768, channels=4, text=(_CLIP_L,)),
    "sd1_inpaint": dict(context=768, channels=9, text=(_CLIP_L,)),
    "sd2": dict(context=1024, channels=4, text=(_OPENCLIP_H,)),
    "sdxl": dict(context=2048, channels=4, text=(_XL_L, _XL_G), label_emb=True, attn_block=4),
    "sdxl_inpaint": dict(context=2048, channels=9, text=(_XL_L, _XL_G), label_emb=True,
                         attn_block=4),
    "sdxl_refiner": dict(context=1280, channels=4, text=(_REFINER_G,), label_emb=True,
                         attn_block=4),
}  # fmt: skip
# What diffusers' own key-based guess (infer_diffusers_model_type) calls the same files.
_DIFFUSERS_NAMES = {"sd1": "v1", "sd1_inpaint": "inpainting", "sd2": "v2", "sdxl": "xl_base",
                    "sdxl_inpaint": "xl_inpaint", "sdxl_refiner": "xl_refiner"}  # fmt: skip


@pytest.mark.parametrize("family", sorted(_CASES))
def test_detect_family(family: str, tmp_path: Path) -> None:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    path = _synthetic(tmp_path / "m.safetensors", **_CASES[family])
    assert detect_family(read_checkpoint_header(path)) == family
    assert infer_diffusers_model_type(load_file(str(path))) == _DIFFUSERS_NAMES[family]


@pytest.mark.parametrize(
    ("extra", "metadata", "expected"),
    [
        ((), {"modelspec.architecture": "stable-diffusion-v2-512"}, "sd2_base"),
        ((), {"modelspec.prediction_type": "epsilon"}, "sd2_base"),
        ((), {"modelspec.architecture": "stable-diffusion-v2-768-v"}, "sd2"),
        (("v_pred",), {}, "sd2"),
    ],
)
def test_detect_sd2_variant(
    extra: tuple[str, ...], metadata: dict[str, str], expected: str, tmp_path: Path
) -> None:
    path = _synthetic(tmp_path / "m.safetensors", **_CASES["sd2"], extra=extra, metadata=metadata)
    assert read_checkpoint_metadata(path) == metadata
    assert detect_family(read_checkpoint_header(path), read_checkpoint_metadata(path)) == expected


@pytest.mark.parametrize(
    ("case", "match"),
    [
        (dict(context=1024, channels=9, text=(_OPENCLIP_H,)), "input channels"),
        (dict(context=2048, channels=4, text=(), label_emb=True), "no text encoder"),
        (dict(context=4096, channels=4, text=(_CLIP_L,)), "context width 4096"),
    ],
    ids=["sd2-inpainting", "unet-only", "unknown-width"],
)
def test_detect_family_refuses(case: dict[str, Any], match: str, tmp_path: Path) -> None:
    path = _synthetic(tmp_path / "m.safetensors", **case)
    with pytest.raises(ModelLoadError, match=match) as info:
        detect_family(read_checkpoint_header(path))
    assert info.value.hint


def test_header_matches_safetensors(exported: dict[str, tuple[Path, Path, Any]]) -> None:
    from safetensors import safe_open

    _, ckpt, _ = exported["sdxl"]
    header = read_checkpoint_header(ckpt)
    with safe_open(str(ckpt), framework="pt") as f:
        assert sorted(header) == sorted(f.keys())
        key = "model.diffusion_model.input_blocks.0.0.weight"
        assert header[key] == ("F32", list(f.get_slice(key).get_shape()))


# -- (d) the shipped config folders ------------------------------------------------------------

# Parameter counts of the public models (diffusers docs quote 859,520,964 for the SD 1.5 UNet);
# the README in sdkit/configs lists where each was checked.
_PARAMS = {
    "sd1": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd1_inpaint": {"unet": 859_535_364, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd2": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sd2_base": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
             "text_encoder_2": 694_659_840},
    "sdxl_inpaint": {"unet": 2_567_478_084, "vae": 83_653_863, "text_encoder": 123_060_480,
                     "text_encoder_2": 694_659_840},
    "sdxl_refiner": {"unet": 2_259_526_660, "vae": 83_653_863, "text_encoder_2": 694_659_840},
}  # fmt: skip


def _shipped(family: str) -> Path:
    return Path(__file__).parents[1] / "sdkit" / "configs" / FAMILIES[family].config_folder


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_shipped_config_parameter_counts(family: str) -> None:
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    folder = _shipped(family)
    index = json.loads((folder / "model_index.json").read_text())
    counts = {}
    for name in COMPONENTS:
        if index.get(name, [None])[0] is None:
            continue
        library, cls_name = index[name]
        with init_empty_weights():
            if library == "diffusers":
                cls = getattr(diffusers, cls_name)
                model = cls.from_config(cls.load_config(folder / name))
            else:
                cls = getattr(transformers, cls_name)
                model = cls(cls.config_class.from_pretrained(folder / name))
        counts[name] = sum(p.numel() for p in model.parameters())
    assert counts == _PARAMS[family]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_shipped_config_matches_family(family: str) -> None:
    info = FAMILIES[family]
    folder = _shipped(family)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == info.pipeline_class
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler.get("prediction_type", "epsilon") == info.prediction_type
    assert scheduler["_class_name"] == index["scheduler"][1]
    tokenizers = [k for k in ("tokenizer", "tokenizer_2") if index.get(k, [None])[0]]
    assert tokenizers == [sub for sub, _ in info.tokenizers]
    assert not any(p.name.startswith(("vocab", "merges")) for p in folder.rglob("*"))
    vae = json.loads((folder / "vae" / "config.json").read_text())
    unet = json.loads((folder / "unet" / "config.json").read_text())
    assert unet["in_channels"] == (9 if family.endswith("inpaint") else 4)
    assert unet["sample_size"] * 8 == info.native_size
    if family.startswith("sdxl"):
        assert (vae["scaling_factor"], vae["force_upcast"]) == (0.13025, True)
    else:
        assert index["safety_checker"] == [None, None]
        assert index["feature_extractor"] == [None, None]
        assert index["requires_safety_checker"] is False
        assert vae.get("scaling_factor", 0.18215) == 0.18215


# -- (e) materialising a config folder offline -----------------------------------------------------


@pytest.mark.parametrize(("family", "pad_id"), [("sd1", 49407), ("sd2", 0), ("sdxl", 49407)])
def test_config_dir_offline_tokenizer(family: str, pad_id: int, unplugged: list[str]) -> None:
    from transformers import CLIPTokenizer

    folder = config_dir(family)
    assert folder.is_relative_to(Path(os.environ["SDKIT_CACHE"]))
    assert (folder / "model_index.json").is_file()
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    ids = tokenizer("a red circle", padding="max_length").input_ids
    assert ids[:5] == [49406, 320, 736, 7117, 49407]
    assert len(ids) == 77 and ids[5] == pad_id
    if family == "sdxl":
        tok2 = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2")
        assert tok2("a red circle", padding="max_length").input_ids[:6] == [
            49406, 320, 736, 7117, 49407, 0,
        ]  # fmt: skip


def test_config_dir_is_atomic_and_reused(unplugged: list[str]) -> None:
    found: list[Path] = []
    threads = [threading.Thread(target=lambda: found.append(config_dir("sd1"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1 and len(found) == 4
    root = found[0].parent
    assert [p.name for p in root.iterdir()] == [found[0].name]  # no temporary folders left
    assert config_dir("sd1") == found[0]
    with pytest.raises(InvalidOptionError):
        config_dir("sd3")


# -- (f) refusals ------------------------------------------------------------------------------


def test_pickle_needs_allow_pickle(
    exported: dict[str, tuple[Path, Path, Any]], tmp_path: Path
) -> None:
    folder, ckpt, reference = exported["sd"]
    pickled = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(ckpt))}, pickled)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_single_file(pickled, config=folder)
    assert info.value.source == str(pickled) and "allow_pickle" in (info.value.hint or "")
    _assert_same_weights(reference, load_single_file(pickled, config=folder, allow_pickle=True))


def test_unrecognised_and_broken_files(
    exported: dict[str, tuple[Path, Path, Any]], tmp_path: Path
) -> None:
    _, ckpt, _ = exported["sd"]
    with pytest.raises(ModelLoadError, match="unrecognised") as info:
        load_single_file(ckpt)  # tiny widths: no family fits, and no config was given
    assert info.value.source == str(ckpt) and "family=" in (info.value.hint or "")
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0.alpha": torch.zeros(1)}, str(lora))
    with pytest.raises(ModelLoadError, match="no Stable Diffusion UNet"):
        load_single_file(lora)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="not a readable"):
        read_checkpoint_header(junk)
    with pytest.raises(ModelNotFoundError):
        load_single_file(tmp_path / "missing.safetensors")
    with pytest.raises(ModelLoadError, match=r"model_index\.json"):
        load_single_file(ckpt, config=tmp_path)
    with pytest.raises(InvalidOptionError):
        load_single_file(ckpt, family="sd3")


def test_checkpoint_that_does_not_fit_the_config(
    exported: dict[str, tuple[Path, Path, Any]],
) -> None:
    sdxl_folder = exported["sdxl"][0]
    _, sd_ckpt, _ = exported["sd"]
    with pytest.raises(ModelLoadError) as info:
        load_single_file(sd_ckpt, config=sdxl_folder)
    assert info.value.source == str(sd_ckpt)


# -- optional: a full-size SD 1.5 checkpoint through the shipped config -------------------------


@pytest.mark.slow
def test_full_size_sd1_offline(tmp_path: Path, unplugged: list[str]) -> None:
    """A zero-filled SD 1.5-shaped checkpoint loads with detection and the shipped config."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig

    folder = config_dir("sd1")
    with init_empty_weights():
        models = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
        }  # fmt: skip

    class Zeros:
        def __init__(self, model: Any) -> None:
            self.model, self.config = model, model.config

        def state_dict(self) -> dict[str, torch.Tensor]:
            return {k: torch.zeros(v.shape, dtype=torch.float16)
                    for k, v in self.model.state_dict().items()}  # fmt: skip

    fake = types.SimpleNamespace(**{k: Zeros(m) for k, m in models.items()})
    ckpt = export_ldm_checkpoint(fake, tmp_path / "sd15.safetensors")  # 2.1 GB
    try:
        assert detect_family(read_checkpoint_header(ckpt)) == "sd1"
        pipe = load_single_file(ckpt, torch_dtype=torch.float16)
    finally:
        ckpt.unlink()
    assert isinstance(pipe, StableDiffusionPipeline)
    for name, expected in _PARAMS["sd1"].items():
        assert sum(p.numel() for p in getattr(pipe, name).parameters()) == expected
    assert pipe.tokenizer("a red circle").input_ids == [49406, 320, 736, 7117, 49407]
    assert pipe.scheduler.config.prediction_type == "epsilon"


def test_unplugged_fixture_sees_hub_calls(unplugged: list[str]) -> None:
    """The guard is live: the hub client's HTTP session, online, reaches a socket and is caught."""
    from huggingface_hub import get_session

    with pytest.raises(Exception):  # noqa: B017 - whatever the HTTP client makes of the refusal
        get_session().head("https://huggingface.co/api/models/stabilityai/stable-diffusion-2-1")
    assert unplugged, "the socket guard did not see the request"
    unplugged.clear()


def test_module_docstring_example() -> None:
    import doctest

    import sdkit._single_file

    assert doctest.testmod(sdkit._single_file).failed == 0


def test_generator_from_single_file_offline(
    exported: dict[str, tuple[Path, Path, Any]], unplugged: list[str]
) -> None:
    """The public loader: same pixels as the folder, Recipe names the file and its SHA-256."""
    import hashlib

    from sdkit import Generator

    folder, ckpt, _ = exported["sd"]
    from_file = Generator.from_single_file(ckpt, config=folder, device="cpu", progress=False)
    from_folder = Generator.from_pretrained(folder, device="cpu", progress=False)
    a = from_file("a red circle", sampler="Euler", steps=3, seed=4).image
    b = from_folder("a red circle", sampler="Euler", steps=3, seed=4).image
    diff = np.abs(np.asarray(a.image).astype(int) - np.asarray(b.image).astype(int))
    assert diff.max() <= 1  # same weights; only float rounding of mmapped tensors differs
    assert a.recipe.model_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert a.recipe.model == str(ckpt)
