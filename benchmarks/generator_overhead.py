"""What the Generator costs over plain diffusers, measured in one run on one machine.

Both sides run the same pipeline object, sampler and seed; the Generator adds validation, its own
prompt encoding (A1111 weighting, chunking), the Recipe and PIL conversion. Reports the median of
N runs per side (interleaved, after a warm-up) and the ratio.

    python benchmarks/generator_overhead.py [--runs 15] [--steps 25] [--json out.json]

Uses the model sdkit ships (256x256) unless --model is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from sdkit import Generator


def _plain(pipe: Any, prompt: str, steps: int, seed: int) -> None:
    pipe(
        prompt,
        num_inference_steps=steps,
        guidance_scale=7.0,
        generator=[torch.Generator("cpu").manual_seed(seed)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/generator_overhead.json"))
    args = parser.parse_args()

    # watermark=False: this measures the Generator itself; provenance_overhead.py measures the rest
    gen = Generator(args.model, progress=False, watermark=False)
    pipe = gen.pipe
    pipe.set_progress_bar_config(disable=True)
    prompt = "a red circle on a blue background"
    from diffusers import EulerDiscreteScheduler

    def run_plain(seed: int) -> None:
        pipe.scheduler = EulerDiscreteScheduler.from_config(gen._base_scheduler_config)
        _plain(pipe, prompt, args.steps, seed)

    def run_sdkit(seed: int) -> None:
        gen(prompt, sampler="Euler", steps=args.steps, guidance_scale=7.0, seed=seed)

    sides = {"plain diffusers": run_plain, "sdkit Generator": run_sdkit}
    for fn in sides.values():  # warm-up
        fn(0)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(args.runs):
        for name, fn in sides.items():
            start = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(t) for name, t in times.items()}
    ratio = medians["sdkit Generator"] / medians["plain diffusers"]
    width, height = gen.native_size
    print(f"{gen} | {width}x{height}, {args.steps} steps, Euler, CFG 7, {args.runs} runs")
    print(f"{'setup':<18} {'median s':>9} {'min s':>8} {'max s':>8}")
    for name, t in times.items():
        print(f"{name:<18} {medians[name]:>9.3f} {min(t):>8.3f} {max(t):>8.3f}")
    print(f"ratio sdkit / plain: {ratio:.3f}")
    result = {
        "model": gen.source.name,
        "size": [width, height],
        "steps": args.steps,
        "runs": args.runs,
        "device": str(gen.device),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "seconds": times,
        "median_s": medians,
        "ratio": ratio,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
