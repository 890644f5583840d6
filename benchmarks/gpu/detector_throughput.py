"""Images per second of the AI-image detector on one CUDA GPU, by precision and batch size.

The GPU twin of ``benchmarks/detector_throughput.py``: the detector's frozen CLIP image encoder
(open_clip, RANDOM weights: speed does not depend on the weight values, and no weights need
downloading) at batch 1, 32 and 128, for ViT-B-32 and ViT-L-14, in four precisions:

* ``fp32``: plain float32 (TF32 matrix maths off, PyTorch's default);
* ``tf32``: float32 with TF32 matrix maths allowed;
* ``fp16`` / ``bf16``: ``torch.autocast("cuda", dtype)`` around the call (weights stay fp32).

Three ways per cell, as on the CPU:

* ``embed``: ``Backbone.embed`` on a preprocessed batch already on the GPU (the model alone,
  plus copying the (n, dim) features back);
* ``features``: ``Backbone.features`` on n 512x512 PIL images (CPU crop + normalise, host to
  device copy, model);
* ``score``: ``Detector.score`` on the same images (features + a random linear probe).

Timings bracket each call with ``torch.cuda.synchronize()``; each cell has warm-up calls, then
reports the median. The whole run takes a few minutes on an H100.

    python benchmarks/gpu/detector_throughput.py [--json PATH] [--models ...] [--batches ...]

Without CUDA it refuses with exit status 2 (see benchmarks/gpu/README.md for how to run it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

MODELS = ("ViT-B-32", "ViT-L-14")
BATCHES = (1, 32, 128)
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
MODES = ("embed", "features", "score")
AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _images(n: int, size: int = 512, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


@contextmanager
def _precision(name: str, device: torch.device) -> Iterator[None]:
    """Run the body in ``name`` precision: autocast for fp16/bf16, TF32 switch for tf32."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
    cast = torch.autocast(device.type, dtype=AUTOCAST[name]) if name in AUTOCAST else nullcontext()
    try:
        with cast:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _calls(backbone: Any, detector: Any, pil: list[Image.Image], tensor: torch.Tensor) -> Any:
    return {
        "embed": lambda: backbone.embed(tensor),
        "features": lambda: backbone.features(pil),
        "score": lambda: detector.score(pil),
    }


def measure_model(
    model: str,
    *,
    batches: tuple[int, ...],
    precisions: tuple[str, ...],
    runs: int,
    e2e_runs: int,
    warmup: int,
    device: torch.device,
    images: list[Image.Image],
) -> list[dict[str, Any]]:
    """Time every (precision, batch, mode) cell of one model; print a row per cell."""
    from provenance.detector import Backbone, Detector, LinearProbe, preprocess

    torch.manual_seed(0)
    backbone = Backbone(model, pretrained=None, device=device, batch_size=max(batches))
    rng = np.random.default_rng(0)
    probe = LinearProbe(
        weight=rng.normal(size=backbone.dim) / np.sqrt(backbone.dim),
        bias=0.0,
        mean=np.zeros(backbone.dim),
        scale=np.ones(backbone.dim),
        metadata={"backbone": backbone.id.to_dict()},
    )
    detector = Detector(backbone, probe)
    cells = []
    for precision in precisions:
        for batch in batches:
            backbone.batch_size = batch
            pil = images[:batch]
            tensor = torch.stack([preprocess(im, size=backbone.image_size) for im in pil])
            tensor = tensor.to(device)
            calls = _calls(backbone, detector, pil, tensor)
            seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with _precision(precision, device):
                for mode in MODES:
                    for _ in range(warmup if mode == "embed" else 1):
                        calls[mode]()
                    n = runs if mode == "embed" else e2e_runs
                    seconds[mode] = [_time(calls[mode], device) for _ in range(n)]
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
            for mode in MODES:
                median = statistics.median(seconds[mode])
                cells.append(
                    {
                        "model": model,
                        "precision": precision,
                        "mode": mode,
                        "batch": batch,
                        "runs": len(seconds[mode]),
                        "seconds": seconds[mode],
                        "median_s": median,
                        "images_per_s": batch / median,
                        "peak_memory_mib": peak / 2**20,
                    }
                )
                print(
                    f"{model:<9} {precision:<5} {mode:<9} {batch:>5} {median * 1e3:>10.2f} "
                    f"{batch / median:>10.1f} {peak / 2**20:>9.0f}",
                    flush=True,
                )
    del detector, backbone
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return cells


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL")
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES), metavar="N")
    parser.add_argument(
        "--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS, metavar="P"
    )
    parser.add_argument("--runs", type=int, default=20, help="timed embed calls per cell")
    parser.add_argument(
        "--e2e-runs", type=int, default=5, help="timed features/score calls per cell"
    )
    parser.add_argument("--warmup", type=int, default=3, help="warm-up embed calls per cell")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/gpu/detector_throughput.json")
    )
    return parser.parse_args()


def main() -> None:
    args = _parse()
    if not torch.cuda.is_available():
        print(
            f"error: this benchmark needs a CUDA GPU, and torch {torch.__version__} sees none "
            "(torch.cuda.is_available() is False).\n"
            "Hint: run it on a GPU machine (benchmarks/gpu/README.md); for CPU numbers use "
            "benchmarks/detector_throughput.py.",
            file=sys.stderr,
        )
        sys.exit(2)
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    started = time.perf_counter()
    images = _images(max(args.batches))
    print(
        f"{props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB; "
        f"torch {torch.__version__} (CUDA {torch.version.cuda}); open_clip random weights, "
        "512x512 images"
    )
    print(
        f"{'model':<9} {'prec':<5} {'mode':<9} {'batch':>5} {'median ms':>10} {'images/s':>10} "
        f"{'peak MiB':>9}"
    )
    cells = []
    for model in args.models:
        cells += measure_model(
            model,
            batches=tuple(args.batches),
            precisions=tuple(args.precisions),
            runs=args.runs,
            e2e_runs=args.e2e_runs,
            warmup=args.warmup,
            device=device,
            images=images,
        )
    total_s = time.perf_counter() - started
    print(f"total {total_s:.0f} s")

    import open_clip

    result = {
        "what": "images per second, CLIP backbone with random weights (speed only)",
        "device": "cuda",
        "gpu": props.name,
        "sm_count": props.multi_processor_count,
        "gpu_memory_gib": props.total_memory / 2**30,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cells": cells,
        "total_s": total_s,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
