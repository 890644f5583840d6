"""Prompt weighting and long prompts, read the way AUTOMATIC1111's web UI reads them.

The grammar (A1111's "attention" syntax):

- ``(text)``: weight x 1.1; nesting multiplies, so ``((text))`` is x 1.1 x 1.1.
- ``[text]``: weight / 1.1.
- ``(text:1.3)``: weight x 1.3; white space may surround the number (``(text: 1.3 )``), as
  in A1111 since v1.6.
- ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\\\``: the literal character.
- ``BREAK``: end the current 75-token chunk here. Inside brackets A1111 scales BREAK's marker
  weight (-1) with the text and then no longer sees a BREAK: ``(a BREAK b)`` is the word
  "BREAK" at weight -1.1, in one chunk. sdkit does the same, so that prompts from A1111 give
  A1111's conditioning; put BREAK outside brackets to split.

Prompt editing (``[a:b:0.5]``), alternation (``[a|b]``) and ``AND`` are read by
:mod:`sdkit.prompt_schedule` before this module sees the text of each step.

Unbalanced brackets are tolerated as A1111 does: an unmatched close bracket is plain text, an
unclosed open bracket applies to the rest of the prompt. A backslash before any other character
is dropped, as in A1111.

Prompts are outside text (pasted from the web, read back from infotext), so the parser has
bounds that A1111 lacks: it is linear in the prompt's length (A1111's is quadratic in the
number of brackets), a prompt has at most :data:`MAX_PROMPT_CHARS` characters, at most
:data:`MAX_OPEN_BRACKETS` brackets open at once and at most :data:`MAX_PROMPT_CHUNKS` chunks,
and every weight is finite and within ±:data:`MAX_WEIGHT`. Beyond them,
:class:`~sdkit.errors.InvalidOptionError` names the prompt and the token.

Prompts longer than CLIP's window are split into chunks of 75 tokens; each chunk is encoded on
its own as ``[BOS] + 75 tokens + [EOS]`` (padded) and the results are concatenated along the
sequence axis, so ``prompt_embeds`` has ``77 * k`` positions. When a chunk fills up, its end
moves back to the last comma if that is at most 20 tokens back (A1111's default). No library on PyPI does this
faithfully for both SD and SDXL (``compel`` has its own syntax and weighting), hence this module.

Example:
    >>> parse_prompt_attention("a (red:1.5) cat")
    [('a ', 1.0), ('red', 1.5), (' cat', 1.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sdkit.errors import InvalidOptionError, SdkitError

from ._attention import (
    BREAK,
    MAX_OPEN_BRACKETS,
    MAX_PROMPT_CHARS,
    MAX_WEIGHT,
    _parse,
    _Run,
)
from ._attention import ROUND_BRACKET_MULTIPLIER as ROUND_BRACKET_MULTIPLIER
from ._attention import SQUARE_BRACKET_MULTIPLIER as SQUARE_BRACKET_MULTIPLIER
from ._attention import extract_lora_tags as extract_lora_tags

__all__ = [
    "BREAK",
    "MAX_OPEN_BRACKETS",
    "MAX_PROMPT_CHARS",
    "MAX_PROMPT_CHUNKS",
    "MAX_WEIGHT",
    "PromptEmbeddings",
    "encode_prompt_texts",
    "encode_prompts",
    "extract_lora_tags",
    "parse_prompt_attention",
]

COMMA_BACKTRACK = 20
"""A1111's default: a chunk boundary moves back to a comma at most this many tokens earlier."""
MAX_PROMPT_CHUNKS = 64
"""Most 75-token chunks per prompt (4,800 tokens; A1111 prompts rarely pass 10): each one adds a
text-encoder pass and 77 positions to every cross-attention of every UNet step."""
_MAX_CALL_CHUNKS = 4 * MAX_PROMPT_CHUNKS  # all distinct texts of one call together

