"""Where, in which precision and how fast a pipeline runs.

Rules:
    * device ``None`` picks CUDA when present, then Apple's MPS, then the CPU.
    * dtype ``None`` picks float16 on CUDA and MPS, float32 on the CPU (half precision on a CPU
      is slow and poorly supported).
    * ``memory`` trades speed for memory: ``"high"`` keeps everything on the device;
      ``"balanced"`` moves each model to the GPU only while it runs (model offload) and decodes
      a batch one image at a time; ``"low"`` adds tiled VAE decoding and attention slicing;
      ``"minimal"`` offloads layer by layer (sequential offload: slowest, least memory).
      Offload needs an accelerator: on a CPU those parts are skipped and the setup says so.
    * ``optimize`` trades start-up time for speed without changing the pixels beyond float
      noise: ``"none"`` runs diffusers as it is; ``"compile"`` adds channels-last memory
      layout, fused QKV projections and regional compilation (``torch.compile`` of the
      repeated transformer blocks: a short compile); ``"max"`` compiles the whole UNet and the
      VAE decoder, with CUDA graphs on CUDA (``mode="reduce-overhead"``): the longest compile,
      the fewest kernel launches. Sizes fall in buckets: the first size of a bucket compiles a
      graph whose height and width are symbolic, and later sizes in it reuse that graph. A
      bucket is the sizes whose latent sides divide the same way by the UNet's downsampling
      factor (all multiples of 64 px for SD and SDXL); a size that divides differently takes
      another upsampling branch and gets one more graph, then reused by its own bucket. The
      VAE decoder compiles once more where a convolution guard of PyTorch's flips with size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from .errors import InvalidOptionError

__all__ = [
    "DTYPES",
    "MEMORY_MODES",
    "OPTIMIZE_LEVELS",
    "RuntimeSetup",
    "resolve_device",
    "resolve_dtype",
    "setup_pipeline",
]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

OPTIMIZE_LEVELS = ("none", "compile", "max")
MEMORY_MODES = ("high", "balanced", "low", "minimal")
Optimize = Literal["none", "compile", "max"]
Memory = Literal["high", "balanced", "low", "minimal"]

DeviceLike = str | torch.device | None
DtypeLike = str | torch.dtype | None | Literal["auto"]


def resolve_device(device: DeviceLike = None) -> torch.device:
    """Return the device to run on.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a ``torch.device``, or ``None``
            for the best one present.

    Raises:
        InvalidOptionError: the device is unknown or not present on this machine.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidOptionError("device", device, "cpu, cuda, cuda:N or mps") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError(
            "device",
            str(device),
            "a device present on this machine",
            hint="CUDA is not available here; use device='cpu'.",
        )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidOptionError("device", str(device), "a device present on this machine")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise InvalidOptionError("device", str(device), "cpu, cuda, cuda:N or mps")
    return resolved


def resolve_dtype(dtype: DtypeLike, device: torch.device) -> torch.dtype:
    """Return the weights' dtype for ``device``.

    Args:
        dtype: a ``torch.dtype``, a name (``"fp16"``, ``"bfloat16"``, …), or ``None``/``"auto"``.
        device: where the pipeline runs.

    Example:
        >>> resolve_dtype(None, torch.device("cpu"))
        torch.float32
    """
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InvalidOptionError("dtype", str(dtype), sorted(set(DTYPES)))
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise InvalidOptionError("dtype", dtype, sorted(DTYPES)) from None


