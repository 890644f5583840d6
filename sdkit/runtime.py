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
      the fewest kernel launches. Sizes fall in buckets (:data:`SIZE_BUCKETS`): the first
      size of a bucket compiles a graph whose height and width are symbolic over the whole
      bucket, and later sizes in it reuse that graph (a size whose latent side divides
      differently by the UNet's downsampling factor gets one more graph: its upsampling
      takes another branch).
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
    "SIZE_BUCKETS",
    "RuntimeSetup",
    "resolve_device",
    "resolve_dtype",
    "setup_pipeline",
    "size_bucket",
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

# Latent sides (pixels / 8), inclusive ranges: up to 768 px (SD 1.x/2.x sizes), up to 1536 px
# (SDXL's sizes), up to 16384 px. A graph compiled for a bucket serves each size in it; CUDA
# graphs still record one replay per concrete size, which costs a warm-up run, not a compile.
SIZE_BUCKETS: tuple[tuple[int, int], ...] = ((2, 96), (97, 192), (193, 2048))

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


def size_bucket(side: int) -> tuple[int, int]:
    """The bucket of a latent side (pixels / 8) under ``optimize="max"``.

    Example:
        >>> size_bucket(64), size_bucket(96), size_bucket(128)  # 512, 768 and 1024 px
        ((2, 96), (2, 96), (97, 192))
    """
    for low, high in SIZE_BUCKETS:
        if low <= side <= high:
            return low, high
    raise InvalidOptionError("size", side * 8, "a side from 16 to 16384 px")


def _compile_bucketed(module: torch.nn.Module, mode: str) -> None:
    """Compile ``module.forward`` with its input's height and width symbolic over their bucket.

    ``torch._dynamo.mark_dynamic`` before each call, with the bucket's bounds, makes the first
    size of a bucket compile a graph for every size in it; a plain ``torch.compile`` compiles
    the first size statically and re-traces on the next.
    """
    compiled = torch.compile(module.forward, mode=mode)

    def forward(sample: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(sample, torch.Tensor) and sample.ndim == 4:
            for dim in (2, 3):
                low, high = size_bucket(int(sample.shape[dim]))
                torch._dynamo.mark_dynamic(sample, dim, min=low, max=high)
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