# One chunk: up to 75 token ids and their weights (no BOS/EOS).
_Chunk = tuple[list[int], list[float]]


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into runs of text and their A1111 attention weights.

    Adjacent runs with the same weight are merged; ``BREAK`` appears as :data:`BREAK`
    (``("BREAK", -1.0)``). Weights are products of the bracket factors in the order the brackets
    close, exactly as A1111 computes them (``((x))`` is ``1.1 * 1.1``).

    Parsing is linear in the prompt's length, whatever the brackets.

    Args:
        text: the prompt.

    Returns:
        ``(text, weight)`` pairs; ``[("", 1.0)]`` for an empty prompt.

    Raises:
        InvalidOptionError: the prompt is longer than :data:`MAX_PROMPT_CHARS`, opens more than
            :data:`MAX_OPEN_BRACKETS` brackets at once, or gives a run a weight beyond
            ±:data:`MAX_WEIGHT` (``(a:99…9)`` overflowing to infinity included).

    Example:
        >>> for run in parse_prompt_attention("a ((house)) [on] a (hill:0.5) BREAK sky"):
        ...     print(run)
        ('a ', 1.0)
        ('house', 1.2100000000000002)
        (' ', 1.0)
        ('on', 0.9090909090909091)
        (' a ', 1.0)
        ('hill', 0.5)
        ('BREAK', -1.0)
        ('sky', 1.0)
    """
    return [BREAK if run is None else run for run in _parse(text)]


@dataclass(frozen=True)
class PromptEmbeddings:
    """Text embeddings ready for a diffusers pipeline.

    Attributes:
        prompt_embeds: ``(batch, 77 * k, dim)``.
        negative_prompt_embeds: same shape; ``None`` when guidance is off.
        pooled_prompt_embeds: ``(batch, dim2)``, SDXL only.
        negative_pooled_prompt_embeds: as above, for the negative prompt.
    """

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None

    def as_pipeline_kwargs(self) -> dict[str, torch.Tensor]:
        """The non-``None`` tensors, keyed by the pipeline's argument names.

        Example:
            >>> PromptEmbeddings(torch.zeros(1, 77, 8)).as_pipeline_kwargs().keys()
            dict_keys(['prompt_embeds'])
        """
        fields = {
            "prompt_embeds": self.prompt_embeds,
            "negative_prompt_embeds": self.negative_prompt_embeds,
            "pooled_prompt_embeds": self.pooled_prompt_embeds,
            "negative_pooled_prompt_embeds": self.negative_pooled_prompt_embeds,
        }
        return {name: value for name, value in fields.items() if value is not None}


def _text_encoders(pipe: Any) -> list[tuple[Any, Any]]:
    # SDXL is recognised by its second encoder; the refiner has only that one.
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
        return [(tok, model) for tok, model in pairs if tok is not None and model is not None]
    if getattr(pipe, "text_encoder", None) is None or getattr(pipe, "tokenizer", None) is None:
        raise SdkitError(
            f"{type(pipe).__name__} has no CLIP tokenizer and text encoder to encode prompts with",
            hint="pass a Stable Diffusion 1.x/2.x or SDXL pipeline loaded with its text encoder",
        )
    return [(pipe.tokenizer, pipe.text_encoder)]


def _split_chunks(
    stream: Sequence[tuple[int, float] | None], size: int, comma: int | None, backtrack: int
) -> list[_Chunk]:
    chunks: list[_Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1  # index of the last comma in the current chunk
    for item in stream:
        if item is None:  # BREAK ends the chunk, even an empty one (as A1111)
            chunks.append((ids, weights))
            ids, weights, last_comma = [], [], -1
            continue
        token, weight = item
        if len(ids) == size:  # full, and more is coming: start a new chunk
            keep = size
            if token != comma and last_comma >= 0 and size - last_comma <= backtrack:
                keep = last_comma + 1  # carry the words after the last comma over
            chunks.append((ids[:keep], weights[:keep]))
            ids, weights, last_comma = ids[keep:], weights[keep:], -1
        if token == comma:
            last_comma = len(ids)
        ids.append(token)
        weights.append(weight)
    if ids or not chunks:
        chunks.append((ids, weights))
    return chunks


def _emphasize(z: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    # A1111 "Original" emphasis: scale each token, then restore the chunk's mean.
    if all(w == 1.0 for w in weights):
        return z  # untouched, so that unweighted prompts stay bit-identical
    z32 = z.float()
    multipliers = torch.tensor(weights, dtype=torch.float32, device=z.device).reshape(1, -1, 1)
    original_mean = z32.mean()
    weighted = z32 * multipliers
    new_mean = weighted.mean()
    # Real encoders' final layer norms have a bias, so the mean is well away from zero. A mean
    # near zero (e.g. an untrained encoder) would turn the ratio into noise or NaN: skip it.
    if new_mean.abs() <= 1e-4 * weighted.abs().mean():
        return weighted.to(z.dtype)
    return (weighted * (original_mean / new_mean)).to(z.dtype)


def _module_device(module: Any, fallback: torch.device) -> torch.device:
    try:
        from diffusers.utils.torch_utils import get_module_execution_device
    except ImportError:  # older diffusers
        return fallback
    device: torch.device = get_module_execution_device(module)
    return device


class _TextEncoder:
    """One tokenizer + CLIP text encoder: prompts to chunks, chunks to hidden states."""

    def __init__(self, pipe: Any, pair: tuple[Any, Any], skip: int, device: torch.device) -> None:
        self.tokenizer, self.model = pair
        self.xl = getattr(pipe, "text_encoder_2", None) is not None  # no final norm; pooled
        self.convert = getattr(pipe, "maybe_convert_prompt", None)  # textual inversion
        self.skip = skip
        self.size = int(self.tokenizer.model_max_length) - 2
        self.bos, self.eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        self.pad = self.eos if pad is None else pad
        comma = self.tokenizer.convert_tokens_to_ids(",</w>")
        self.comma = None if comma == self.tokenizer.unk_token_id else comma
        self.device = _module_device(self.model, device)
        self.use_mask = bool(getattr(self.model.config, "use_attention_mask", False))
        self.cache: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor | None]] = {}

    def chunks(self, runs: Sequence[_Run], backtrack: int) -> list[_Chunk]:
        stream: list[tuple[int, float] | None] = []
        for run in runs:
            if run is None:
                stream.append(None)
                continue
            piece = run[0] if self.convert is None else self.convert(run[0], self.tokenizer)
            ids = self.tokenizer(piece, add_special_tokens=False, truncation=False, verbose=False)
            stream.extend((int(token), run[1]) for token in ids.input_ids)
        return _split_chunks(stream, self.size, self.comma, backtrack)

    def encode(self, chunk: _Chunk) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids, weights = chunk
        padding = self.size - len(ids)
        key = (self.bos, *ids, self.eos, *([self.pad] * padding))
        if key not in self.cache:
            self.cache[key] = self._run(key, len(ids) + 2)
        hidden, pooled = self.cache[key]
        return _emphasize(hidden, [1.0, *weights, *([1.0] * (padding + 1))]), pooled

    def _run(self, key: tuple[int, ...], used: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        model, skip = self.model, self.skip
        input_ids = torch.tensor([key], dtype=torch.long, device=self.device)
        if self.xl:  # as diffusers' SDXL encode_prompt: no final norm, no mask
            out = model(input_ids, output_hidden_states=True)
            pooled = out[0] if out[0].ndim == 2 else None
            return out.hidden_states[-(skip + 1)], pooled
        mask = None
        if self.use_mask:
            mask = torch.zeros_like(input_ids)
            mask[:, :used] = 1
        if skip == 1:
            return model(input_ids, attention_mask=mask)[0], None
        out = model(input_ids, attention_mask=mask, output_hidden_states=True)
        norm = getattr(model, "text_model", model).final_layer_norm  # transformers 4 and 5
        return norm(out.hidden_states[-skip]), None


def _check_chunks(option: str, per_encoder: Sequence[Sequence[_Chunk]]) -> None:
    # Each chunk is one text-encoder pass and 77 more positions for every cross-attention
    # layer of the UNet, at every step: the cost of a prompt is in its chunks, not its length.
    count = max((len(chunks) for chunks in per_encoder), default=0)
    if count > MAX_PROMPT_CHUNKS:
        raise InvalidOptionError(
            option,
            f"<{count} chunks of 75 tokens>",
            f"at most {MAX_PROMPT_CHUNKS} chunks ({MAX_PROMPT_CHUNKS * 75} tokens, BREAK ends one)",
            hint="shorten the prompt: every 75 tokens cost a text-encoder pass and UNet memory.",
        )


def _check_clip_skip(clip_skip: int | None, pairs: Sequence[tuple[Any, Any]]) -> int:
    layers = min(int(model.config.num_hidden_layers) for _, model in pairs)
    if clip_skip is None:
        return 1
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or not 0 < clip_skip <= layers:
        raise InvalidOptionError(
            "clip_skip",
            clip_skip,
            f"None or an integer from 1 to {layers}",
            hint="use A1111's numbering: 1 is the last layer, 2 the one before it",
        )
    return clip_skip


@torch.no_grad()
def encode_prompts(
    pipe: Any,
    prompt: str,
    negative_prompt: str | None = None,
    *,
    clip_skip: int | None = None,
    do_classifier_free_guidance: bool = True,
    device: torch.device | None = None,
    comma_backtrack: int = COMMA_BACKTRACK,
) -> PromptEmbeddings:
    """Encode a prompt (and its negative) with A1111 weighting and no 77-token limit.

    Works on SD 1.x/2.x pipelines (one CLIP encoder) and SDXL pipelines (two encoders, or only
    the second for the refiner), recognised by their ``text_encoder_2`` attribute. A plain prompt
    that fits one chunk gives exactly what ``pipe.encode_prompt`` gives.

    Args:
        pipe: a diffusers Stable Diffusion or SDXL pipeline (txt2img, img2img or inpaint).
        prompt: the prompt, in A1111 syntax.
        negative_prompt: the negative prompt; ``None`` is the empty prompt. For SDXL with
            ``force_zeros_for_empty_prompt``, an empty negative gives zero embeddings.
        clip_skip: A1111's CLIP skip: ``None`` or 1 uses the last layer (SDXL: the penultimate,
            as always for SDXL), 2 the one before it, and so on. Applies to both prompts.
        do_classifier_free_guidance: whether to encode the negative prompt at all.
        device: where the embeddings go; the pipeline's execution device by default.
        comma_backtrack: when a chunk fills up, move its end back to the last comma if that is
            at most this many tokens back (A1111's default 20; 0 turns it off).

    Returns:
        The embeddings, in the text encoder's dtype, on ``device``; the positive and negative
        have the same number of chunks (the shorter one is padded with empty chunks).

    Raises:
        InvalidOptionError: a prompt is refused by :func:`parse_prompt_attention` (length,
            brackets, weights), before the pipeline is touched, or needs more than
            :data:`MAX_PROMPT_CHUNKS` chunks, before the text encoder runs.

    Example:
        >>> from diffusers import StableDiffusionPipeline
        >>> from sdkit.models import DEFAULT_MODEL_DIR
        >>> pipe = StableDiffusionPipeline.from_pretrained(DEFAULT_MODEL_DIR)
        >>> embeds = encode_prompts(pipe, "a (red:1.3) cat BREAK sky", "blur")
        >>> embeds.prompt_embeds.shape[1]  # BREAK made a second 77-token chunk
        154
        >>> embeds.negative_prompt_embeds.shape == embeds.prompt_embeds.shape
        True
    """
    positives, negatives = encode_prompt_texts(
        pipe,
        [prompt],
        [negative_prompt or ""],
        clip_skip=clip_skip,
        do_classifier_free_guidance=do_classifier_free_guidance,
        device=device,
        comma_backtrack=comma_backtrack,
    )
    prompt_embeds, pooled_embeds = positives[0]
    negative_embeds, negative_pooled = negatives[0] if negatives else (None, None)
    return PromptEmbeddings(prompt_embeds, negative_embeds, pooled_embeds, negative_pooled)


_Encoded = tuple[torch.Tensor, torch.Tensor | None]


@torch.no_grad()
def encode_prompt_texts(
    pipe: Any,
    prompts: Sequence[str],
    negative_prompts: Sequence[str],
    *,
    clip_skip: int | None = None,
    do_classifier_free_guidance: bool = True,
    device: torch.device | None = None,
    comma_backtrack: int = COMMA_BACKTRACK,
) -> tuple[list[_Encoded], list[_Encoded]]:
    """Encode several prompts and negatives at once, all to the same number of chunks.

    What :func:`encode_prompts` does for one pair, for the distinct texts of a prompt schedule
    (:mod:`sdkit.prompt_schedule`): every result has the chunk count of the longest, so that
    any positive and negative can share a UNet batch. Each chunk is encoded once per call.

    Args:
        pipe: as for :func:`encode_prompts`.
        prompts: positive texts (A1111 attention syntax, no editing).
        negative_prompts: negative texts; an empty one is zeros for SDXL with
            ``force_zeros_for_empty_prompt``.
        clip_skip: as for :func:`encode_prompts`.
        do_classifier_free_guidance: whether to encode the negatives at all.
        device: as for :func:`encode_prompts`.
        comma_backtrack: as for :func:`encode_prompts`.

    Returns:
        ``(positives, negatives)``: ``(hidden, pooled)`` per text, in order (``pooled`` is
        ``None`` except for SDXL); ``negatives`` is empty without guidance.

    Raises:
        InvalidOptionError: as :func:`encode_prompts`, before the text encoder runs.
    """
    # 1. Check the inputs (syntax, length, weights) and pick the text encoders
    positive_runs = [_parse(text, "prompt") for text in prompts]
    negative_runs = [_parse(text, "negative_prompt") for text in negative_prompts]
    pairs = _text_encoders(pipe)
    skip = _check_clip_skip(clip_skip, pairs)
    device = device if device is not None else pipe._execution_device
    encoders = [_TextEncoder(pipe, pair, skip, device) for pair in pairs]
    xl = encoders[0].xl
    force_zeros = bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
    zero = [xl and not text and force_zeros for text in negative_prompts]
    encoded_negatives = [
        runs
        for runs, zeros in zip(negative_runs, zero, strict=True)
        if do_classifier_free_guidance and not zeros
    ]

    # 2. Tokenize and split into chunks; pad every list to the same number of chunks
    positive = [[e.chunks(runs, comma_backtrack) for e in encoders] for runs in positive_runs]
    negative = [[e.chunks(runs, comma_backtrack) for e in encoders] for runs in encoded_negatives]
    for option, per_text in (("prompt", positive), ("negative_prompt", negative)):
        for per_encoder in per_text:
            _check_chunks(option, per_encoder)
    total = sum(max(len(chunks) for chunks in per_encoder) for per_encoder in positive + negative)
    if total > _MAX_CALL_CHUNKS:  # many distinct texts (a prompt schedule), each one long
        raise InvalidOptionError(
            "prompt", f"<{total} chunks over {len(positive) + len(negative)} distinct texts>",
            f"at most {_MAX_CALL_CHUNKS} chunks of 75 tokens in all",
            hint="shorten the prompt, or use fewer edits and alternations of a long one.",
        )  # fmt: skip
    every = [chunks for per_encoder in positive + negative for chunks in per_encoder]
    count = max(len(chunks) for chunks in every)
    for chunks in every:
        chunks.extend(([], []) for _ in range(count - len(chunks)))

    # 3. Encode chunk by chunk, join along the sequence (and, for SDXL, the feature) axis
    dtype = encoders[-1].model.dtype

    def embed(per_encoder: list[list[_Chunk]]) -> _Encoded:
        columns: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for encoder, chunks in zip(encoders, per_encoder, strict=True):
            outputs = [encoder.encode(chunk) for chunk in chunks]
            columns.append(torch.cat([hidden for hidden, _ in outputs], dim=1))
            pooled = outputs[0][1]  # A1111: the first chunk's; the last encoder's (SDXL)
        hidden = torch.cat(columns, dim=-1).to(dtype=dtype, device=device)
        if xl and pooled is None:
            raise SdkitError(
                "the SDXL text_encoder_2 returned no pooled embedding",
                hint="load text_encoder_2 as CLIPTextModelWithProjection",
            )
        return hidden, None if pooled is None else pooled.to(dtype=dtype, device=device)

    positives = [embed(per_encoder) for per_encoder in positive]
    negatives: list[_Encoded] = []
    if do_classifier_free_guidance:
        encoded = iter([embed(per_encoder) for per_encoder in negative])
        hidden, pooled = positives[0]
        zeros = torch.zeros_like(hidden), None if pooled is None else torch.zeros_like(pooled)
        negatives = [zeros if zeros_here else next(encoded) for zeros_here in zero]
    return positives, negatives
