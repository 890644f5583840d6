"""Images per second of the AI-image detector on this CPU, at batch 1 and batch 32.

Times the detector's frozen CLIP image encoder (open_clip, RANDOM weights: speed does not depend
on the weight values, and no weights need downloading) three ways, per model and batch size:

* ``embed``: ``Backbone.embed`` on an already-preprocessed tensor (n, 3, 224, 224);
* ``features``: ``Backbone.features`` on n 512x512 PIL images (centre crop + normalisation
  included);
* ``score``: ``Detector.score`` on the same images, end to end (features + a linear probe with
  random weights; the probe itself costs microseconds).

Each cell starts with one warm-up call, then reports the median and the fastest of N runs (the
modes interleaved); images per second come from the median. On a shared machine other processes
slow some runs down: the JSON records the load average before and after, and the fastest run is
the better guide to what the CPU can do.
ViT-L-14 at batch 32 is heavy on a small CPU (about 37 s a call on 2 cores), so it gets fewer runs
(``--heavy-runs``) and no warm-up of its own (its model is warm from the batch-1 cell). Also prints
the ratio batch-32 / batch-1 images per second per model and mode.

    python benchmarks/detector_throughput.py [--quick] [--runs 5] [--heavy-runs 2] [--json PATH]

The full run took under 5 minutes on 2 idle cores (8.5 with other jobs running); ``--quick``
(batch 1 and 2, one run) well under one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from provenance.detector import Backbone, Detector, LinearProbe, preprocess

MODELS = ("ViT-B-32", "ViT-L-14")
MODES = ("embed", "features", "score")
HEAVY = {("ViT-L-14", 32)}  # cells that get --heavy-runs and no warm-up call of their own


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _images(n: int, size: int = 512, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


def _random_detector(backbone: Backbone, seed: int = 0) -> Detector:
    rng = np.random.default_rng(seed)
    probe = LinearProbe(
        weight=rng.normal(size=backbone.dim) / np.sqrt(backbone.dim),
        bias=0.0,
        mean=np.zeros(backbone.dim),
        scale=np.ones(backbone.dim),
        metadata={"backbone": backbone.id.to_dict()},
    )
    return Detector(backbone, probe)


def _calls(
    backbone: Backbone, detector: Detector, pil: list[Image.Image], tensor: torch.Tensor
) -> dict[str, Callable[[], Any]]:
    return {
        "embed": lambda: backbone.embed(tensor),
        "features": lambda: backbone.features(pil),
        "score": lambda: detector.score(pil),
    }


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _measure_model(
    model: str, batches: tuple[int, ...], images: list[Image.Image], args: argparse.Namespace
) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    built = time.perf_counter()
    backbone = Backbone(model, pretrained=None, device="cpu", batch_size=max(batches))
    detector = _random_detector(backbone)
    build_s = time.perf_counter() - built
    cells = []
    for batch in batches:
        backbone.batch_size = batch
        pil = images[:batch]
        tensor = torch.stack([preprocess(im, size=backbone.image_size) for im in pil])
        calls = _calls(backbone, detector, pil, tensor)
        heavy = (model, batch) in HEAVY and not args.quick
        runs = args.heavy_runs if heavy else args.runs
        warmup = 0 if heavy else 1
        for _ in range(warmup):
            calls["embed"]()
        seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(runs):
            for mode in MODES:
                seconds[mode].append(_time(calls[mode]))
        for mode in MODES:
            median = statistics.median(seconds[mode])
            cells.append(
                {
                    "model": model,
                    "dim": backbone.dim,
                    "mode": mode,
                    "batch": batch,
                    "warmup_calls": warmup,
                    "runs": runs,
                    "seconds": seconds[mode],
                    "median_s": median,
                    "min_s": min(seconds[mode]),
                    "images_per_s": batch / median,
                    "build_s": build_s,
                }
            )
            print(
                f"{model:<9} {mode:<9} {batch:>5} {runs:>5} {median:>9.3f} "
                f"{min(seconds[mode]):>8.3f} {batch / median:>9.2f}",
                flush=True,
            )
    return cells


def _ratios(cells: list[dict[str, Any]], low: int, high: int) -> dict[str, dict[str, float]]:
    ips = {(c["model"], c["mode"], c["batch"]): c["images_per_s"] for c in cells}
    return {
        model: {mode: ips[model, mode, high] / ips[model, mode, low] for mode in MODES}
        for model in dict.fromkeys(c["model"] for c in cells)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per cell (default 5)")
    parser.add_argument(
        "--heavy-runs", type=int, default=2, help="timed runs for ViT-L-14 at batch 32 (default 2)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 1 and 2, one run")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/detector_throughput.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = (1, 2) if args.quick else (1, 32)
    if args.quick:
        args.runs = 1

    load_before = os.getloadavg()
    started = time.perf_counter()
    images = _images(max(batches))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {_cpu_name()}, "
        f"open_clip random weights, 512x512 images"
    )
    print(
        f"{'model':<9} {'mode':<9} {'batch':>5} {'runs':>5} {'median s':>9} {'min s':>8} {'images/s':>9}"
    )
    cells = [c for model in args.models for c in _measure_model(model, batches, images, args)]
    ratios = _ratios(cells, batches[0], batches[-1])
    for model, by_mode in ratios.items():
        text = ", ".join(f"{mode} {r:.2f}x" for mode, r in by_mode.items())
        print(f"images/s batch {batches[-1]} / batch 1, {model}: {text}")
    total_s = time.perf_counter() - started
    print(f"total {total_s:.0f} s")

    import open_clip

    result = {
        "what": "images per second, CLIP backbone with random weights (speed only)",
        "timed": {
            "embed": "Backbone.embed on a preprocessed (n, 3, 224, 224) tensor",
            "features": "Backbone.features on n 512x512 PIL images (crop + normalise + embed)",
            "score": "Detector.score on the same images (features + linear probe)",
        },
        "device": "cpu",
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "quick": args.quick,
        "batches": list(batches),
        "cells": cells,
        f"ratio_batch{batches[-1]}_over_batch1": ratios,
        "total_s": total_s,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
