"""Fuzzing the prompt parser (A1111 attention syntax): any text, weights finite, time linear.

Targets: :func:`sdkit.prompts.parse_prompt_attention`, which reads every prompt a user, a
Recipe or an image's infotext gives, and :func:`sdkit.prompt_schedule.plan_prompts` (prompt
editing, alternation, AND), which reads them first.
"""

from __future__ import annotations

import math

from fuzzing import bounded, budget
from hypothesis import given, settings
from hypothesis import strategies as st

from sdkit.prompt_schedule import MAX_DISTINCT_PROMPTS, plan_prompts
from sdkit.prompts import BREAK, parse_prompt_attention

# The grammar's own characters, often: brackets, escapes, weights, BREAK, commas.
_GRAMMAR = st.sampled_from(
    ["(", ")", "[", "]", ":", "\\", "BREAK", " ", ",", "1.5", "-", "+", ".", "e9", "a", "\n"]
)
PROMPTS = st.one_of(
    st.text(max_size=400),
    st.lists(_GRAMMAR | st.text(max_size=3), max_size=200).map("".join),
)
# Repeated units: what makes a parser quadratic ("(a" * 20000 took 9.8 s on the old code).
_UNITS = st.lists(
    st.sampled_from(["(a", "[a", "(", "[", "\\(", "(a:", "a:1)", ")", "a, ", "BREAK ", "(a:1.1)"]),
    min_size=1,
    max_size=3,
).map("".join)
REPEATED = st.tuples(_UNITS, st.integers(1, 50_000)).map(lambda t: t[0] * t[1])
# Explicit weights of any size: "(a:9999...9)" gave an infinite weight on the old code.
WEIGHTS = st.tuples(
    st.text(alphabet="0123456789.+-e", min_size=1, max_size=400), st.sampled_from(["", "(", "[("])
).map(lambda t: f"{t[1]}(a:{t[0]}) cat")


def _check(prompt: str) -> None:
    parsed = bounded(parse_prompt_attention, prompt, seconds=2.0, megabytes=64)
    if isinstance(parsed, BaseException):
        return  # a typed error (InvalidOptionError) is an answer
    assert isinstance(parsed, list)
    for item in parsed:
        if item == BREAK:
            continue
        text, weight = item
        assert isinstance(text, str)
        assert math.isfinite(weight), f"weight {weight!r} for {text[:40]!r}"


@settings(max_examples=budget(300))
@given(PROMPTS)
def test_any_prompt_parses_or_is_a_typed_error(prompt: str) -> None:
    _check(prompt)


@settings(max_examples=budget(25))
@given(REPEATED)
def test_repeated_syntax_parses_in_bounded_time(prompt: str) -> None:
    _check(prompt)


@settings(max_examples=budget(100))
@given(WEIGHTS)
def test_explicit_weights_are_finite(prompt: str) -> None:
    _check(prompt)


# Prompt editing and alternation: brackets, colons, bars, numbers, AND.
_SCHEDULE = st.sampled_from(
    ["[", "]", "(", ")", ":", "|", "\\", " ", "a", "AND", ":0.5]", ":3]", "[a:b:", "[a|", "1e9",
     ".", "-", "BREAK", ":0.8", "\n"]
)  # fmt: skip
SCHEDULED = st.one_of(
    st.lists(_SCHEDULE | st.text(max_size=3), max_size=200).map("".join),
    st.tuples(st.sampled_from(["[a|b]", "[a:b:0.5]", "[[a|b]:c:2]", "[", "(a:1.2)"]),
              st.integers(1, 20_000)).map(lambda t: t[0] * t[1]),
)  # fmt: skip


def _check_plan(prompt: str, steps: int) -> None:
    plan = bounded(plan_prompts, prompt, prompt[:50], steps, seconds=5.0, megabytes=256)
    if isinstance(plan, BaseException):
        return  # a typed error (InvalidOptionError) is an answer
    assert len(plan.calls) == steps + 1 and len(plan.negative_calls) == steps + 1
    assert len(plan.positives) + len(plan.negatives) <= MAX_DISTINCT_PROMPTS
    for parts in plan.calls:
        assert parts and all(0 <= i < len(plan.positives) for i, _ in parts)
        assert all(math.isfinite(w) for _, w in parts)
    for text in plan.positives:
        _check(text)


@settings(max_examples=budget(200))
@given(SCHEDULED, st.integers(1, 2000))
def test_any_scheduled_prompt_plans_or_is_a_typed_error(prompt: str, steps: int) -> None:
    _check_plan(prompt, steps)
