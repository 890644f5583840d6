"""Prompt editing, alternation and ``AND``: which prompt text conditions each denoising step.

A1111's syntax (``modules/prompt_parser.py`` of AUTOMATIC1111/stable-diffusion-webui, read at
commit 28bd8e142d5f77b71ae8d7d7140b5da1b3a49906, the v1.10 line), read here without its code:

- ``[from:to:when]``: ``from`` until step ``when``, then ``to``; ``[to:when]`` adds ``to`` at
  ``when``, ``[from::when]`` removes ``from``. A number with a ``.`` is a fraction of the steps
  (``0.5``: half way; ``1.5`` never switches), one without is a step (``10``). Edits nest.
- ``[a|b|c]``: alternation, ``a`` at step 1, ``b`` at step 2, ... (``[fe|]male``).
- ``A AND B :0.8``: composable diffusion: each sub-prompt is a separate conditioning, and the
  noise predictions combine as ``uncond + sum(w_i * (cond_i - uncond)) * cfg``. A trailing
  ``:weight`` (default 1) is read even without ``AND``. The negative prompt has no ``AND``.

Steps are counted as A1111 counts them: a schedule spans ``steps * order`` model calls (second
order samplers such as Heun and DPM2 call the model twice a step, and A1111 doubles their total,
``SamplerData.total_steps``), and call ``i`` (from 0) uses the first schedule entry whose end
step is ``>= i`` (``reconstruct_cond_batch``). In img2img the count starts at the first step that
runs, and the schedule spans all ``steps``, as in A1111.

A prompt that A1111's grammar cannot read (a ``|`` outside brackets, a trailing backslash) is
one plain prompt, as in A1111. Parsing is linear in the prompt's length; a prompt with more
than :data:`MAX_EDITS` edits and alternations, more than :data:`MAX_SUBPROMPTS` ``AND`` parts or
more than :data:`MAX_DISTINCT_PROMPTS` distinct texts over the steps is refused.

Example:
    >>> prompt_schedule("a [cat:dog:0.5]", 10)
    ((5, 'a cat'), (10, 'a dog'))
    >>> split_and("a castle AND a dragon :0.8")
    (SubPrompt(text='a castle', weight=1.0), SubPrompt(text=' a dragon', weight=0.8))
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from ._attention import MAX_OPEN_BRACKETS, MAX_PROMPT_CHARS, MAX_WEIGHT
from .errors import InvalidOptionError

__all__ = [
    "MAX_DISTINCT_PROMPTS",
    "MAX_EDITS",
    "MAX_SUBPROMPTS",
    "PromptPlan",
    "SubPrompt",
    "plan_prompts",
    "prompt_schedule",
    "split_and",
    "text_at",
]

MAX_SUBPROMPTS = 16
"""Most ``AND`` parts: each is one more UNet evaluation (batch entry) at every step."""
MAX_EDITS = 256
"""Most prompt edits and alternations in one prompt."""
MAX_DISTINCT_PROMPTS = 64
"""Most distinct texts a call encodes over all its steps (each is a text-encoder pass)."""

_AND = re.compile(r"\bAND\b")
_AND_WEIGHT = re.compile(r"[-+]?(?:\d+\.?|\d*\.\d+)")  # A1111's re_weight number
# lark's SIGNED_NUMBER, ASCII digits, with the optional white space around it before "]"
_WHEN = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*\]")
_PLAIN = re.compile(r"[^\\\[\]():|]+")
_STOP = ":|])"  # what ends a nested prompt


@dataclass(frozen=True)
class SubPrompt:
    """One ``AND`` part: its text and its weight in the composition."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class _Edit:
    before: _Seq | None
    after: _Seq
    number: str


@dataclass(frozen=True)
class _Alt:
    options: tuple[_Seq, ...]


_Node = str | _Edit | _Alt
_Seq = tuple[_Node, ...]


class _Fail(Exception):
    """The grammar cannot read the prompt: it is one plain prompt."""


