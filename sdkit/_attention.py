"""A1111's attention syntax, parsed in linear time with bounds for outside text.

The grammar and its A1111 semantics are described in :mod:`sdkit.prompts`, whose
:func:`~sdkit.prompts.parse_prompt_attention` is the public entry point. This module is the
parser: :func:`_parse` gives the runs (``None`` for BREAK) and refuses, with an
:class:`~sdkit.errors.InvalidOptionError` naming the prompt and the token, what no picture can
come from: more than :data:`MAX_PROMPT_CHARS` characters, more than :data:`MAX_OPEN_BRACKETS`
brackets open at once, a weight beyond ±:data:`MAX_WEIGHT` (digits that overflow to infinity
included), a lone surrogate.

Cost: A1111 multiplies every entry from an open bracket's position on when it closes, which is
quadratic (57 s for 100 KB of ``"(a"``); here neighbours that must end with the same weight are
merged as they come (see :class:`_Pieces`), so a bracket costs at most the pieces that differ,
and with at most :data:`MAX_OPEN_BRACKETS` brackets covering any piece the work is linear in
the prompt's length (the worst case the caps allow, 100,000 characters, takes about 0.5 s).
Weights stay A1111's, float for float (the tests compare with the A1111 algorithm).
"""

from __future__ import annotations

import re

from sdkit.errors import InvalidOptionError

BREAK: tuple[str, float] = ("BREAK", -1.0)
"""The entry :func:`~sdkit.prompts.parse_prompt_attention` returns for the ``BREAK`` keyword (as A1111 does)."""

ROUND_BRACKET_MULTIPLIER = 1.1
SQUARE_BRACKET_MULTIPLIER = 1 / 1.1

MAX_PROMPT_CHARS = 100_000
"""Longest prompt (or negative prompt) parsed, in characters (sdkit.prompts also caps the chunks:
a prompt that long is refused there unless most of it is syntax)."""
MAX_WEIGHT = 1000.0
"""Largest attention weight (in magnitude) a run may end up with; A1111 sets no bound, but far
below this the picture is already noise, and an infinite weight makes NaN embeddings."""
MAX_OPEN_BRACKETS = 64
"""Most brackets open at one time. Bounds the work per character (parsing is linear) and, with
:data:`MAX_WEIGHT` per factor, keeps every product of factors finite."""

_SPECIAL = "\\()[]:"
_ESCAPABLE = "\\()[]"
# A1111 since v1.6 (modules/prompt_parser.py, re_attention): white space may surround the number.
_EXPLICIT_WEIGHT = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_BREAK_WORD = re.compile(r"\bBREAK\b")  # the whitespace around it is stripped by hand (linear)
_SHOWN = 40  # characters of a refused token shown in an error

# A parsed prompt: runs of (text, weight); ``None`` stands for BREAK.
_Run = tuple[str, float] | None


class _Pieces:
    """A1111's list of ``[text, weight]``, with neighbours merged as soon as that is exact.

    A1111 multiplies the weight of every entry from a bracket's position on when the bracket
    closes, which is quadratic in the number of entries. Two neighbours with the same weight and
    no bracket opened between them receive the same factors for ever after (each later factor
    applies to everything from an open bracket's position on), so they are merged at once:
    the result is A1111's, float for float, and the work per bracket is bounded by the pieces
    that really differ.
    """

    def __init__(self) -> None:
        self.texts: list[list[str] | None] = []  # None marks a BREAK
        self.weights: list[float] = []

    def add(self, piece: str, open_at: int) -> None:
        # open_at: the position of the innermost open bracket (-1 if none)
        last = len(self.texts) - 1
        if last >= 0 and last + 1 != open_at and self.weights[last] == 1.0:
            texts = self.texts[last]
            if texts is not None:
                texts.append(piece)
                return
        self.texts.append([piece])
        self.weights.append(1.0)

    def add_break(self) -> None:
        self.texts.append(None)
        self.weights.append(BREAK[1])

    def scale_from(self, start: int, factor: float) -> None:
        # BREAK's weight is scaled too, as in A1111: runs() reads it (see there).
        self.weights[start:] = [weight * factor for weight in self.weights[start:]]

    def runs(self) -> list[_Run]:
        runs: list[_Run] = []
        pending: list[str] = []
        weight = 0.0
        for texts, w in zip(self.texts, self.weights, strict=True):
            if pending and (texts is None or w != weight):
                runs.append(("".join(pending), weight))
                pending = []
            if texts is None:
                # A1111 ends a chunk only at a BREAK whose weight is still exactly -1: inside
                # brackets it was scaled with the text, and the word "BREAK" is encoded at that
                # weight (A1111's sd_hijack_clip.tokenize_line); it never merges with neighbours.
                runs.append(None if w == BREAK[1] else ("BREAK", w))
            else:
                pending.extend(texts)
                weight = w
        if pending:
            runs.append(("".join(pending), weight))
        return runs


