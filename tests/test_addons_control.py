"""ControlNet: parity with diffusers' ControlNet pipelines, Canny, records, typed errors.

Tiny ControlNets are built from the tiny UNets' configs (``ControlNetModel.from_unet``) with
random (non-zero) zero-convolutions, so that they change the pixels, and saved as diffusers
folders; the oracle is plain diffusers' ``StableDiffusion[XL]ControlNet{,Img2Img,Inpaint}
Pipeline`` loaded from the same folders, called with the same seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import diffusers
import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from PIL import Image

from sdkit import Generator, InvalidOptionError, ModelLoadError
from sdkit.addons.control import CANNY_THRESHOLDS, ControlSpec, canny


def build_controlnet(model: Path, out: Path, seed: int) -> Path:
    """A ControlNet for the UNet in ``model`` with random zero-convolutions, saved to ``out``."""
    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16, 32))
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")) or (
                "conv_out" in name
            ):
                param.normal_(0.0, 0.3)
    net.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def sd(tiny_sd_path: Path) -> Generator:
    return Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False)


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_path: Path) -> Generator:
    return Generator.from_pretrained(tiny_sdxl_path, device="cpu", progress=False)


@pytest.fixture(scope="module")
def nets(
    tiny_sd_path: Path, tiny_sdxl_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("controlnets")
    return {
        "sd": build_controlnet(tiny_sd_path, root / "cn-sd", 1),
        "sd2": build_controlnet(tiny_sd_path, root / "cn-sd-b", 2),
        "sdxl": build_controlnet(tiny_sdxl_path, root / "cn-sdxl", 3),
    }


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[16:48, 16:48] = rng.integers(0, 255, 3)
    pixels[rng.random((64, 64)) < 0.05] = 255
    return Image.fromarray(pixels)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


INIT = Image.new("RGB", (64, 64), (40, 160, 90))
MASK = Image.new("L", (64, 64), 0)
MASK.paste(255, (0, 0, 32, 64))


@pytest.mark.parametrize("family", ["sd", "sdxl"])
@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_pixels_equal_diffusers_controlnet_pipelines(
    request: pytest.FixtureRequest, nets: dict[str, Path], family: str, mode: str
) -> None:
    gen: Generator = request.getfixturevalue(family)
    model: Path = request.getfixturevalue(f"tiny_{family}_path")
    control = _picture(5)
    xl = "XL" if family == "sdxl" else ""
    suffix = {"txt2img": "", "img2img": "Img2Img", "inpaint": "Inpaint"}[mode]
    cls = getattr(diffusers, f"StableDiffusion{xl}ControlNet{suffix}Pipeline")
    pipe = cls.from_pretrained(model, controlnet=ControlNetModel.from_pretrained(nets[family]))
    pipe.set_progress_bar_config(disable=True)
    args: dict[str, Any] = dict(num_inference_steps=2, guidance_scale=6.0, height=64, width=64)
    options: dict[str, Any] = {}
    if mode == "txt2img":
        args["image"] = control
    else:
        args.update(image=INIT, control_image=control, strength=1.0 if mode == "inpaint" else 0.5)
        options.update(init_image=INIT, strength=args["strength"])
    if mode == "inpaint":
        args["mask_image"] = MASK
        options["mask"] = MASK
    args.update(controlnet_conditioning_scale=0.8, control_guidance_start=0.0,
                control_guidance_end=1.0)  # fmt: skip
    expected = pipe("a red cube", generator=torch.Generator("cpu").manual_seed(11), **args)
    got = gen("a red cube", steps=2, guidance_scale=6.0, seed=11,
              control=[ControlSpec(nets[family], control, 0.8, 0.0, 1.0)], **options)  # fmt: skip
    want = _pixels(expected.images[0])
    assert want.std() > 0
    np.testing.assert_array_equal(_pixels(got.image.image), want)
    # the ControlNet changes the picture: the same call without it differs
    plain = gen("a red cube", steps=2, guidance_scale=6.0, seed=11, **options)
    assert not np.array_equal(_pixels(plain.image.image), want)


def test_two_controlnets_equal_multicontrolnet(
    sd: Generator, tiny_sd_path: Path, nets: dict[str, Path]
) -> None:
    first, second = _picture(1), _picture(2)
    multi = [
        ControlNetModel.from_pretrained(nets["sd"]),
        ControlNetModel.from_pretrained(nets["sd2"]),
    ]
    pipe = diffusers.StableDiffusionControlNetPipeline.from_pretrained(
        tiny_sd_path, controlnet=multi
    )
    pipe.set_progress_bar_config(disable=True)
    expected = pipe("a cat", image=[first, second], controlnet_conditioning_scale=[1.0, 0.5],
                    control_guidance_start=[0.0, 0.5], control_guidance_end=[1.0, 1.0],
                    num_inference_steps=2, guidance_scale=7.0,
                    generator=torch.Generator("cpu").manual_seed(3))  # fmt: skip
    got = sd("a cat", steps=2, guidance_scale=7.0, seed=3,
             control=[(nets["sd"], first), ControlSpec(nets["sd2"], second, 0.5, start=0.5)])  # fmt: skip
    np.testing.assert_array_equal(_pixels(got.image.image), _pixels(expected.images[0]))


def test_canny_is_opencv_canny_with_a1111_thresholds(
    sd: Generator, tiny_sd_path: Path, nets: dict[str, Path], tmp_path: Path
) -> None:
    photo = _picture(9)
    edges = cv2.Canny(np.asarray(photo), 100, 200)
    assert CANNY_THRESHOLDS == (100, 200) and edges.any()
    np.testing.assert_array_equal(_pixels(canny(photo)), np.stack([edges] * 3, axis=-1))
    # a call with preprocessor="canny" is the call with the edge map passed as is
    path = tmp_path / "photo.png"
    photo.save(path)
    edge_map = Image.fromarray(np.stack([edges] * 3, axis=-1))
    a = sd("x", steps=2, seed=4, control=[ControlSpec(nets["sd"], path, preprocessor="canny")])
    b = sd("x", steps=2, seed=4, control=[(nets["sd"], edge_map, 1.0)])
    np.testing.assert_array_equal(_pixels(a.image.image), _pixels(b.image.image))


def test_records_name_each_controlnet_and_image(
    sd: Generator, nets: dict[str, Path], tmp_path: Path
) -> None:
    import hashlib

    path = tmp_path / "control.png"
    _picture(3).save(path)
    spec = ControlSpec(nets["sd"], path, 0.7, 0.1, 0.9, "canny")
    call = sd.addons.prepare(
        "txt2img", sd.pipe.unet, _Options(control=[spec, (nets["sd2"], _picture(4))])
    )
    kinds = [(r.kind, r.settings.get("index")) for r in call.records]
    assert kinds == [
        ("controlnet", 0),
        ("control_image", 0),
        ("controlnet", 1),
        ("control_image", 1),
    ]
    net, image = call.records[0], call.records[1]
    weights = nets["sd"] / "diffusion_pytorch_model.safetensors"
    assert net.name == "cn-sd" and net.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert dict(net.settings) == {"index": 0, "scale": 0.7, "start": 0.1, "end": 0.9,
                                  "preprocessor": "canny"}  # fmt: skip
    assert image.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert image.source == str(path)
    assert len(call.records[3].sha256) == 64 and call.records[3].source == ""
    # through a whole call: the Recipe lists them, its infotext says A1111's ControlNet field
    made = sd("x", steps=1, seed=0, control=[spec])
    assert [r.kind for r in made.image.recipe.addons] == ["controlnet", "control_image"]
    text = made.image.recipe.to_infotext()
    assert f"Model: cn-sd [{net.sha256[:8]}], Weight: 0.7" in text
    # loaded once: the second call reuses the model
    again = sd.addons.prepare("txt2img", sd.pipe.unet, _Options(control=[spec]))
    assert again.control is not None and call.control is not None
    assert again.control.nets[0] is call.control.nets[0]


class _Options:
    def __init__(self, **values: Any) -> None:
        self.control = values.get("control")
        self.hires_scale = self.hires_upscaler = self.hires_steps = None
        self.hires_strength = self.refiner_switch = None


def test_typed_errors_before_any_work(
    sd: Generator, sdxl: Generator, nets: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ModelLoadError) as wrong:
        sd("x", steps=2, control=[(nets["sdxl"], _picture(1))])
    # the tiny models' text width is 32: a family is named by it where it is not 768 / 1024
    assert "'cn-sdxl' is for SDXL; this model is SD (cross-attention width 32)" in str(wrong.value)
    with pytest.raises(ModelLoadError) as wrong_xl:
        sdxl("x", steps=2, control=[(nets["sd"], _picture(1))])
    assert "is for SD (cross-attention width 32); this model is SDXL" in str(wrong_xl.value)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(InvalidOptionError) as unreadable:
        sd("x", steps=2, control=[(nets["sd"], broken)])
    assert unreadable.value.option == "control image 0"
    with pytest.raises(InvalidOptionError) as missing:
        sd("x", steps=2, control=[(nets["sd"], tmp_path / "nowhere.png")])
    assert missing.value.option == "control image 0"
    for bad, option in [
        ([(nets["sd"], _picture(1), 2.5)], "control scale"),
        ([(nets["sd"], _picture(1), -0.1)], "control scale"),
        ([(nets["sd"], _picture(1), "1")], "control scale"),
        ([ControlSpec(nets["sd"], _picture(1), start=0.6, end=0.4)], "control end"),
        ([ControlSpec(nets["sd"], _picture(1), preprocessor="depth")], "control preprocessor"),  # type: ignore[arg-type]
        (["model.safetensors"], "control"),
    ]:
        with pytest.raises(InvalidOptionError) as info:
            sd("x", steps=2, control=bad)  # type: ignore[arg-type]
        assert info.value.option == option
    not_a_net = tmp_path / "empty"
    not_a_net.mkdir()
    with pytest.raises(ModelLoadError, match="not a diffusers ControlNetModel folder"):
        sd("x", steps=2, control=[(not_a_net, _picture(1))])
    from safetensors.torch import save_file

    junk = tmp_path / "junk.safetensors"
    save_file({"weight": torch.zeros(2)}, junk)
    with pytest.raises(ModelLoadError, match=r"could not load .* as a ControlNetModel"):
        sd("x", steps=2, control=[(junk, _picture(1))])


def test_family_names_follow_the_text_width() -> None:
    from types import SimpleNamespace

    from sdkit.addons.control import control_family

    assert control_family(SimpleNamespace(cross_attention_dim=768)) == "SD 1.x"
    assert control_family(SimpleNamespace(cross_attention_dim=1024)) == "SD 2.x"
    xl = SimpleNamespace(cross_attention_dim=2048, addition_embed_type="text_time")
    assert control_family(xl) == "SDXL"


def test_cli_control_flags(tiny_sd_path: Path, nets: dict[str, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sdkit.cli import cli

    control = tmp_path / "edges.png"
    _picture(6).save(control)
    out = tmp_path / "out.png"
    base = ["generate", "a house", "--model", str(tiny_sd_path), "--steps", "2", "--seed", "3",
            "-q", "--json"]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(cli, [*base, "-o", str(out), "--control", str(nets["sd"]),
                                 f"{control}:0.5", "--control-preprocessor", "canny"])  # fmt: skip
    assert result.exit_code == 0, result.output
    gen = Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False)
    same = gen("a house", steps=2, seed=3,
               control=[ControlSpec(nets["sd"], control, 0.5, preprocessor="canny")])  # fmt: skip
    with Image.open(out) as written:
        # the file is watermarked when large enough; 64 px pictures are not
        np.testing.assert_array_equal(_pixels(written), _pixels(same.image.image))
    bad = runner.invoke(cli, [*base, "-o", str(tmp_path / "b.png"), "--control",
                              str(nets["sd"]), f"{control}:3"])  # fmt: skip
    assert bad.exit_code == 2 and "control scale" in bad.output and "Traceback" not in bad.output
    wrong = runner.invoke(cli, [*base, "-o", str(tmp_path / "c.png"), "--control",
                                str(nets["sdxl"]), str(control)])  # fmt: skip
    assert wrong.exit_code == 6 and "is for SDXL" in wrong.output


def test_manifest_lists_the_controlnet_and_its_image(
    sd: Generator, nets: dict[str, Path], tmp_path: Path
) -> None:
    import hashlib

    from provenance.manifest import read_manifest

    control = tmp_path / "control.png"
    _picture(8).save(control)
    image = sd("a bridge", steps=1, seed=2, control=[(nets["sd"], control, 0.6)]).image
    path = image.save(tmp_path / "bridge.png")
    reading = read_manifest(path.read_bytes(), "image/png")
    assert reading.state == "valid" and reading.active is not None
    found = sorted(
        (i["relationship"], i["metadata"]["org.sdkit.kind"], i["metadata"]["org.sdkit.sha256"])
        for i in reading.active["ingredients"]
    )
    weights = nets["sd"] / "diffusion_pytorch_model.safetensors"
    assert found == sorted([
        ("componentOf", "controlnet", hashlib.sha256(weights.read_bytes()).hexdigest()),
        ("componentOf", "control_image", hashlib.sha256(control.read_bytes()).hexdigest()),
    ])  # fmt: skip
