"""Batch generation: ``generate_many`` in one process vs Ray with 1 and 2 generation actors.

The same prompts, seeds and options through each engine (the shipped model on the CPU; on a
machine without GPUs Ray is given 2 logical GPUs, so each generation actor runs on CPU cores):
images/s once everything is loaded, and the fixed costs each engine pays before its first image
(loading the model; for Ray also starting the cluster and the actors, which load and warm up in
parallel). Every engine's files are checked: the same names, and each file verifies.

Threads: Ray runs an actor that holds a fraction of a CPU with ``OMP_NUM_THREADS=1``, so the
baseline runs with ``torch.set_num_threads(1)`` too (``--threads``): on a shared 2-core machine,
PyTorch's default (one thread per core, spinning) collapses under load, which would credit Ray
with a speed-up that is only the thread count.

    python benchmarks/generation_distributed.py [--images 16] [--size 256] [--steps 4] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from provenance import verify
from sdkit import Generator


def _check(paths: list[Path], names: list[str] | None) -> list[str]:
    got = [p.name for p in paths]
    assert names is None or got == names, (got, names)
    for path in paths:
        report = verify(path)
        assert report.c2pa_state == "valid" and not report.problems, (path, report.problems)
    return got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="prompts, one image each")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads of the baseline")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import ray
    import torch

    from sdkit.distributed import RayGenerationPool

    prompts = [f"a large shape number {k} on a plain background" for k in range(args.images)]
    options: dict[str, Any] = {"width": args.size, "height": args.size, "steps": args.steps}
    work = Path(tempfile.mkdtemp(prefix="sdkit-bench-"))
    rows: list[dict[str, Any]] = []
    try:
        # 1. One process: load, a warm-up image, then the run (generate_many, 2 stamp threads).
        torch.set_num_threads(args.threads)
        clock = time.perf_counter()
        gen = Generator(device="cpu", progress=False)
        gen.warmup(**{**options, "steps": 1})
        fixed = time.perf_counter() - clock
        clock = time.perf_counter()
        paths = gen.generate_many(prompts, work / "local", seed=1, **options)
        run = time.perf_counter() - clock
        names = _check(paths, None)
        rows.append({"engine": "generate_many", "actors": 0, "fixed_s": fixed, "run_s": run})
        del gen
        # 2. Ray: one cluster (2 CPUs, 2 logical GPUs), then a pool of 1 and one of 2 actors.
        clock = time.perf_counter()
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
        cluster = time.perf_counter() - clock
        for actors in (1, 2):
            clock = time.perf_counter()
            warm = {**options, "steps": 1}
            with RayGenerationPool(None, gpus=actors, warmup=warm, device="cpu") as pool:
                start = time.perf_counter() - clock
                clock = time.perf_counter()
                first = pool.generate_many(prompts[:2], work / f"first{actors}", seed=1, **options)
                first_s = time.perf_counter() - clock
                clock = time.perf_counter()
                paths = pool.generate_many(prompts, work / f"ray{actors}", seed=1, **options)
                run = time.perf_counter() - clock
            _check(first, names[:2])
            _check(paths, names)
            rows.append(
                {
                    "engine": "ray",
                    "actors": actors,
                    "cluster_s": cluster,
                    "fixed_s": start,
                    "first_job_s": first_s,
                    "run_s": run,
                }
            )
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]["run_s"]
    for row in rows:
        row["images_per_s"] = args.images / row["run_s"]
        row["speed_vs_generate_many"] = base / row["run_s"]
    print(
        f"{args.images} images, {args.size}x{args.size}, {args.steps} steps, shipped model, CPU "
        f"(baseline: {args.threads} PyTorch thread(s))"
    )
    print(f"{'engine':<15}{'actors':>7}{'cluster s':>11}{'fixed s':>9}{'1st job s':>11}"
          f"{'run s':>8}{'img/s':>8}{'x base':>8}")  # fmt: skip
    for row in rows:
        cluster_s = f"{row['cluster_s']:.1f}" if "cluster_s" in row else "-"
        first_s = f"{row['first_job_s']:.1f}" if "first_job_s" in row else "-"
        print(
            f"{row['engine']:<15}{row['actors']:>7}{cluster_s:>11}{row['fixed_s']:>9.1f}"
            f"{first_s:>11}{row['run_s']:>8.1f}{row['images_per_s']:>8.2f}"
            f"{row['speed_vs_generate_many']:>8.2f}"
        )
    result = {
        "benchmark": "generation_distributed",
        "images": args.images,
        "size": args.size,
        "steps": args.steps,
        "baseline_torch_threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "platform": platform.platform(),
        "rows": rows,
        "same_names_and_all_verify": True,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
