"""Prompt editing, alternation and AND (sdkit.prompt_schedule), against A1111's own examples.

A1111's examples are data here, with the outputs A1111 prints: repository
AUTOMATIC1111/stable-diffusion-webui, modules/prompt_parser.py, commit
28bd8e142d5f77b71ae8d7d7140b5da1b3a49906 (v1.10 line), the doctests of
get_learned_conditioning_prompt_schedules (called with steps=10) and the comment at the top of
the file (steps=100).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image

from sdkit import Generator
from sdkit.errors import InvalidOptionError
from sdkit.prompt_conditioning import condition
from sdkit.prompt_schedule import (
    MAX_SUBPROMPTS,
    SubPrompt,
    plan_prompts,
    prompt_schedule,
    split_and,
    text_at,
)
from sdkit.prompts import encode_prompt_texts

_ALTERNATING = [[i, "a" if i % 2 else "(b:1.1)"] for i in range(1, 11)]
A1111_SCHEDULES_10_STEPS: list[tuple[str, list[list[object]]]] = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", _ALTERNATING),
    ("[fe|]male", [[i, "female" if i % 2 else "male"] for i in range(1, 11)]),
    ("[fe|||]male", [[i, "female" if i % 4 == 1 else "male"] for i in range(1, 11)]),
]
# Left out: g("a [{b|d{:.5] c"), marked "not handling this right now" in A1111; its result
# depends on the lark version (lark 1.3.1 reads the whole prompt as text, as sdkit does).


@pytest.mark.parametrize(("prompt", "expected"), A1111_SCHEDULES_10_STEPS)
def test_a1111_schedule_doctests(prompt: str, expected: list[list[object]]) -> None:
    assert [list(entry) for entry in prompt_schedule(prompt, 10)] == expected


def test_a1111_file_comment_example_at_100_steps() -> None:
    prompt = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]"
    )
    assert [list(e) for e in prompt_schedule(prompt, 100)] == [
        [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
        [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
        [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
        [75, "fantasy landscape with a lake and an oak in background masterful"],
        [100, "fantasy landscape with a lake and a christmas tree in background masterful"],
    ]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("[cat:dog:0.5]", [[5, "cat"], [10, "dog"]]),
        ("[dog:0.3]", [[3, ""], [10, "dog"]]),
        ("[cat::10]", [[10, "cat"]]),
        ("[cat::4]", [[4, "cat"], [10, ""]]),
        ("[a:b:1.5]", [[10, "a"]]),  # with a "." a fraction: 150 % never comes
        ("[a:b:1e1]", [[10, "a"]]),  # lark's number: an exponent, no "."
        ("[a:b:0.05]", [[10, "b"]]),  # int(0.5) == 0: "b" from the start
        ("[a:b]", [[10, "[a:b]"]]),  # no number: brackets and text
        ("a | b", [[10, "a | b"]]),  # "|" outside brackets: A1111's grammar fails, plain text
        ("(a|b)", [[10, "(a|b)"]]),
        ("a\\", [[10, "a\\"]]),
        ("[ a | b ]", [[i, " a " if i % 2 else " b "] for i in range(1, 11)]),
        ("(x:1.2) [a:b:2]", [[2, "(x:1.2) a"], [10, "(x:1.2) b"]]),
    ],
)
def test_schedules_as_a1111_reads_them(prompt: str, expected: list[list[object]]) -> None:
    # Expected values checked against A1111's function run with lark 1.3.1.
    assert [list(entry) for entry in prompt_schedule(prompt, 10)] == expected


def test_a_call_uses_the_first_entry_ending_at_or_after_it() -> None:
    # A1111's reconstruct_cond_batch: model call i (from 0) takes the entry with i <= end.
    schedule = prompt_schedule("[cat:dog:3]", 10)
    assert [text_at(schedule, i) for i in range(10)] == ["cat"] * 4 + ["dog"] * 6
    alternating = prompt_schedule("[a|b]", 4)
    assert [text_at(alternating, i) for i in range(4)] == ["a", "a", "b", "a"]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a castle AND a dragon :0.8", [("a castle", 1.0), (" a dragon", 0.8)]),
        ("a cat", [("a cat", 1.0)]),
        ("a cat:1.5", [("a cat", 1.5)]),
        ("a cat : -.5  ", [("a cat", -0.5)]),
        ("a:b:2", [("a:b", 2.0)]),
        ("(a:1.2)", [("(a:1.2)", 1.0)]),
        ("a ANDb AND", [("a ANDb", 1.0), ("", 1.0)]),
        ("cat:1.2.3", [("cat:1.2.3", 1.0)]),
    ],
)
def test_and_splits_as_a1111(prompt: str, expected: list[tuple[str, float]]) -> None:
    # A1111's get_multicond_prompt_list: re_AND.split, then re_weight on each part.
    assert split_and(prompt) == tuple(SubPrompt(t, w) for t, w in expected)


def test_and_is_bounded() -> None:
    with pytest.raises(InvalidOptionError, match="AND parts"):
        split_and(" AND ".join(["a"] * (MAX_SUBPROMPTS + 1)))
    with pytest.raises(InvalidOptionError, match="weight"):
        split_and("a AND b:99999999")


def test_too_many_distinct_prompts_are_refused() -> None:
    with pytest.raises(InvalidOptionError, match="distinct"):
        plan_prompts("[a|b|c|d|e|f|g|h|i][j|k|l|m|n|o|p|q]", "", 100)


def test_plan_encodes_each_distinct_text_once() -> None:
    plan = plan_prompts("[cat:dog:0.5] AND sky :0.5", "[blur|noise]", 6)
    assert plan.positives == ("cat", " sky", "dog")
    assert plan.negatives == ("blur", "noise")
    assert plan.calls[0] == ((0, 1.0), (1, 0.5)) and plan.calls[5] == ((2, 1.0), (1, 0.5))
    assert plan.negative_calls == (0, 0, 1, 0, 1, 0, 1)  # calls 0 to 6 (PLMS makes 7)
    assert not plan.plain


def test_a_plain_prompt_is_kept_as_given() -> None:
    plan = plan_prompts("a (red:1.3) barn BREAK [fog] ", "blurry", 20)
    assert plan.plain and plan.positives == ("a (red:1.3) barn BREAK [fog] ",)
    assert not plan_prompts("cat:1", "", 2).plain  # A1111 encodes "cat" at AND weight 1


# -- per model call, on tiny pipelines ----------------------------------------------------------


@pytest.fixture(scope="module")
def sd(tiny_sd_path: Path) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_path: Path) -> StableDiffusionXLPipeline:
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _Recorder:
    """Records the UNet's inputs at each call, as the (wrapped) forward receives them."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet
        self.hidden: list[torch.Tensor] = []
        self.pooled: list[torch.Tensor | None] = []

    def __enter__(self) -> _Recorder:
        forward = self.unet.forward

        def record(sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
            self.hidden.append(kwargs["encoder_hidden_states"].clone())
            added = kwargs.get("added_cond_kwargs") or {}
            text = added.get("text_embeds")
            self.pooled.append(None if text is None else text.clone())
            return forward(sample, timestep, *args, **kwargs)

        self.unet.forward = record
        return self

    def __exit__(self, *exc: object) -> None:
        del self.unet.forward


def _run(pipe: Any, prompt: str, negative: str, steps: int, scheduler: Any, **kw: Any) -> _Recorder:
    pipe.scheduler = scheduler.from_config(pipe.scheduler.config)
    cond = condition(pipe, prompt, negative, steps=steps, clip_skip=None, guidance=True)
    with _Recorder(pipe.unet) as recorder, cond:
        pipe(
            **cond.embeds.as_pipeline_kwargs(), num_inference_steps=steps, guidance_scale=7.0,
            height=64, width=64, output_type="latent", generator=torch.Generator().manual_seed(1),
            **kw,
        )  # fmt: skip
    return recorder


def _expected(pipe: Any, positive: str, negative: str, chunks_like: torch.Tensor) -> Any:
    pos, neg = encode_prompt_texts(pipe, [positive], [negative])
    assert pos[0][0].shape[1] == chunks_like.shape[1]  # same chunk count as the recorded
    return torch.cat([neg[0][0], pos[0][0]]), (
        None if pos[0][1] is None else torch.cat([neg[0][1], pos[0][1]])  # type: ignore[list-item]
    )


@pytest.mark.parametrize("xl", [False, True])
def test_each_call_is_conditioned_on_the_text_a1111_uses_then(
    xl: bool, sd: StableDiffusionPipeline, sdxl: StableDiffusionXLPipeline
) -> None:
    pipe: Any = sdxl if xl else sd
    prompt = "a [cat:dog:0.5] BREAK (sky:1.2)"
    recorder = _run(pipe, prompt, "[blur|noise]", 4, EulerDiscreteScheduler)
    # A1111 at 4 steps: [cat:dog:0.5] switches after step 2 (calls 0-2 "cat", call 3 "dog");
    # the negative alternates by schedule entry 1, 1, 2, 3 -> blur, blur, noise, blur.
    texts = [("a cat BREAK (sky:1.2)", "blur"), ("a cat BREAK (sky:1.2)", "blur"),
             ("a cat BREAK (sky:1.2)", "noise"), ("a dog BREAK (sky:1.2)", "blur")]  # fmt: skip
    assert len(recorder.hidden) == 4
    for call, (positive, negative) in enumerate(texts):
        hidden, pooled = _expected(pipe, positive, negative, recorder.hidden[call])
        assert torch.equal(recorder.hidden[call], hidden), call
        if xl:
            assert torch.equal(recorder.pooled[call], pooled), call


def test_a_second_order_sampler_counts_model_calls_over_twice_the_steps(
    sd: StableDiffusionPipeline,
) -> None:
    # Heun: 3 steps are 5 model calls over a schedule of 6 (A1111's total_steps = steps * 2).
    recorder = _run(sd, "[cat:dog:3]", "", 3, HeunDiscreteScheduler)
    assert len(recorder.hidden) == 5
    cat, _ = _expected(sd, "cat", "", recorder.hidden[0])
    dog, _ = _expected(sd, "dog", "", recorder.hidden[0])
    assert [torch.equal(h, cat) for h in recorder.hidden] == [True] * 4 + [False]
    assert torch.equal(recorder.hidden[4], dog)


def test_plms_extra_call_takes_the_last_entry(sd: StableDiffusionPipeline) -> None:
    # PNDM/PLMS makes steps + 1 model calls; call number `steps` still ends at `steps` (A1111).
    recorder = _run(sd, "[cat:dog:2]", "", 3, PNDMScheduler)
    assert len(recorder.hidden) == 4
    cat, _ = _expected(sd, "cat", "", recorder.hidden[0])
    dog, _ = _expected(sd, "dog", "", recorder.hidden[0])
    assert [torch.equal(h, cat) for h in recorder.hidden] == [True] * 3 + [False]
    assert torch.equal(recorder.hidden[3], dog)


def test_each_distinct_text_is_encoded_once(sd: StableDiffusionPipeline) -> None:
    passes = []
    hook = sd.text_encoder.register_forward_hook(lambda *_: passes.append(1))
    try:
        cond = condition(sd, "[a|b] AND c", "[x:y:0.5]", steps=20, clip_skip=None, guidance=True)
    finally:
        hook.remove()
    assert cond.plan.positives == ("a", " c", "b") and cond.plan.negatives == ("x", "y")
    assert len(passes) == 5  # one per distinct text, not one per step


@pytest.mark.parametrize("guidance", [True, False])
def test_and_combines_the_noise_predictions_as_composable_diffusion(
    guidance: bool, sd: StableDiffusionPipeline
) -> None:
    cond = condition(sd, "a castle AND a dragon :0.8", "blur", steps=2, clip_skip=None,
                     guidance=guidance)  # fmt: skip
    castle, dragon = (emb for emb, _ in cond.positives)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor(500)
    with torch.no_grad():
        uncond = (
            sd.unet(latents, t, encoder_hidden_states=cond.negatives[0][0]).sample
            if guidance
            else None
        )
        c1 = sd.unet(latents, t, encoder_hidden_states=castle).sample
        c2 = sd.unet(latents, t, encoder_hidden_states=dragon).sample
        sample = torch.cat([latents, latents]) if guidance else latents
        with cond:
            out = sd.unet(sample, t, encoder_hidden_states=torch.zeros(1)).sample
    # A1111 (combine_denoised): uncond + sum(w * (cond_i - uncond)) before the guidance scale;
    # without an unconditional pass the first part stands in for it.
    base = uncond if uncond is not None else c1
    expected = base + (c1 - base) * 1.0 + (c2 - base) * 0.8
    assert torch.allclose(out[-1:], expected, atol=1e-5)
    if uncond is not None:
        assert torch.allclose(out[:1], uncond, atol=1e-5)
    assert cond.calls == 1


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_two_halves_of_one_prompt_make_that_prompt(
    family: str, tiny_sd_path: Path, tiny_sdxl_path: Path
) -> None:
    # u + 0.5 (c - u) + 0.5 (c - u) == c: "a cat:0.5 AND a cat:0.5" draws "a cat".
    gen = Generator.from_pretrained(tiny_sdxl_path if family == "sdxl" else tiny_sd_path,
                                    device="cpu", progress=False)  # fmt: skip
    options: dict[str, Any] = {"steps": 2, "seed": 5, "width": 64, "height": 64}
    whole = np.asarray(gen("a red cat BREAK hat", **options).image.image, dtype=np.int16)
    halves = np.asarray(
        gen("a red cat BREAK hat:0.5 AND a red cat BREAK hat :0.5", **options).image.image,
        dtype=np.int16,
    )
    assert np.abs(whole - halves).max() <= 1
    edited = np.asarray(gen("a [red:blue:0.5] cat", sampler="Heun", **options).image.image)
    assert edited.shape == (64, 64, 3)


def test_too_many_edits_are_refused_early() -> None:
    with pytest.raises(InvalidOptionError, match="edits and alternations"):
        prompt_schedule("[a|b]" * 20_000, 1000)
    assert len(prompt_schedule("[a|b]" * 256, 1000)) == 1000


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_every_mode_batch_and_guidance_setting_runs_with_the_new_syntax(
    family: str, tiny_sd_path: Path, tiny_sdxl_path: Path
) -> None:
    gen = Generator.from_pretrained(tiny_sdxl_path if family == "sdxl" else tiny_sd_path,
                                    device="cpu", progress=False)  # fmt: skip
    init = Image.new("RGB", (64, 64), (120, 90, 60))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    prompt = "a [red:blue:0.5] (barn:1.2) BREAK [fog|rain] AND a castle :0.7"
    negative = "[blur::2] " + "ugly, " * 40  # a long negative: two chunks
    calls: list[dict[str, Any]] = [
        {},
        {"guidance_scale": 1.0},  # no unconditional pass
        {"num_images": 2, "sampler": "DPM2"},
        {"init_image": init, "strength": 0.6},
        {"init_image": init, "mask": mask, "strength": 1.0},
    ]
    for extra in calls:
        options = {"steps": 3, "seed": 2, "width": 64, "height": 64, **extra}
        result = gen(prompt, negative_prompt=negative, **options)
        assert len(result.images) == options.get("num_images", 1)
        assert result.image.recipe.prompt == prompt  # replay re-parses the prompt as given
        pixels = np.asarray(result.image.image)
        assert np.isfinite(pixels).all() and pixels.std() > 0
    again = gen(prompt, negative_prompt=negative, steps=3, seed=2, width=64, height=64)
    assert np.array_equal(
        np.asarray(again.image.image),
        np.asarray(
            gen(prompt, negative_prompt=negative, steps=3, seed=2, width=64, height=64).image.image
        ),
    )


def test_the_negative_prompt_has_no_and() -> None:
    plan = plan_prompts("x", "a AND b:0.5", 2)
    assert plan.negatives == ("a AND b:0.5",) and plan.plain


def test_many_long_distinct_texts_are_refused_before_encoding(sd: StableDiffusionPipeline) -> None:
    long = "word, " * 12_000  # 72,000 characters, about 24,000 tokens
    with pytest.raises(InvalidOptionError, match="distinct prompts"):
        plan_prompts(f"{long} [a|b|c|d|e|f]", "", 10)  # six texts of 72,000 characters
    passes = []
    hook = sd.text_encoder.register_forward_hook(lambda *_: passes.append(1))
    try:
        with pytest.raises(InvalidOptionError, match="chunks"):
            # 6 distinct texts of 50 chunks each: under the per-prompt cap, over the call's
            condition(sd, "[" + "|".join(f"{i} " + "cat " * 3700 for i in range(6)) + "]", "",
                      steps=6, clip_skip=None, guidance=False)  # fmt: skip
    finally:
        hook.remove()
    assert passes == []