def _compile_bucketed(module: torch.nn.Module, mode: str) -> None:
    """Compile ``module.forward`` with its input's height and width symbolic from the start.

    ``torch._dynamo.maybe_mark_dynamic`` before each call makes the first compile a graph for
    every size of its bucket: the sizes whose latent sides divide the same way by the UNet's
    downsampling (dynamo guards on that, e.g. ``side % 2 == 0``; every multiple of 64 px is
    one bucket for SD and SDXL). A plain ``torch.compile`` compiles the first size statically
    and re-traces on the next. (``mark_dynamic`` with bounds is stricter: it raises when the
    graph guards on divisibility, which the UNet's upsampling does.)
    """
    compiled = torch.compile(module.forward, mode=mode)

    def forward(sample: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(sample, torch.Tensor) and sample.ndim == 4:
            torch._dynamo.maybe_mark_dynamic(sample, 2)
            torch._dynamo.maybe_mark_dynamic(sample, 3)
        return compiled(sample, *args, **kwargs)

    module.forward = forward  # type: ignore[method-assign]


@dataclass(frozen=True)
class RuntimeSetup:
    """How a pipeline was set up: the modes asked for, what was done, what was skipped (why)."""

    optimize: str
    memory: str
    applied: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


def check_modes(optimize: str, memory: str) -> None:
    """Raise :class:`InvalidOptionError` for an unknown ``optimize`` level or ``memory`` mode."""
    if optimize not in OPTIMIZE_LEVELS:
        raise InvalidOptionError("optimize", optimize, list(OPTIMIZE_LEVELS))
    if memory not in MEMORY_MODES:
        raise InvalidOptionError("memory", memory, list(MEMORY_MODES))


def setup_pipeline(
    pipe: Any, device: torch.device, *, optimize: str = "none", memory: str = "high"
) -> RuntimeSetup:
    """Place ``pipe`` on ``device`` for ``memory`` and apply the ``optimize`` level.

    ``optimize="none"`` with ``memory="high"`` is exactly ``pipe.to(device)``.
    """
    check_modes(optimize, memory)
    applied: list[str] = []
    skipped: list[str] = []
    _place(pipe, device, memory, applied, skipped)
    if optimize != "none":
        _optimize(pipe, device, optimize, applied, skipped)
    return RuntimeSetup(optimize, memory, tuple(applied), tuple(skipped))


def _place(
    pipe: Any, device: torch.device, memory: str, applied: list[str], skipped: list[str]
) -> None:
    offload = {"balanced": "model_cpu_offload", "low": "model_cpu_offload"}.get(
        memory, "sequential_cpu_offload" if memory == "minimal" else None
    )
    if offload is not None and device.type != "cpu":
        getattr(pipe, f"enable_{offload}")(device=device)
        applied.append(offload)
    else:
        pipe.to(device)
        if offload is not None:
            skipped.append(f"{offload} (the pipeline already runs on the CPU)")
    vae = getattr(pipe, "vae", None)
    if vae is not None and memory != "high":
        vae.enable_slicing()
        applied.append("vae_slicing")
        if memory in ("low", "minimal"):
            vae.enable_tiling()
            applied.append("vae_tiling")
    if memory in ("low", "minimal") and hasattr(pipe, "enable_attention_slicing"):
        pipe.enable_attention_slicing("max" if memory == "minimal" else "auto")
        applied.append("attention_slicing")


def _optimize(
    pipe: Any, device: torch.device, level: str, applied: list[str], skipped: list[str]
) -> None:
    denoiser = getattr(pipe, "unet", None)
    vae = getattr(pipe, "vae", None)
    if denoiser is None:
        skipped.append("compile (the pipeline has no UNet)")
        return
    denoiser.to(memory_format=torch.channels_last)
    if vae is not None:
        vae.to(memory_format=torch.channels_last)
    applied.append("channels_last")
    if hasattr(pipe, "fuse_qkv_projections"):
        pipe.fuse_qkv_projections()
        applied.append("fused_qkv")
    if level == "compile":
        denoiser.compile_repeated_blocks(fullgraph=True)
        applied.append("regional_compile(unet)")
        return
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    _compile_bucketed(denoiser, mode)
    applied.append(f"compile(unet, mode={mode})")
    if vae is not None:
        _compile_bucketed(vae.decoder, mode)
        applied.append(f"compile(vae.decoder, mode={mode})")
    applied.append("size_buckets")
    if device.type != "cuda":
        skipped.append("cuda_graphs (CUDA only)")