class _Parser:
    """Recursive descent over A1111's schedule grammar, memoised per bracket (linear)."""

    def __init__(self, text: str, option: str) -> None:
        self.text = text
        self.option = option
        self.brackets: dict[int, tuple[_Node | _Seq, int] | None] = {}
        self.edits = 0

    def parse(self) -> _Seq:
        text, out, pos = self.text, [], 0
        while pos < len(text):
            char = text[pos]
            if char in "([":
                found = self.bracket(pos, 0)
                if found is not None:
                    out.append(found[0])
                    pos = found[1]
                    continue
                out.append(char)  # a stray bracket, as A1111's start rule allows
                pos += 1
            elif char in "]):":
                out.append(char)
                pos += 1
            elif char == "|":
                raise _Fail
            else:
                pos = self.plain(pos, out)
        return _flat(out)

    def plain(self, pos: int, out: list[_Node | _Seq]) -> int:
        text = self.text
        if text[pos] == "\\":
            if pos + 1 >= len(text) or text[pos + 1] == "\n":
                raise _Fail  # A1111's plain is ([^...]|\\.)+: a backslash needs a character
            out.append(text[pos : pos + 2])
            return pos + 2
        match = _PLAIN.match(text, pos)
        assert match is not None
        out.append(match.group(0))
        return match.end()

    def inner(self, pos: int, depth: int) -> tuple[_Seq, int] | None:
        # A nested prompt: plain text and brackets up to one of ":|])" (or the end).
        text, out = self.text, []
        while pos < len(text) and text[pos] not in _STOP:
            if text[pos] in "([":
                found = self.bracket(pos, depth)
                if found is None:
                    return None
                out.append(found[0])
                pos = found[1]
            else:
                try:
                    pos = self.plain(pos, out)
                except _Fail:
                    return None
        return _flat(out), pos

    def bracket(self, pos: int, depth: int) -> tuple[_Node | _Seq, int] | None:
        if pos not in self.brackets:
            self.brackets[pos] = None if depth >= MAX_OPEN_BRACKETS else self._bracket(pos, depth)
        return self.brackets[pos]

    def _bracket(self, pos: int, depth: int) -> tuple[_Node | _Seq, int] | None:
        text = self.text
        first = self.inner(pos + 1, depth + 1)
        if first is None or first[1] >= len(text):
            return None
        seq, end = first
        close = text[end]
        if text[pos] == "(":
            if close == ")":
                return ("(", *seq, ")"), end + 1
            if close != ":":
                return None
            second = self.inner(end + 1, depth + 1)
            if second is None or second[1] >= len(text) or text[second[1]] != ")":
                return None
            return ("(", *seq, ":", *second[0], ")"), second[1] + 1
        if close == "]":
            return ("[", *seq, "]"), end + 1
        if close == "|":
            options = [seq]
            while end < len(text) and text[end] == "|":
                more = self.inner(end + 1, depth + 1)
                if more is None:
                    return None
                options.append(more[0])
                end = more[1]
            if end >= len(text) or text[end] != "]":
                return None
            return self._count(_Alt(tuple(options))), end + 1
        if close != ":":
            return None
        when = _WHEN.match(text, end + 1)
        if when is not None:
            return self._count(_Edit(None, seq, when.group(1))), when.end()
        second = self.inner(end + 1, depth + 1)
        if second is None or second[1] >= len(text) or text[second[1]] != ":":
            return None
        when = _WHEN.match(text, second[1] + 1)
        if when is None:
            return None
        return self._count(_Edit(seq, second[0], when.group(1))), when.end()

    def _count(self, node: _Node) -> _Node:
        self.edits += 1  # counted in failed attempts too: a bound, not an exact count
        if self.edits > MAX_EDITS:
            raise InvalidOptionError(
                self.option, f"<more than {MAX_EDITS} edits and alternations>",
                f"at most {MAX_EDITS}",
                hint="each [a:b:N] and [a|b] can change the text at every step; use fewer.",
            )  # fmt: skip
        return node


