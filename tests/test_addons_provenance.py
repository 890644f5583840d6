"""Add-ons in the provenance: Recipe records, componentOf ingredients, A1111 fields, replay.

A1111's hashes, written out from its source (AUTOMATIC1111/stable-diffusion-webui):
``modules/hashes.py`` ``addnet_hash_safetensors`` (SHA-256 of the bytes after the 8-byte
length and the JSON header), ``extensions-builtin/Lora/network.py`` ``set_hash``
(``shorthash = hash[0:12]``), ``extensions-builtin/Lora/extra_networks_lora.py`` (``Lora hashes:
"name: shorthash, …"``, ``:`` and ``,`` removed from names), textual inversion
(``shorthash = sha256(file)[0:12]``, ``TI hashes``), ``modules/sd_vae.py`` (VAE: 10 digits).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from addon_files import make_lora, save_kohya
from PIL import Image
from safetensors.torch import save_file

from provenance import infotext
from provenance.manifest import read_manifest
from sdkit import Generator, Recipe, RecipeParseError, ReplayError
from sdkit.addons import AddonRecord

SHA = "ab" * 32


@pytest.fixture(scope="module")
def files(tiny_sd_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("addons")
    (root / "loras").mkdir()
    (root / "emb").mkdir()
    out = {
        "film": save_kohya(make_lora(tiny_sd_path, 1), root / "loras" / "film.safetensors", xl=False),
        "ink": save_kohya(make_lora(tiny_sd_path, 2, text=False), root / "loras" / "ink.safetensors", xl=False),
        "easyneg": root / "emb" / "easyneg.safetensors",
    }  # fmt: skip
    torch.manual_seed(3)
    save_file({"emb_params": torch.randn(2, 32)}, str(out["easyneg"]))
    return out


def _addnet(path: Path) -> str:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + length :]).hexdigest()


def _recipe(**changes: Any) -> Recipe:
    base: dict[str, Any] = dict(prompt="p", model="m", model_sha256="0" * 64, pipeline="P",
                                scheduler="S", steps=2, guidance_scale=7.0, seed=1, width=64,
                                height=64)  # fmt: skip
    return Recipe(**{**base, **changes})


def test_records_round_trip_and_recipes_without_addons_keep_their_json() -> None:
    records = (
        AddonRecord(
            "lora", "film", SHA, "film.safetensors", {"unet": 0.5, "te": 1.0}, "0123456789ab"
        ),
        AddonRecord("embedding", "easyneg", "cd" * 32, settings={"vectors": 2}),
        AddonRecord("vae", "sdxl_vae.safetensors", "ef" * 32),
        AddonRecord(
            "controlnet",
            "canny",
            "12" * 32,
            settings={"index": 0, "scale": 0.8, "start": 0.0, "end": 1.0, "preprocessor": "canny"},
        ),
        AddonRecord("refiner", "refiner-1.0", "34" * 32, settings={"switch": 0.8}),
    )
    recipe = _recipe(addons=records)
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert Recipe.from_infotext(recipe.to_infotext()) == recipe
    assert "addons" not in _recipe().to_dict()
    params = infotext.parse_infotext(recipe.to_infotext()).parameters
    assert params["Lora hashes"] == "film: 0123456789ab"
    assert params["TI hashes"] == "easyneg: " + "cd" * 6
    assert (params["VAE hash"], params["VAE"]) == ("ef" * 5, "sdxl_vae.safetensors")
    assert params["ControlNet 0"] == (
        "Module: canny, Model: canny [12121212], Weight: 0.8, Guidance Start: 0.0, Guidance End: 1.0"
    )
    assert (params["Refiner"], params["Refiner switch at"]) == (
        "refiner-1.0 [" + "34" * 5 + "]",
        "0.8",
    )
    hires = infotext.addon_fields(
        [], {"scale": 2.0, "upscaler": "Latent", "steps": 10, "strength": 0.7}
    )
    assert hires == [("Hires upscale", "2.0"), ("Hires steps", "10"), ("Hires upscaler", "Latent"),
                     ("Denoising strength", "0.7")]  # fmt: skip


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"kind": "macro", "name": "x", "sha256": SHA}, "addons[0].kind"),
        ({"kind": "lora", "name": "x", "sha256": "AB" * 32}, "addons[0].sha256"),
        ({"kind": "lora", "name": "", "sha256": SHA}, "addons[0].name"),
        ({"kind": "lora", "name": "x\ny", "sha256": SHA}, "addons[0].name"),
        ({"kind": "lora", "name": "x", "sha256": SHA, "run": "rm -rf"}, "addons[0]"),
        ({"kind": "lora", "name": "x", "sha256": SHA, "settings": {"unet": "1"}}, "addons[0].settings.unet"),
        ({"kind": "lora", "name": "x", "sha256": SHA, "settings": {"a": {"b": 1}}}, "addons[0].settings.a"),
        ({"kind": "lora", "name": "x", "sha256": SHA, "settings": {"te": 1e308 * 10}}, "addons[0].settings.te"),
        ({"kind": "lora", "name": "x", "sha256": SHA, "short_hash": "zz"}, "addons[0].short_hash"),
        ("lora", "addons[0]"),
    ],
)  # fmt: skip
def test_hostile_records_are_typed_errors(record: Any, field: str) -> None:
    data = _recipe().to_dict() | {"addons": [record]}
    with pytest.raises(RecipeParseError) as info:
        Recipe.from_dict(data)
    assert info.value.field == field
    with pytest.raises(RecipeParseError, match="at most 64"):
        Recipe.from_dict(_recipe().to_dict() | {"addons": [{"kind": "lora"}] * 65})
    with pytest.raises(RecipeParseError) as text:
        Recipe.from_infotext(_recipe().to_infotext() + ', Addons: "{\\"a\\": 1}"')
    assert text.value.field == "Addons"


def test_signed_file_lists_each_addon_and_replays_exactly(
    tiny_sd_path: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    import sd_parsers  # a dev dependency: this test runs, never skips

    gen = Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False,
                                    lora_dirs=files["film"].parent,
                                    embedding_dirs=files["easyneg"].parent)  # fmt: skip
    image = gen("a cube <lora:film:0.8>", negative_prompt="easyneg", loras={"ink": 0.5},
                sampler="Euler", steps=2, seed=9).image  # fmt: skip
    path = image.save(tmp_path / "out.png")
    shas = {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in files.items()}
    assert [(r.kind, r.name, r.sha256) for r in image.recipe.addons] == [
        ("lora", "ink", shas["ink"]), ("lora", "film", shas["film"]),
        ("embedding", "easyneg", shas["easyneg"]),
    ]  # fmt: skip
    reading = read_manifest(path.read_bytes(), "image/png")
    assert reading.state == "valid" and reading.active is not None
    ingredients = reading.active["ingredients"]
    assert sorted((i["relationship"], i["title"], i["metadata"]["org.sdkit.sha256"])
                  for i in ingredients) == sorted(("componentOf", n, s) for n, s in shas.items())  # fmt: skip
    # A1111's fields, as sd-parsers and provenance's codec read them
    with Image.open(path) as opened:
        parsed = sd_parsers.ParserManager().parse(opened)
        text = opened.info["parameters"]
    ink, film = _addnet(files["ink"])[:12], _addnet(files["film"])[:12]
    assert parsed.metadata["Hashes"] == {
        "model": image.recipe.model_hash, "lora:ink": ink, "lora:film": film,
        "embed:easyneg": shas["easyneg"][:12],
    }  # fmt: skip
    params = infotext.parse_infotext(text).parameters
    assert params["Lora hashes"] == f"ink: {ink}, film: {film}"
    assert params["TI hashes"] == f"easyneg: {shas['easyneg'][:12]}"
    assert json.loads(infotext.parse_infotext(text).parameters["Addons"])[0]["name"] == "ink"
    # replay on a fresh Generator finds the files by name and checks their hashes
    fresh = Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False,
                                      lora_dirs=files["film"].parent,
                                      embedding_dirs=files["easyneg"].parent)  # fmt: skip
    assert fresh.replay(path).exact
    # a missing file, and a file of that name that is another LoRA, are named
    bare = Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False,
                                     embedding_dirs=files["easyneg"].parent)  # fmt: skip
    with pytest.raises(ReplayError, match="no lora named 'ink'"):
        bare.replay(path)
    other = tmp_path / "other"
    other.mkdir()
    save_kohya(make_lora(tiny_sd_path, 5), other / "ink.safetensors", xl=False)
    changed = Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False,
                                        lora_dirs=other, embedding_dirs=files["easyneg"].parent)  # fmt: skip
    with pytest.raises(ReplayError, match="is not the LoRA 'ink' the Recipe names"):
        changed.replay(path)
