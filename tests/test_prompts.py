"""A1111 prompt syntax, long prompts, and parity with diffusers' own ``encode_prompt``."""

from __future__ import annotations

import doctest
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

import sdkit.prompts
from sdkit.errors import InvalidOptionError
from sdkit.prompts import BREAK, PromptEmbeddings, encode_prompts, parse_prompt_attention

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sd(tiny_sd_path: Path) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_pretrained(tiny_sd_path)


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_path: Path) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path)


@pytest.fixture()
def sdxl_no_zeros(sdxl: StableDiffusionXLPipeline) -> Iterator[StableDiffusionXLPipeline]:
    sdxl.register_to_config(force_zeros_for_empty_prompt=False)
    yield sdxl
    sdxl.register_to_config(force_zeros_for_empty_prompt=True)


def _skip_for_diffusers(clip_skip: int | None) -> int | None:
    # A1111 counts the last layer as 1; diffusers counts skipped layers.
    return None if clip_skip is None else clip_skip - 1


def _sdxl_reference(pipe: Any, prompt: str, negative: str | None, clip_skip: int | None) -> Any:
    return pipe.encode_prompt(
        prompt,
        device=CPU,
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        negative_prompt=negative,
        clip_skip=_skip_for_diffusers(clip_skip),
    )


def _sd_reference(pipe: Any, prompt: str, negative: str | None, clip_skip: int | None) -> Any:
    args = (prompt, CPU, 1, negative is not None)
    try:
        return pipe.encode_prompt(
            *args, negative_prompt=negative, clip_skip=_skip_for_diffusers(clip_skip)
        )
    except AttributeError:
        # diffusers reaches for ``text_encoder.text_model.final_layer_norm``, which transformers 5
        # flattened into ``text_encoder.final_layer_norm``: do by hand what diffusers does.
        assert clip_skip is not None
        positive, negative_embeds = pipe.encode_prompt(*args, negative_prompt=negative)
        ids = pipe.tokenizer(prompt, padding="max_length", truncation=True, return_tensors="pt")
        out = pipe.text_encoder(ids.input_ids, output_hidden_states=True)
        positive = pipe.text_encoder.final_layer_norm(out.hidden_states[-clip_skip])
        return positive, negative_embeds


# -- parser -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a photo of a cat", [("a photo of a cat", 1.0)]),
        ("(x)", [("x", 1.1)]),
        ("((x))", [("x", 1.1 * 1.1)]),
        ("[x]", [("x", 1 / 1.1)]),
        ("[[x]]", [("x", 1 / 1.1 / 1.1)]),
        ("(x:1.3)", [("x", 1.3)]),
        ("(x:.5)", [("x", 0.5)]),
        ("a (red:1.5) cat", [("a ", 1.0), ("red", 1.5), (" cat", 1.0)]),
        ("((a:1.5) b)", [("a", 1.5 * 1.1), (" b", 1.1)]),
        ("(a [b] c)", [("a ", 1.1), ("b", 1 / 1.1 * 1.1), (" c", 1.1)]),
        (r"\(x\)", [("(x)", 1.0)]),
        (r"\[x\] \\ y", [("[x] \\ y", 1.0)]),
        (r"(a\)b)", [("a)b", 1.1)]),
        ("a\\b", [("ab", 1.0)]),  # a lone backslash is dropped, as in A1111
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("a (b [c", [("a ", 1.0), ("b ", 1.1), ("c", 1.1 * (1 / 1.1))]),
        ("a) b] c", [("a) b] c", 1.0)]),
        ("a:1.3) b", [("a:1.3) b", 1.0)]),
        # A1111 v1.6+ (re_attention): white space around the number is allowed
        ("(a: 1.3)", [("a", 1.3)]),
        ("(word :1.2)", [("word ", 1.2)]),
        ("(word:1.2 )", [("word", 1.2)]),
        ("(a:1.2 .3)", [("a:1.2 .3", 1.1)]),
        ("(a:1.2.3)", [("a:1.2.3", 1.1)]),
        ("(a:1.3)(b:1.3)", [("ab", 1.3)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        ("a BREAK b", [("a", 1.0), BREAK, ("b", 1.0)]),
        ("a, BREAK, b", [("a,", 1.0), BREAK, (", b", 1.0)]),
        # inside brackets A1111 scales BREAK's -1 too, and then reads it as the word "BREAK"
        ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),
        ("[a BREAK b]", [("a", 1 / 1.1), ("BREAK", -1 / 1.1), ("b", 1 / 1.1)]),
        ("(a BREAK b:1)", [("a", 1.0), BREAK, ("b", 1.0)]),  # the factors multiply to 1
        ("a BREAK BREAK b", [("a", 1.0), BREAK, BREAK, ("b", 1.0)]),
        ("aBREAK BREAKb", [("aBREAK BREAKb", 1.0)]),
        ("", [("", 1.0)]),
        ("()", [("", 1.0)]),
    ],
)
def test_parse_prompt_attention(text: str, expected: list[tuple[str, float]]) -> None:
    # Weights are compared exactly: they are the same float products A1111 computes.
    assert parse_prompt_attention(text) == expected


