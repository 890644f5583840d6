"""The text conditioning of each UNet call: prompt editing, alternation and ``AND`` at work.

:mod:`sdkit.prompt_schedule` says which texts condition which model call; this module encodes
each distinct text once (:func:`sdkit.prompts.encode_prompt_texts`, all to one chunk count) and,
while a :class:`Conditioning` is active, hands the UNet the right embeddings at every call. The
``AND`` parts of a call are evaluated in the same UNet call (a larger batch, as A1111's
``batch_cond_uncond``) and combined as composable diffusion does (A1111's
``CFGDenoiser.combine_denoised``)::

    uncond + sum(w_i * (cond_i - uncond))        # the pipeline then applies the guidance scale

which, after the pipeline's ``uncond + cfg * (cond - uncond)``, is A1111's
``uncond + sum(w_i * (cond_i - uncond)) * cfg``. Without guidance (no unconditional pass) the
first part stands in for ``uncond``, as in A1111 when it skips the unconditional pass.

Model calls are counted from 0 as A1111's ``CFGDenoiser.step`` counts them: one per call of the
UNet, so a second-order sampler's two calls of a step are two counts, over a schedule of
``steps * scheduler.order`` (A1111's ``SamplerData.total_steps``).

A plain prompt (no editing, alternation or ``AND`` weight) is encoded exactly as
:func:`sdkit.prompts.encode_prompts` encodes it and the UNet is left alone, so its pixels are
those of a pipeline called with those embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import torch

from .prompt_schedule import PromptPlan, plan_prompts
from .prompts import PromptEmbeddings, encode_prompt_texts

__all__ = ["Conditioning", "condition"]

_Encoded = tuple[torch.Tensor, torch.Tensor | None]


class Conditioning:
    """A call's embeddings; a context manager that feeds the UNet those of each model call.

    Attributes:
        embeds: the embeddings of the first model call (what the pipeline is called with).
        plan: the prompt plan (distinct texts, and which ones each call uses).
        calls: UNet calls seen while active.
    """

    def __init__(
        self,
        unet: Any,
        plan: PromptPlan,
        positives: list[_Encoded],
        negatives: list[_Encoded],
    ) -> None:
        self.unet = unet
        self.plan = plan
        self.positives = positives
        self.negatives = negatives
        self.calls = 0
        first, _ = plan.calls[0][0]
        hidden, pooled = positives[first]
        negative = negatives[plan.negative_calls[0]] if negatives else (None, None)
        self.embeds = PromptEmbeddings(hidden, negative[0], pooled, negative[1])
        self._saved: Callable[..., Any] | None = None

    @property
    def active(self) -> bool:
        """Whether the UNet needs wrapping: the conditioning changes over the calls, or AND."""
        return not self.plan.plain

    def __enter__(self) -> Conditioning:
        self.calls = 0
        if self.active:
            self._saved = self.unet.__dict__.get("forward")
            self.unet.forward = self._wrap(self.unet.forward)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.active:
            if self._saved is None:
                del self.unet.forward  # the class's forward again
            else:
                self.unet.forward = self._saved
            self._saved = None

    def _wrap(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        def run(sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
            call = self.calls
            self.calls += 1
            return self._run(forward, call, sample, timestep, args, kwargs)

        return run

    def _run(
        self,
        forward: Callable[..., Any],
        call: int,
        sample: torch.Tensor,
        timestep: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        plan = self.plan
        index = call if call < len(plan.calls) else 0  # past the end: A1111 takes the first
        parts = plan.calls[index]
        guided = bool(self.negatives)
        if args:  # encoder_hidden_states given by position
            kwargs["encoder_hidden_states"], args = args[0], args[1:]
        given: torch.Tensor = kwargs["encoder_hidden_states"]
        rows = sample.shape[0] // (2 if guided else 1)  # images in the batch
        count = len(parts)

        def regroup(tensor: Any) -> Any:
            # [uncond, cond] (or [cond]) rows -> [uncond, cond x count]
            if not isinstance(tensor, torch.Tensor) or tensor.ndim == 0:
                return tensor
            if tensor.shape[0] != sample.shape[0]:
                return tensor
            cond = tensor[-rows:]
            return torch.cat([*([tensor[:rows]] if guided else []), *([cond] * count)])

        hidden: list[torch.Tensor] = []
        pooled: list[torch.Tensor | None] = []
        if guided:
            negative = self.negatives[plan.negative_calls[index]]
            hidden.append(negative[0])
            pooled.append(negative[1])
        for position, _ in parts:
            hidden.append(self.positives[position][0])
            pooled.append(self.positives[position][1])
        kwargs["encoder_hidden_states"] = _rows(hidden, rows, given)
        added = kwargs.get("added_cond_kwargs")
        if added is not None:
            added = {name: regroup(value) for name, value in added.items()}
            if "text_embeds" in added and all(p is not None for p in pooled):
                added["text_embeds"] = _rows(pooled, rows, added["text_embeds"])
            kwargs["added_cond_kwargs"] = added
        for name in ("timestep_cond",):
            if name in kwargs:
                kwargs[name] = regroup(kwargs[name])
        output = forward(regroup(sample), regroup(timestep), *args, **kwargs)
        if count == 1 and parts[0][1] == 1.0:
            return output  # one part at weight 1: the model's own prediction
        predicted = output[0] if isinstance(output, tuple) else output.sample
        pieces = list(predicted.split(rows))
        base = pieces[0]
        combined = base.clone()
        for (_, weight), cond in zip(parts, pieces[1:] if guided else pieces, strict=True):
            combined += (cond - base) * weight
        result = torch.cat([base, combined]) if guided else combined
        if isinstance(output, tuple):
            return (result, *output[1:])
        output.sample = result
        return output


def _rows(tensors: list[Any], rows: int, like: torch.Tensor) -> torch.Tensor:
    # Each (1, ...) embedding repeated for the batch's images, in the order given.
    return torch.cat([t.to(like.device, like.dtype).expand(rows, *t.shape[1:]) for t in tensors])


def condition(
    pipe: Any,
    prompt: str,
    negative_prompt: str | None,
    *,
    steps: int,
    clip_skip: int | None,
    guidance: bool,
    device: torch.device | None = None,
) -> Conditioning:
    """Parse and encode a call's prompts: a :class:`Conditioning` to generate under.

    Args:
        pipe: the diffusers pipeline (SD or SDXL; txt2img, img2img or inpaint), its scheduler
            set for the call (its ``order`` counts model calls per step, as A1111 does).
        prompt: the prompt, in A1111 syntax with editing, alternation and ``AND``.
        negative_prompt: the negative prompt (editing and alternation; no ``AND``).
        steps: the call's steps.
        clip_skip: as for :func:`sdkit.prompts.encode_prompts`.
        guidance: whether the pipeline makes an unconditional pass (classifier-free guidance).
        device: where the embeddings go.

    Raises:
        InvalidOptionError: a prompt is refused (syntax bounds, too many edits, ``AND`` parts
            or distinct texts), before the text encoder runs.

    Example:
        >>> from diffusers import StableDiffusionPipeline
        >>> from sdkit.models import DEFAULT_MODEL_DIR
        >>> pipe = StableDiffusionPipeline.from_pretrained(DEFAULT_MODEL_DIR)
        >>> cond = condition(pipe, "a [cat:dog:0.5]", "", steps=4, clip_skip=None, guidance=True)
        >>> cond.plan.positives, cond.active
        (('a cat', 'a dog'), True)
    """
    order = int(getattr(getattr(pipe, "scheduler", None), "order", 1) or 1)
    negative = negative_prompt or ""
    plan = plan_prompts(prompt, negative, steps * order)
    positives, negatives = encode_prompt_texts(
        pipe,
        plan.positives,
        plan.negatives if guidance else [negative],
        clip_skip=clip_skip,
        do_classifier_free_guidance=guidance,
        device=device,
    )
    return Conditioning(pipe.unet, plan, positives, negatives)
