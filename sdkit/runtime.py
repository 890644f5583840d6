"""Where and in which precision a pipeline runs.

The first version picks the device and dtype; memory modes and compilation build on it.

Rules:
    * device ``None`` picks CUDA when present, then Apple's MPS, then the CPU.
    * dtype ``None`` picks float16 on CUDA and MPS, float32 on the CPU (half precision on a CPU
      is slow and poorly supported).
"""

from __future__ import annotations

from typing import Literal

import torch

from .errors import InvalidOptionError

__all__ = ["DTYPES", "resolve_device", "resolve_dtype"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

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
