"""Textual-inversion embeddings: the file stem as a prompt word, with A1111 weighting.

The oracle is plain diffusers' ``load_textual_inversion`` (for SDXL once per text encoder and
tokenizer, as diffusers documents) and the pipeline's own ``encode_prompt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

from sdkit import Generator, UnsafeCheckpointError
from sdkit.addons.embeddings import read_embedding
from sdkit.errors import AddonError
from sdkit.prompts import _parse, _TextEncoder

EULER = {"timestep_spacing": "linspace", "use_karras_sigmas": False}
CALL: dict[str, Any] = dict(sampler="Euler", steps=2, seed=4, width=64, height=64)


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("embeddings")
    torch.manual_seed(11)
    save_file({"emb_params": torch.randn(2, 32)}, str(folder / "easyneg.safetensors"))
    save_file({"clip_l": torch.randn(3, 32), "clip_g": torch.randn(3, 48)},
              str(folder / "xlstyle.safetensors"))  # fmt: skip
    torch.save({"string_to_param": {"*": torch.randn(1, 32)}}, folder / "oldstyle.pt")
    return folder


@pytest.fixture(scope="module")
def sd(tiny_sd_path: Path, emb_dir: Path) -> Generator:
    return Generator.from_pretrained(
        tiny_sd_path, device="cpu", progress=False, watermark=False, embedding_dirs=emb_dir
    )


def _pixels(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_embedding_tokens_carry_its_vectors_and_the_weight(sd: Generator, emb_dir: Path) -> None:
    sd("easyneg", steps=1, width=64, height=64)  # loads it
    vectors = read_embedding(emb_dir / "easyneg.safetensors")["clip_l"]
    encoder = _TextEncoder(sd.pipe, (sd.pipe.tokenizer, sd.pipe.text_encoder), 1, sd.device)
    (ids, weights), = encoder.chunks(_parse("a cat, (easyneg:1.2) dog"), 20)  # fmt: skip
    (plain_ids, _), = encoder.chunks(_parse("a cat, (x y:1.2) dog"), 20)  # fmt: skip
    new = [i for i, t in enumerate(ids) if t >= len(sd.pipe.tokenizer) - 2]
    assert len(new) == 2 and len(ids) == len(plain_ids)
    # the weight applies to exactly the embedding's tokens
    assert [w for i, w in enumerate(weights) if i in new] == [1.2, 1.2]
    assert all(w == 1.0 for i, w in enumerate(weights) if i not in new)
    # the input embeddings differ from another prompt's exactly at those positions...
    table = sd.pipe.text_encoder.get_input_embeddings()
    ours, theirs = table(torch.tensor(ids)), table(torch.tensor(plain_ids))
    changed = (ours != theirs).any(dim=1).nonzero().flatten().tolist()
    assert changed == new
    torch.testing.assert_close(ours[new], vectors, rtol=0, atol=0)
    # ...and the hidden states before them are untouched (CLIP's causal mask)
    hidden, _ = encoder.encode((ids, [1.0] * len(ids)))
    other, _ = encoder.encode((plain_ids, [1.0] * len(ids)))
    torch.testing.assert_close(hidden[0, : new[0] + 1], other[0, : new[0] + 1], rtol=0, atol=0)
    assert not torch.equal(hidden[0, new[0] + 1], other[0, new[0] + 1])


def test_sd_pixels_equal_plain_load_textual_inversion(
    sd: Generator, tiny_sd_path: Path, emb_dir: Path
) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config({**pipe.scheduler.config, **EULER})
    pipe.load_textual_inversion(str(emb_dir / "easyneg.safetensors"), token="easyneg")
    expected = pipe("a cat", negative_prompt="easyneg, blurry", num_inference_steps=2,
                    guidance_scale=7.0, height=64, width=64,
                    generator=torch.Generator("cpu").manual_seed(4)).images[0]  # fmt: skip
    got = sd("a cat", negative_prompt="easyneg, blurry", **CALL)
    np.testing.assert_array_equal(_pixels(got.image.image), _pixels(expected))
    assert _pixels(expected).std() > 0
    (record,) = got.image.recipe.addons
    assert (record.kind, record.name, dict(record.settings)) == (
        "embedding",
        "easyneg",
        {"vectors": 2},
    )


def test_sdxl_embedding_loads_into_both_encoders(tiny_sdxl_path: Path, emb_dir: Path) -> None:
    gen = Generator.from_pretrained(tiny_sdxl_path, device="cpu", progress=False,
                                    watermark=False, embedding_dirs=emb_dir)  # fmt: skip
    got = gen("a xlstyle square", guidance_scale=5.0, **CALL)
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config({**pipe.scheduler.config, **EULER})
    vectors = read_embedding(emb_dir / "xlstyle.safetensors")
    pipe.load_textual_inversion(
        vectors["clip_l"], token="xlstyle", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(
        vectors["clip_g"],
        token="xlstyle",
        text_encoder=pipe.text_encoder_2,
        tokenizer=pipe.tokenizer_2,
    )
    expected = pipe("a xlstyle square", num_inference_steps=2, guidance_scale=5.0, height=64,
                    width=64, generator=torch.Generator("cpu").manual_seed(4)).images[0]  # fmt: skip
    np.testing.assert_array_equal(_pixels(got.image.image), _pixels(expected))
    # an SD embedding has no clip_g for SDXL's second encoder
    with pytest.raises(AddonError, match="no clip_g"):
        gen("easyneg", **CALL)


def test_pickle_refused_unless_allowed_and_wrong_files_refused(
    sd: Generator, tiny_sd_path: Path, emb_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(UnsafeCheckpointError):
        sd("an oldstyle cat", **CALL)
    allowed = Generator.from_pretrained(tiny_sd_path, device="cpu", progress=False,
                                        embedding_dirs=emb_dir, allow_pickle=True)  # fmt: skip
    assert allowed("an oldstyle cat", **CALL).image.recipe.addons[0].name == "oldstyle"
    with pytest.raises(AddonError, match="is for SDXL"):
        sd("xlstyle", **CALL)
    wide = tmp_path / "wide.safetensors"
    save_file({"emb_params": torch.zeros(1, 768)}, str(wide))
    with pytest.raises(AddonError, match="768-wide vectors"):
        sd.prompt_addons.embeddings.load(wide)
    notemb = tmp_path / "lora.safetensors"
    save_file({"a.lora_down.weight": torch.zeros(1, 2), "b": torch.zeros(2)}, str(notemb))
    with pytest.raises(AddonError, match="not a textual-inversion embedding"):
        read_embedding(notemb)