def _flat(items: list[_Node | _Seq]) -> _Seq:
    # Splice bracket sequences in and join neighbouring static text.
    out: list[_Node] = []
    run: list[str] = []
    for item in items:
        for node in item if isinstance(item, tuple) else (item,):
            if isinstance(node, str):
                run.append(node)
                continue
            if run:
                out.append("".join(run))
                run = []
            out.append(node)
    if run:
        out.append("".join(run))
    return tuple(out)


def _when(number: str, steps: int) -> int:
    # A1111's new scheduling: with a "." a fraction of the steps, else a step; int() truncates.
    value = float(number) * (steps if "." in number else 1)
    if not value < steps:
        return steps
    return int(value) if value >= 1 else 0


def _collect(seq: _Seq, steps: int, ends: set[int]) -> None:
    for node in seq:
        if isinstance(node, _Edit):
            when = _when(node.number, steps)
            if when >= 1:
                ends.add(when)
            if node.before is not None:
                _collect(node.before, steps, ends)
            _collect(node.after, steps, ends)
        elif isinstance(node, _Alt):
            ends.update(range(1, steps + 1))
            for option in node.options:
                _collect(option, steps, ends)


def _render(seq: _Seq, step: int, steps: int, out: list[str]) -> None:
    for node in seq:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Edit):
            if step <= _when(node.number, steps):
                _render(node.before or (), step, steps, out)
            else:
                _render(node.after, step, steps, out)
        else:
            _render(node.options[(step - 1) % len(node.options)], step, steps, out)


def _check_length(text: str, option: str) -> None:
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidOptionError(
            option, f"<{len(text)} characters>", f"at most {MAX_PROMPT_CHARS} characters",
            hint="shorten the prompt: CLIP reads it 75 tokens (about 300 characters) at a time.",
        )  # fmt: skip


def prompt_schedule(prompt: str, steps: int, option: str = "prompt") -> tuple[tuple[int, str], ...]:
    """The texts of one prompt over ``steps``, as A1111's ``get_learned_conditioning_prompt_schedules``.

    Args:
        prompt: one prompt (an ``AND`` part, or a negative prompt).
        steps: the schedule's length (A1111: steps times the sampler's order).
        option: the option named in errors.

    Returns:
        ``(end_at_step, text)`` pairs, end steps ascending, the last one ``steps``.

    Raises:
        InvalidOptionError: more than :data:`MAX_EDITS` edits and alternations, or a prompt
            longer than :data:`~sdkit.prompts.MAX_PROMPT_CHARS`.
    """
    _check_length(prompt, option)
    try:
        tree = _Parser(prompt, option).parse()
    except _Fail:
        return ((steps, prompt),)
    if all(isinstance(node, str) for node in tree):
        return ((steps, prompt),)
    ends = {steps}
    _collect(tree, steps, ends)
    schedule = []
    for end in sorted(ends):
        out: list[str] = []
        _render(tree, end, steps, out)
        schedule.append((end, "".join(out)))
    return tuple(schedule)


def text_at(schedule: tuple[tuple[int, str], ...], call: int) -> str:
    """The text model call ``call`` (from 0) uses: the first entry ending at or after it (A1111)."""
    index = bisect.bisect_left(schedule, call, key=lambda entry: entry[0])
    # past the end: A1111 falls back to the first entry
    return schedule[index][1] if index < len(schedule) else schedule[0][1]


def split_and(prompt: str, option: str = "prompt") -> tuple[SubPrompt, ...]:
    """Split a prompt at ``AND`` into sub-prompts, each with its ``:weight`` (A1111's rules).

    The weight is a number after a last ``:`` at the end of a part (white space around it is
    dropped, as is the part's trailing white space); without it the weight is 1.

    Raises:
        InvalidOptionError: more than :data:`MAX_SUBPROMPTS` parts, or a weight beyond
            ±:data:`~sdkit.prompts.MAX_WEIGHT`.
    """
    _check_length(prompt, option)
    parts = _AND.split(prompt)
    if len(parts) > MAX_SUBPROMPTS:
        raise InvalidOptionError(
            option, f"<{len(parts)} AND parts>", f"at most {MAX_SUBPROMPTS}",
            hint="each AND part is one more UNet evaluation at every step.",
        )  # fmt: skip
    subs = []
    for part in parts:
        text, weight = part.rstrip(), 1.0
        colon = text.rfind(":")
        if colon >= 0 and _AND_WEIGHT.fullmatch(number := text[colon + 1 :].lstrip()):
            text, weight = text[:colon].rstrip(), float(number)
            if not abs(weight) <= MAX_WEIGHT:
                raise InvalidOptionError(
                    option, f":{number[:20]}", f"an AND weight within ±{MAX_WEIGHT:g}",
                    hint="weights like 'a AND b :0.8'; 0.5 to 1.5 is the useful range.",
                )  # fmt: skip
        subs.append(SubPrompt(text, weight))
    return tuple(subs)


