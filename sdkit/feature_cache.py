"""Feature caching across denoising steps, in the style of DeepCache (lossy, opt-in).

DeepCache (Ma, Fang and Wang, "DeepCache: Accelerating Diffusion Models for Free", CVPR 2024)
observes that a UNet's deep features change slowly from one step to the next. Every
``interval``-th call runs the whole UNet and keeps what its deep blocks returned; the calls in
between run only the shallow path (``conv_in``, the first down block, the last up block and
the output layers) and reuse the kept deep features. The pixels change (the Recipe records
the interval, so :meth:`sdkit.Generator.replay` reproduces them); the speed-up depends on how
much of the UNet the shallow path is. ``benchmarks/generation_speed.py`` measures both.

Example:
    >>> from diffusers import UNet2DConditionModel
    >>> import torch
    >>> unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64),
    ...     down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    ...     up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
    ...     layers_per_block=1, norm_num_groups=8)
    >>> x, text = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 32)
    >>> with FeatureCache(unet, interval=2) as cache, torch.no_grad():
    ...     _ = [unet(x, t, text).sample for t in (999, 500, 1)]
    >>> cache.full_calls, cache.cached_calls
    (2, 1)
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import torch

from .errors import InvalidOptionError

__all__ = ["FeatureCache", "check_interval"]


def check_interval(interval: Any) -> int | None:
    """Validate a ``feature_cache`` option: ``None`` (off) or an int from 2 to 50."""
    if interval is None:
        return None
    if isinstance(interval, bool) or not isinstance(interval, int) or not 2 <= interval <= 50:
        raise InvalidOptionError(
            "feature_cache", interval, "None (off) or an interval from 2 to 50",
            hint="3 is a good start: a full UNet pass every 3rd step.",
        )  # fmt: skip
    return interval


class FeatureCache:
    """While active, ``unet`` runs in full every ``interval``-th call and shallow in between.

    Use as a context manager around one generation: it starts counting at zero on entry, and
    on exit the UNet is exactly as before.
    """

    def __init__(self, unet: Any, interval: int) -> None:
        self.unet = unet
        self.interval = check_interval(interval) or 1
        self.full_calls = 0
        self.cached_calls = 0
        self._calls = 0
        self._full = True
        self._kept: dict[int, Any] = {}
        self._hook: Any = None
        self._wrapped: list[torch.nn.Module] = []

    def _deep_modules(self) -> list[torch.nn.Module]:
        unet = self.unet
        deep = [*unet.down_blocks[1:], *unet.up_blocks[:-1]]
        if getattr(unet, "mid_block", None) is not None:
            deep.append(unet.mid_block)
        return deep

    def __enter__(self) -> FeatureCache:
        if len(self.unet.down_blocks) < 2:
            raise InvalidOptionError(
                "feature_cache", self.interval, "a UNet with at least two levels"
            )

        def count(module: Any, args: Any) -> None:
            self._full = self._calls % self.interval == 0
            self._calls += 1
            if self._full:
                self.full_calls += 1
            else:
                self.cached_calls += 1

        self._hook = self.unet.register_forward_pre_hook(count)
        for module in self._deep_modules():
            module.forward = self._caching(module, module.forward)  # type: ignore[method-assign]
            self._wrapped.append(module)
        return self

    def _caching(self, module: torch.nn.Module, forward: Callable[..., Any]) -> Callable[..., Any]:
        key = id(module)

        def run(*args: Any, **kwargs: Any) -> Any:
            if self._full or key not in self._kept:
                self._kept[key] = forward(*args, **kwargs)
            return self._kept[key]

        return run

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for module in self._wrapped:
            del module.forward  # the class's forward again
        self._wrapped.clear()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._kept.clear()