def _split_breaks(piece: str) -> list[str | None]:
    # re.split(r"\s*\bBREAK\b\s*", piece) without the regex's quadratic retries on long runs
    # of white space: find the words, then strip the white space around them.
    parts: list[str | None] = []
    start = 0
    for match in _BREAK_WORD.finditer(piece):
        parts.append(piece[start : match.start()])
        parts.append(None)
        start = match.end()
    parts.append(piece[start:])
    count = len(parts)
    for i, part in enumerate(parts):
        if part is not None:
            if i > 0:
                part = part.lstrip()
            if i < count - 1:
                part = part.rstrip()
            parts[i] = part
    return parts


def _refuse(option: str, token: str, allowed: str, hint: str) -> InvalidOptionError:
    shown = token if len(token) <= _SHOWN else token[: _SHOWN - 1] + "…"
    return InvalidOptionError(option, shown, allowed, hint=hint)


def _parse(text: str, option: str = "prompt") -> list[_Run]:
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidOptionError(
            option,
            f"<{len(text)} characters>",
            f"at most {MAX_PROMPT_CHARS} characters",
            hint="shorten the prompt: CLIP reads it 75 tokens (about 300 characters) at a time.",
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: no tokenizer can read it
            raise InvalidOptionError(
                option,
                text[max(0, exc.start - 10) : exc.start + 10],
                "Unicode text",
                hint=f"remove the lone surrogate U+{ord(text[exc.start]):04X} at character "
                f"{exc.start} (undecodable bytes, e.g. from a shell argument).",
            ) from None
    pieces = _Pieces()
    round_open: list[int] = []
    square_open: list[int] = []

    def open_at() -> int:
        return max(round_open[-1] if round_open else -1, square_open[-1] if square_open else -1)

    def add_text(piece: str) -> None:
        for part in _split_breaks(piece):
            if part is None:
                pieces.add_break()
            elif part:
                pieces.add(part, open_at())

    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            nxt = text[pos + 1 : pos + 2]
            if nxt and nxt in _ESCAPABLE:
                pieces.add(nxt, open_at())
                pos += 2
            else:  # a lone backslash is dropped, as in A1111
                pos += 1
            continue
        if char in "([":
            if len(round_open) + len(square_open) >= MAX_OPEN_BRACKETS:
                raise _refuse(
                    option,
                    text[max(0, pos - _SHOWN // 2) : pos + 1],
                    f"at most {MAX_OPEN_BRACKETS} brackets open at once",
                    "close brackets, or escape literal ones as \\( \\) \\[ \\].",
                )
            (round_open if char == "(" else square_open).append(len(pieces.texts))
        elif char == ")" and round_open:
            pieces.scale_from(round_open.pop(), ROUND_BRACKET_MULTIPLIER)
        elif char == "]" and square_open:
            pieces.scale_from(square_open.pop(), SQUARE_BRACKET_MULTIPLIER)
        elif char == ":" and round_open and (factor := _explicit_weight(text, pos, option)):
            pieces.scale_from(round_open.pop(), factor[0])
            pos = factor[1]
            continue
        elif char in _SPECIAL:  # ":" (also ":1.3)" with no "(" open), or an unmatched close
            add_text(char)
        else:
            end = pos + 1
            while end < len(text) and text[end] not in _SPECIAL:
                end += 1
            add_text(text[pos:end])
            pos = end
            continue
        pos += 1

    for start in round_open:
        pieces.scale_from(start, ROUND_BRACKET_MULTIPLIER)
    for start in square_open:
        pieces.scale_from(start, SQUARE_BRACKET_MULTIPLIER)

    runs = pieces.runs()
    for run in runs:
        if run is not None and not abs(run[1]) <= MAX_WEIGHT:
            raise _refuse(
                option,
                run[0],
                f"attention weights within ±{MAX_WEIGHT:g} (this text's is {run[1]:.4g})",
                "unclosed '(' multiply the rest of the prompt by 1.1 each: close them, or "
                "escape literal brackets as \\( \\).",
            )
    return runs or [("", 1.0)]


def _explicit_weight(text: str, pos: int, option: str) -> tuple[float, int] | None:
    # ":1.3)" at pos: the factor and where the match ends. A1111 would crash on ":1.2.3)";
    # here it is text (and the ")" closes the bracket with the usual 1.1). A1111's grammar has
    # no "inf" or "nan", but digits can overflow to infinity: refused, as any factor beyond
    # MAX_WEIGHT (the picture would be NaN or noise).
    match = _EXPLICIT_WEIGHT.match(text, pos)
    if match is None:
        return None
    try:
        factor = float(match.group(1))
    except ValueError:
        return None
    if not abs(factor) <= MAX_WEIGHT:
        raise _refuse(
            option,
            match.group(0),
            f"a weight within ±{MAX_WEIGHT:g}",
            "use weights like (word:1.3); 0.5 to 1.5 is the useful range.",
        )
    return factor, match.end()


# -- extra networks: <lora:name:te:unet> -------------------------------------------------------

# A1111 modules/extra_networks.py: re_extra_net = re.compile(r"<(\w+):([^>]+)>"); every tag is
# removed from the prompt before it is parsed (parse_prompt: re.sub(..., "", prompt)); only
# the positive prompt is read for them (modules/processing.py parse_extra_network_prompts), so
# a tag in the negative prompt stays text, as there. sdkit reads the "lora" (and older "lyco")
# tags; others stay text.
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_LORA_TAGS = ("lora", "lyco")


def extract_lora_tags(prompt: str) -> tuple[str, list[tuple[str, float, float]]]:
    """The prompt without its ``<lora:…>`` tags, and each tag's (name, te, unet) multipliers.

    As A1111's ``extra_networks_lora.py`` reads them: ``<lora:name>`` is 1 for both,
    ``<lora:name:w>`` w for both, ``<lora:name:te:unet>`` separate, ``te=`` / ``unet=`` by name.
    A name tagged twice keeps its last tag.

    Raises:
        InvalidOptionError: a multiplier that is not a finite number within ±100.

    Example:
        >>> extract_lora_tags("a cat <lora:film:0.5>, <lora:ink:1:0.25>")
        ('a cat , ', [('film', 0.5, 0.5), ('ink', 1.0, 0.25)])
    """
    found: dict[str, tuple[str, float, float]] = {}

    def take(match: re.Match[str]) -> str:
        if match.group(1) not in _LORA_TAGS:
            return match.group(0)
        items = match.group(2).split(":")
        positional = [i for i in items if "=" not in i]
        named = dict(i.split("=", 1) for i in items if "=" in i)
        name = positional[0].strip() if positional else ""
        if not name:
            raise _refuse("prompt", match.group(0), "a LoRA name", "write <lora:name:weight>.")
        te = _multiplier(
            match.group(0), named.get("te", positional[1] if len(positional) > 1 else "1")
        )
        unet_text = named.get("unet", positional[2] if len(positional) > 2 else None)
        unet = te if unet_text is None else _multiplier(match.group(0), unet_text)
        found.pop(name, None)
        found[name] = (name, te, unet)
        return ""

    # nothing after the last ">" can match: without it, "<a:" repeated would be quadratic
    end = prompt.rfind(">") + 1
    text = _EXTRA_NETWORK.sub(take, prompt[:end]) + prompt[end:]
    return text, list(found.values())


def _multiplier(tag: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = float("nan")
    if not -100.0 <= value <= 100.0:  # NaN fails too
        raise _refuse(
            "prompt", tag, "a LoRA multiplier: a number within ±100",
            "write <lora:name:0.8> (text encoder and UNet) or <lora:name:te:unet>.",
        )  # fmt: skip
    return value
