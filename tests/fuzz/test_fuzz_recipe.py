"""Fuzzing the Recipe readers: JSON (from a C2PA manifest) and A1111 infotext (from any image).

Targets: :meth:`sdkit.recipe.Recipe.from_json`, :meth:`~sdkit.recipe.Recipe.from_infotext`,
:func:`sdkit.recipe.parse_infotext`. Property: a Recipe or :class:`RecipeParseError`, within
2 s and 64 MB, whatever the text.
"""

from __future__ import annotations

import dataclasses
import json

from fuzzing import bounded, budget
from hypothesis import given, settings
from hypothesis import strategies as st

from sdkit.recipe import Recipe, RecipeParseError, parse_infotext

_FIELDS = [f.name for f in dataclasses.fields(Recipe)] + ["recipe_version"]
# JSON values of any shape, deep or wide, with huge integers and odd floats.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.integers(1, 6000).map(lambda n: int("9" * n) if n < 4000 else "9" * n),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _recipe_json(values: dict[str, object]) -> str:
    return json.dumps(values, default=str)


_VALID = Recipe(
    prompt="a cat", negative_prompt="a dog", model="m", model_sha256="0" * 64, pipeline="P",
    scheduler="EulerDiscreteScheduler", scheduler_config={"beta_start": 0.00085}, steps=20,
    guidance_scale=7.0, seed=1, width=64, height=64, clip_skip=2, strength=0.5,
    feature_cache=3, versions={"sdkit": "0.1.0"},
)  # fmt: skip
# A valid Recipe with some fields replaced by any JSON value and some dropped, or any object.
RECIPE_DICTS = st.one_of(
    st.tuples(
        st.dictionaries(st.sampled_from(_FIELDS), JSON_VALUES, max_size=6),
        st.sets(st.sampled_from(_FIELDS), max_size=2),
    ).map(lambda t: {k: v for k, v in {**_VALID.to_dict(), **t[0]}.items() if k not in t[1]}),
    st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=6), JSON_VALUES, max_size=25),
)
DEEP = st.tuples(
    st.sampled_from(["[", '{"a":', '{"scheduler_config":{"a":[']), st.integers(1, 200_000)
).map(lambda t: '{"prompt": ' + t[0] * t[1])
BIG_NUMBER = st.integers(1, 20_000).map(lambda n: '{"steps": ' + "7" * n + "}")
JSON_TEXTS = st.one_of(
    RECIPE_DICTS.map(lambda d: json.dumps(d, default=str)),
    DEEP,
    BIG_NUMBER,
    st.text(max_size=200),
)

# Infotext: a prompt, maybe a negative prompt, and a parameters line of sdkit's and A1111's keys
# with any values ("Scheduler config: 5" and "Versions: 5" raised TypeError on the old code).
_KEYS = [
    "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
    "Clip skip", "Denoising strength", "Guidance rescale", "Mode", "Pipeline", "Scheduler",
    "Scheduler config", "Model sha256", "Dtype", "Sampler name", "Init image sha256",
    "Mask sha256", "Feature cache", "Versions", "Version",
]  # fmt: skip
_VALUES = st.one_of(
    st.sampled_from(["5", "{}", "[1]", '{"a": [1]}', "null", "1.5", "true", "-1", "0", "1e999", "nan", "64x64", "0x0", "x", "none", "[]", "{}",
                     "txt2img", "99999999999999999999x1", "9" * 5000]),
    st.text(max_size=12),
    JSON_VALUES.map(lambda v: json.dumps(v, default=str)),
)  # fmt: skip
_VALID_PARAMS = parse_infotext(_VALID.to_infotext())[2]


def _quote(value: str) -> str:
    return json.dumps(value) if any(c in value for c in ',:\n"') else value


def _params_line(pairs: dict[str, str]) -> str:
    return ", ".join(f"{k}: {_quote(v)}" for k, v in pairs.items())


# sdkit's own infotext with one to three values replaced and maybe one key dropped.
EDITED = st.tuples(
    st.dictionaries(st.sampled_from(_KEYS), _VALUES, min_size=1, max_size=3),
    st.sets(st.sampled_from(_KEYS), max_size=1),
).map(
    lambda t: (
        "a cat\nNegative prompt: a dog\n"
        + _params_line({k: v for k, v in {**_VALID_PARAMS, **t[0]}.items() if k not in t[1]})
    )
)
# Any keys in any order.
_PARAMS = st.one_of(
    st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES), min_size=3, max_size=26).map(
        lambda pairs: ", ".join(f"{k}: {v}" for k, v in pairs)
    ),
)
INFOTEXTS = st.one_of(
    st.tuples(st.text(max_size=60), st.text(max_size=30), _PARAMS).map(
        lambda t: f"{t[0]}\nNegative prompt: {t[1]}\n{t[2]}"
    ),
    st.text(max_size=300),
    # long parameters lines: the old regex took 12.5 s on 40 KB
    st.tuples(
        st.sampled_from(["a ", "a-", "a/b ", 'a: "', "a: b,", "Steps: ", 'k: "\\', " a-b/c: "]),
        st.integers(1, 40_000),
    ).map(lambda t: "p\n" + t[0] * t[1]),
)


@settings(max_examples=budget(200))
@given(JSON_TEXTS)
def test_recipe_json_is_a_recipe_or_a_parse_error(text: str) -> None:
    result = bounded(Recipe.from_json, text, seconds=2.0, megabytes=64)
    assert isinstance(result, (Recipe, RecipeParseError)), repr(result)


@settings(max_examples=budget(100))
@given(EDITED)
def test_edited_infotext_is_a_recipe_or_a_parse_error(text: str) -> None:
    result = bounded(Recipe.from_infotext, text, seconds=2.0, megabytes=64)
    assert isinstance(result, (Recipe, RecipeParseError)), repr(result)


@settings(max_examples=budget(60))
@given(INFOTEXTS)
def test_infotext_is_a_recipe_or_a_parse_error(text: str) -> None:
    result = bounded(Recipe.from_infotext, text, seconds=2.0, megabytes=64)
    assert isinstance(result, (Recipe, RecipeParseError)), repr(result)


@settings(max_examples=budget(50))
@given(INFOTEXTS)
def test_parse_infotext_splits_any_text(text: str) -> None:
    result = bounded(parse_infotext, text, seconds=2.0)
    if not isinstance(result, BaseException):
        prompt, negative, params = result
        assert isinstance(prompt, str) and isinstance(negative, str)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())