@dataclass(frozen=True)
class PromptPlan:
    """A call's prompts over its model calls: distinct texts, and which ones each call uses.

    Attributes:
        positives: the distinct positive texts (``AND`` parts at some step), each encoded once.
        negatives: the distinct negative texts.
        calls: per model call ``i`` (0 to the schedule's length): ``(positive index, weight)``
            per ``AND`` part. A later call takes entry 0, as A1111 does.
        negative_calls: per model call ``i``: the negative index.
        plain: no editing, alternation or ``AND`` weight: the prompt is used as it is.
    """

    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    calls: tuple[tuple[tuple[int, float], ...], ...]
    negative_calls: tuple[int, ...]
    plain: bool


def plan_prompts(prompt: str, negative_prompt: str, total_steps: int) -> PromptPlan:
    """Parse a call's prompt and negative prompt into a :class:`PromptPlan` over ``total_steps``.

    Example:
        >>> plan = plan_prompts("[fe|]male AND cat:0.5", "", 4)
        >>> plan.positives
        ('female', ' cat', 'male')
        >>> plan.calls[2]  # call 2 (the third): "male" at 1, " cat" at 0.5
        ((2, 1.0), (1, 0.5))
    """
    if total_steps < 1:
        raise InvalidOptionError("steps", total_steps, "at least 1")
    subs = split_and(prompt)
    schedules = [prompt_schedule(sub.text, total_steps) for sub in subs]
    negative = prompt_schedule(negative_prompt, total_steps, "negative_prompt")
    positives: dict[str, int] = {}
    negatives: dict[str, int] = {}
    calls, negative_calls = [], []
    for call in range(total_steps + 1):  # call total_steps still has an entry (PLMS makes it)
        calls.append(
            tuple(
                (positives.setdefault(text_at(schedule, call), len(positives)), sub.weight)
                for sub, schedule in zip(subs, schedules, strict=True)
            )
        )
        negative_calls.append(negatives.setdefault(text_at(negative, call), len(negatives)))
    count = len(positives) + len(negatives)
    characters = sum(map(len, positives)) + sum(map(len, negatives))
    if characters > 4 * MAX_PROMPT_CHARS:  # before any tokenizer reads them
        raise InvalidOptionError(
            "prompt", f"<{characters} characters over {count} distinct prompts>",
            f"at most {4 * MAX_PROMPT_CHARS} in all",
            hint="shorten the prompt, or use fewer edits and alternations of a long one.",
        )  # fmt: skip
    if count > MAX_DISTINCT_PROMPTS:
        raise InvalidOptionError(
            "prompt", f"<{count} distinct prompts over {total_steps} steps>",
            f"at most {MAX_DISTINCT_PROMPTS}",
            hint="each distinct text is one more text-encoder pass; use fewer alternations.",
        )  # fmt: skip
    plain = (
        len(subs) == 1
        and subs[0].weight == 1.0
        and schedules[0] == ((total_steps, prompt.rstrip()),)
        and negative == ((total_steps, negative_prompt),)
    )
    if plain:  # the prompt as given (its trailing white space too), not as AND split it
        positives, negatives = {prompt: 0}, {negative_prompt: 0}
    return PromptPlan(
        tuple(positives), tuple(negatives), tuple(calls), tuple(negative_calls), plain
    )