def test_parse_matches_a1111_doctest() -> None:
    # The example from A1111's own docstring, values as A1111 prints them.
    text = "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."
    assert parse_prompt_attention(text) == [
        ("a ", 1.0),
        ("house", 1.5730000000000004),
        (" ", 1.1),
        ("on", 1.0),
        (" a ", 1.1),
        ("hill", 0.55),
        (", sun, ", 1.1),
        ("sky", 1.4641000000000006),
        (".", 1.1),
    ]


# A1111's own doctests for parse_prompt_attention, with the outputs it prints: repository
# AUTOMATIC1111/stable-diffusion-webui, modules/prompt_parser.py, commit
# 28bd8e142d5f77b71ae8d7d7140b5da1b3a49906 (v1.10 line; same examples at 0674fabd).
A1111_ATTENTION_EXAMPLES: list[tuple[str, list[tuple[str, float]]]] = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), A1111_ATTENTION_EXAMPLES)
def test_a1111_attention_doctests(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_attention(text) == expected


def test_common_weights_are_the_expected_floats() -> None:
    assert parse_prompt_attention("(x)")[0][1] == 1.1
    assert parse_prompt_attention("((x))")[0][1] == pytest.approx(1.21, abs=1e-15)
    assert parse_prompt_attention("[x]")[0][1] == 1 / 1.1


def test_docstring_examples() -> None:
    result = doctest.testmod(sdkit.prompts, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# -- chunking -----------------------------------------------------------------------------------


def _chunk_lengths(stream: Sequence[tuple[int, float] | None], backtrack: int = 20) -> list[int]:
    chunks = sdkit.prompts._split_chunks(stream, 75, 267, backtrack)
    return [len(ids) for ids, _ in chunks]


def test_chunks_split_at_75_tokens_and_back_up_to_a_comma() -> None:
    stream: list[tuple[int, float] | None] = [(1, 1.0)] * 80
    assert _chunk_lengths(stream) == [75, 5]
    stream[60] = (267, 1.0)  # a comma 15 tokens before the boundary
    assert _chunk_lengths(stream) == [61, 19]
    assert _chunk_lengths(stream, backtrack=0) == [75, 5]
    assert _chunk_lengths(stream, backtrack=14) == [75, 5]
    stream[60], stream[50] = (1, 1.0), (267, 1.0)  # 25 tokens back: too far
    assert _chunk_lengths(stream) == [75, 5]


def test_no_comma_backtrack_when_the_prompt_fits_one_chunk() -> None:
    stream: list[tuple[int, float] | None] = [(1, 1.0)] * 75
    stream[70] = (267, 1.0)
    assert _chunk_lengths(stream) == [75]


def test_break_starts_a_new_chunk() -> None:
    token = (1, 1.0)
    assert _chunk_lengths([token, None, token, token]) == [1, 2]
    assert _chunk_lengths([None, token]) == [0, 1]
    assert _chunk_lengths([token, None]) == [1]
    assert _chunk_lengths([token] * 75 + [None, token]) == [75, 1]
    assert _chunk_lengths([]) == [0]


# -- encoding: parity with diffusers ------------------------------------------------------------


@pytest.mark.parametrize("clip_skip", [None, 2])
def test_sd_plain_prompt_is_bit_identical_to_diffusers(
    sd: StableDiffusionPipeline, clip_skip: int | None
) -> None:
    ours = encode_prompts(sd, "a photo of a cat, best quality", "blurry", clip_skip=clip_skip)
    ref_pos, ref_neg = _sd_reference(sd, "a photo of a cat, best quality", "blurry", clip_skip)
    assert torch.equal(ours.prompt_embeds, ref_pos)
    assert ours.negative_prompt_embeds is not None
    if clip_skip is None:
        assert torch.equal(ours.negative_prompt_embeds, ref_neg)
    else:
        # diffusers ignores clip_skip for the negative; A1111 (and we) apply it to both.
        ref_neg_skipped, _ = _sd_reference(sd, "blurry", None, clip_skip)
        assert torch.equal(ours.negative_prompt_embeds, ref_neg_skipped)
    assert ours.pooled_prompt_embeds is None
    assert ours.negative_pooled_prompt_embeds is None
    assert ours.prompt_embeds.dtype == sd.text_encoder.dtype
    assert ours.prompt_embeds.device == CPU


def test_sd_attention_mask_is_used_when_the_encoder_asks_for_it(
    sd: StableDiffusionPipeline,
) -> None:
    sd.text_encoder.config.use_attention_mask = True
    try:
        ours = encode_prompts(sd, "a photo of a cat", "blurry")
        ref_pos, ref_neg = sd.encode_prompt("a photo of a cat", CPU, 1, True, "blurry")
    finally:
        sd.text_encoder.config.use_attention_mask = False
    unmasked, _ = sd.encode_prompt("a photo of a cat", CPU, 1, False)
    assert not torch.equal(ref_pos, unmasked)  # the mask does change the result
    assert torch.equal(ours.prompt_embeds, ref_pos)
    assert ours.negative_prompt_embeds is not None
    assert torch.equal(ours.negative_prompt_embeds, ref_neg)


def test_sd_default_negative_is_the_empty_prompt(sd: StableDiffusionPipeline) -> None:
    ours = encode_prompts(sd, "a cat")
    ref_pos, ref_neg = sd.encode_prompt("a cat", CPU, 1, True)
    assert torch.equal(ours.prompt_embeds, ref_pos)
    assert ours.negative_prompt_embeds is not None
    assert torch.equal(ours.negative_prompt_embeds, ref_neg)


@pytest.mark.parametrize("clip_skip", [None, 2])
def test_sdxl_plain_prompt_is_bit_identical_to_diffusers(
    sdxl: StableDiffusionXLPipeline, clip_skip: int | None
) -> None:
    prompt = "a photo of a cat, best quality"
    ours = encode_prompts(sdxl, prompt, "blurry", clip_skip=clip_skip)
    ref = _sdxl_reference(sdxl, prompt, "blurry", clip_skip)
    assert torch.equal(ours.prompt_embeds, ref[0])
    assert ours.pooled_prompt_embeds is not None
    assert torch.equal(ours.pooled_prompt_embeds, ref[2])
    if clip_skip is None:
        neg, neg_pooled = ref[1], ref[3]
    else:  # diffusers ignores clip_skip for the negative: compare with it encoded as a prompt
        as_prompt = _sdxl_reference(sdxl, "blurry", None, clip_skip)
        neg, neg_pooled = as_prompt[0], as_prompt[2]
    assert ours.negative_prompt_embeds is not None
    assert ours.negative_pooled_prompt_embeds is not None
    assert torch.equal(ours.negative_prompt_embeds, neg)
    assert torch.equal(ours.negative_pooled_prompt_embeds, neg_pooled)
    assert ours.prompt_embeds.dtype == sdxl.text_encoder_2.dtype


@pytest.mark.parametrize("negative", [None, ""])
def test_sdxl_empty_negative_is_zeros(
    sdxl: StableDiffusionXLPipeline, negative: str | None
) -> None:
    ours = encode_prompts(sdxl, "a cat", negative)
    ref = _sdxl_reference(sdxl, "a cat", None, None)
    for got, want in zip(ours.as_pipeline_kwargs().values(), ref, strict=True):
        assert torch.equal(got, want)
    assert ours.negative_prompt_embeds is not None
    assert ours.negative_pooled_prompt_embeds is not None
    assert not ours.negative_prompt_embeds.any()
    assert not ours.negative_pooled_prompt_embeds.any()
    long = encode_prompts(sdxl, "red cat " * 50, negative)
    assert long.negative_prompt_embeds is not None
    assert long.negative_prompt_embeds.shape == long.prompt_embeds.shape == (1, 154, 80)
    assert not long.negative_prompt_embeds.any()


def test_sdxl_empty_negative_is_encoded_without_force_zeros(
    sdxl_no_zeros: StableDiffusionXLPipeline,
) -> None:
    ours = encode_prompts(sdxl_no_zeros, "a cat")
    ref = _sdxl_reference(sdxl_no_zeros, "a cat", None, None)
    assert ours.negative_prompt_embeds is not None
    assert ours.negative_prompt_embeds.any()
    assert torch.equal(ours.negative_prompt_embeds, ref[1])
    assert ours.negative_pooled_prompt_embeds is not None
    assert torch.equal(ours.negative_pooled_prompt_embeds, ref[3])


def test_sdxl_refiner_uses_only_the_second_encoder(sdxl: StableDiffusionXLPipeline) -> None:
    refiner = StableDiffusionXLPipeline(
        **{**sdxl.components, "tokenizer": None, "text_encoder": None}
    )
    ours = encode_prompts(refiner, "a photo of a cat", "blurry")
    ref = _sdxl_reference(refiner, "a photo of a cat", "blurry", None)
    assert ours.prompt_embeds.shape == (1, 77, 48)
    for got, want in zip(ours.as_pipeline_kwargs().values(), ref, strict=True):
        assert torch.equal(got, want)


def test_no_guidance_means_no_negative(
    sd: StableDiffusionPipeline, sdxl: StableDiffusionXLPipeline
) -> None:
    plain = encode_prompts(sd, "a cat", "blurry", do_classifier_free_guidance=False)
    assert plain.negative_prompt_embeds is None
    assert list(plain.as_pipeline_kwargs()) == ["prompt_embeds"]
    xl = encode_prompts(sdxl, "a cat", do_classifier_free_guidance=False)
    assert list(xl.as_pipeline_kwargs()) == ["prompt_embeds", "pooled_prompt_embeds"]


# -- encoding: weights --------------------------------------------------------------------------


def _expected_weighted(plain: torch.Tensor, position: int, weight: float) -> torch.Tensor:
    # A1111 "Original" emphasis, written out: scale the token, then restore the chunk mean.
    multipliers = torch.ones(plain.shape[1])
    multipliers[position] = weight
    weighted = plain * multipliers[None, :, None]
    return weighted * (plain.mean() / weighted.mean())


def test_weight_scales_the_token_and_rescales_the_mean(sd: StableDiffusionPipeline) -> None:
    assert sd.tokenizer("a cat sitting").input_ids[2] == sd.tokenizer("cat").input_ids[1]
    plain = encode_prompts(sd, "a cat sitting", do_classifier_free_guidance=False).prompt_embeds
    ours = encode_prompts(sd, "a (cat:1.3) sitting", do_classifier_free_guidance=False)
    expected = _expected_weighted(plain, 2, 1.3)
    assert torch.equal(ours.prompt_embeds, expected)
    ratio = (
        plain.mean() / (plain * torch.where(torch.arange(77) == 2, 1.3, 1.0)[None, :, None]).mean()
    )
    assert ratio != 1.0
    assert torch.equal(ours.prompt_embeds[0, 2], plain[0, 2] * 1.3 * ratio)
    assert torch.equal(ours.prompt_embeds[0, 5], plain[0, 5] * ratio)
    # Weights of 1.0 leave the embeddings untouched, bit for bit.
    same = encode_prompts(sd, "a (cat:1.0) sitting", do_classifier_free_guidance=False)
    assert torch.equal(same.prompt_embeds, plain)


def test_sdxl_weights_each_encoder_separately(sdxl: StableDiffusionXLPipeline) -> None:
    plain = encode_prompts(sdxl, "a cat sitting", do_classifier_free_guidance=False)
    ours = encode_prompts(sdxl, "a [cat] sitting", do_classifier_free_guidance=False)
    first = plain.prompt_embeds[..., :32].contiguous()  # contiguous, as each encoder's output
    second = plain.prompt_embeds[..., 32:].contiguous()
    expected = torch.cat(
        [_expected_weighted(first, 2, 1 / 1.1), _expected_weighted(second, 2, 1 / 1.1)], dim=-1
    )
    assert torch.equal(ours.prompt_embeds, expected)
    assert ours.pooled_prompt_embeds is not None and plain.pooled_prompt_embeds is not None
    assert torch.equal(ours.pooled_prompt_embeds, plain.pooled_prompt_embeds)


def test_half_precision_encoder_gives_half_precision_embeddings(tiny_sd_path: Path) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path, torch_dtype=torch.bfloat16)
    ours = encode_prompts(pipe, "a (cat:1.3) " + "dog " * 80, "blurry")
    assert ours.prompt_embeds.dtype == torch.bfloat16
    assert ours.negative_prompt_embeds is not None
    assert ours.negative_prompt_embeds.dtype == torch.bfloat16
    assert ours.prompt_embeds.shape == (1, 154, 32)


# -- encoding: long prompts ---------------------------------------------------------------------


def test_long_prompt_is_not_truncated(sd: StableDiffusionPipeline) -> None:
    words = ["red", "cat"] * 100
    prompt = " ".join(words)
    assert len(sd.tokenizer(prompt, verbose=False).input_ids) == 202
    ours = encode_prompts(sd, prompt, "blurry")
    assert ours.prompt_embeds.shape == (1, 77 * 3, 32)
    assert ours.negative_prompt_embeds is not None
    assert ours.negative_prompt_embeds.shape == ours.prompt_embeds.shape

    # The first chunk is what diffusers sees of the prompt (it truncates the rest).
    ref_pos, _ = sd.encode_prompt(prompt, CPU, 1, False)
    assert torch.equal(ours.prompt_embeds[:, :77], ref_pos)

    # A word near the end (token 190) matters, and only in the last chunk.
    words[189] = "dog"
    changed = encode_prompts(sd, " ".join(words), "blurry").prompt_embeds
    assert torch.equal(changed[:, :154], ours.prompt_embeds[:, :154])
    assert not torch.equal(changed[:, 154:], ours.prompt_embeds[:, 154:])

    # The negative is padded with empty chunks.
    blurry, empty = (sd.encode_prompt(p, CPU, 1, False)[0] for p in ("blurry", ""))
    assert torch.equal(ours.negative_prompt_embeds, torch.cat([blurry, empty, empty], dim=1))


def test_short_positive_is_padded_to_a_long_negative(sd: StableDiffusionPipeline) -> None:
    ours = encode_prompts(sd, "a cat", "ugly " * 100)
    assert ours.negative_prompt_embeds is not None
    assert ours.prompt_embeds.shape == ours.negative_prompt_embeds.shape == (1, 154, 32)
    empty, _ = sd.encode_prompt("", CPU, 1, False)
    assert torch.equal(ours.prompt_embeds[:, 77:], empty)


def test_chunk_boundary_moves_back_to_a_comma(sd: StableDiffusionPipeline) -> None:
    prompt = "red " * 70 + ", " + "cat " * 10  # 81 tokens, comma at 71
    tail = encode_prompts(sd, "cat " * 10, do_classifier_free_guidance=False).prompt_embeds
    moved = encode_prompts(sd, prompt, do_classifier_free_guidance=False).prompt_embeds
    assert moved.shape == (1, 154, 32)
    assert torch.equal(moved[:, 77:], tail)
    kept = encode_prompts(sd, prompt, do_classifier_free_guidance=False, comma_backtrack=0)
    assert not torch.equal(kept.prompt_embeds[:, 77:], tail)


def test_break_forces_a_new_chunk(sd: StableDiffusionPipeline) -> None:
    ours = encode_prompts(sd, "a cat BREAK a dog", do_classifier_free_guidance=False)
    cat, _ = sd.encode_prompt("a cat", CPU, 1, False)
    dog, _ = sd.encode_prompt("a dog", CPU, 1, False)
    assert torch.equal(ours.prompt_embeds, torch.cat([cat, dog], dim=1))


def test_sdxl_pooled_comes_from_the_first_chunk(sdxl: StableDiffusionXLPipeline) -> None:
    first = "red " * 75
    ours = encode_prompts(sdxl, first + "cat " * 10, "blurry")
    assert ours.prompt_embeds.shape == (1, 154, 80)
    alone = encode_prompts(sdxl, first, "blurry")
    assert ours.pooled_prompt_embeds is not None and alone.pooled_prompt_embeds is not None
    assert torch.equal(ours.pooled_prompt_embeds, alone.pooled_prompt_embeds)
    assert torch.equal(ours.prompt_embeds[:, :77], alone.prompt_embeds)
    ref = _sdxl_reference(sdxl, first, "blurry", None)
    assert torch.equal(ours.pooled_prompt_embeds, ref[2])


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip_skip", [0, 5, True, 1.5])
def test_bad_clip_skip_is_refused(sd: StableDiffusionPipeline, clip_skip: Any) -> None:
    with pytest.raises(InvalidOptionError) as info:
        encode_prompts(sd, "a cat", clip_skip=clip_skip)
    assert info.value.option == "clip_skip"


def test_prompt_embeddings_kwargs_skip_none() -> None:
    embeds = PromptEmbeddings(torch.zeros(1, 77, 4), pooled_prompt_embeds=torch.zeros(1, 4))
    assert list(embeds.as_pipeline_kwargs()) == ["prompt_embeds", "pooled_prompt_embeds"]
