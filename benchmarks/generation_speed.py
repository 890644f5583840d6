"""Seconds per image: plain diffusers vs sdkit's Generator at each ``optimize`` level, one run.

Every setup runs in this process, on this machine, interleaved run by run, with the same
pipeline folder, sampler (Euler), steps, guidance and seeds; the table reports medians and the
ratio of each setup to plain diffusers measured in the same run.

- ``plain``: ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline.from_pretrained``, called
  with a prompt string (what a diffusers user writes).
- ``none`` / ``compile`` / ``max``: ``Generator(folder, optimize=..., watermark=False)`` (the
  Generator's own cost; provenance is measured separately below). Compile time is reported
  apart (the warm-up), then runs are timed.
- ``max`` pixels are compared with ``none``'s (same seed): max |difference| in 8-bit levels.
- ``cache3`` / ``cache5``: ``optimize="none"`` with ``feature_cache=3`` / ``5`` (lossy,
  DeepCache style); their cost against lossless ``none`` at the same seeds: PSNR, SSIM and
  the mean colour shift (8-bit levels), averaged over the timed seeds.

Then, with the model sdkit ships (256x256, 25 steps): what provenance adds to one image
(watermark + PNG + C2PA signature vs the picture alone), and ``generate_many`` writing signed
files vs a loop that only generates.

    python benchmarks/generation_speed.py [--runs 5] [--json benchmarks/generation_speed.json]
        [--skip-compile]

On this workplace's 2-core CPU the models are the small SD 1.5-style and SDXL-style test
pipelines (random weights, real classes) at 128 px and the shipped model; the full
architectures on a GPU are ``benchmarks/gpu/generation_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from sdkit import Generator  # noqa: E402

PROMPT = "a red circle in the center on a blue background"


def _time(fn: Callable[[int], Any], runs: int) -> list[float]:
    out = []
    for seed in range(runs):
        clock = time.perf_counter()
        fn(seed)
        out.append(time.perf_counter() - clock)
    return out


def speed_table(name: str, folder: Path, size: int, steps: int, runs: int, levels: list[str]) -> dict[str, Any]:  # fmt: skip
    from diffusers import DiffusionPipeline, EulerDiscreteScheduler

    plain = DiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    plain.scheduler = EulerDiscreteScheduler.from_config(plain.scheduler.config)
    plain.set_progress_bar_config(disable=True)

    def run_plain(seed: int) -> Any:
        return plain(
            PROMPT, num_inference_steps=steps, guidance_scale=7.0, height=size, width=size,
            generator=torch.Generator("cpu").manual_seed(seed), output_type="pil",
        ).images[0]  # fmt: skip

    sides: dict[str, Callable[[int], Any]] = {"plain": run_plain}
    compile_s: dict[str, float] = {}
    gens = {}
    for level in levels:
        gen = Generator(folder, optimize=level, watermark=False, progress=False)  # type: ignore[arg-type]
        compile_s[level] = gen.warmup(width=size, height=size, steps=2, sampler="Euler")
        gens[level] = gen

        def run(seed: int, gen: Generator = gen) -> Any:
            return gen(PROMPT, sampler="Euler", steps=steps, seed=seed, width=size, height=size).image.image  # fmt: skip

        sides[level] = run
    if "none" in gens:
        for interval in (3, 5):

            def cached(seed: int, gen: Generator = gens["none"], n: int = interval) -> Any:
                return gen(PROMPT, sampler="Euler", steps=steps, seed=seed, width=size, height=size, feature_cache=n).image.image  # fmt: skip

            sides[f"cache{interval}"] = cached
    for fn in sides.values():
        fn(0)  # warm-up at the timed settings
    times: dict[str, list[float]] = {k: [] for k in sides}
    for seed in range(runs):
        for key, fn in sides.items():
            times[key] += _time(lambda _, fn=fn, seed=seed: fn(seed), 1)
    medians = {k: statistics.median(v) for k, v in times.items()}
    diffs = {}
    reference = np.asarray(sides["none"](123), dtype=np.int16) if "none" in sides else None
    for level in levels:
        if reference is not None and level != "none":
            other = np.asarray(sides[level](123), dtype=np.int16)
            diffs[level] = int(np.abs(other - reference).max())
    quality = {}
    if "none" in gens:
        for k in ("cache3", "cache5"):
            pairs = [(np.asarray(sides["none"](s)), np.asarray(sides[k](s))) for s in range(runs)]
            quality[k] = _quality(pairs)
    rows = {
        k: {
            "median_s": medians[k],
            "it_s": steps / medians[k],
            "ratio_to_plain": medians[k] / medians["plain"],
            "compile_s": compile_s.get(k),
            "max_pixel_diff_vs_none": diffs.get(k),
            "applied": list(gens[k].runtime.applied) if k in gens else [],
            "quality_vs_none": quality.get(k),
        }
        for k in sides
    }
    print(f"\n{name}: {size}x{size}, {steps} steps, Euler, CFG 7, median of {runs}")
    print(
        f"{'setup':<9} {'s/image':>8} {'it/s':>7} {'vs plain':>9} {'warm-up s':>10} {'max diff':>9}"
    )
    for k, row in rows.items():
        warm = "" if row["compile_s"] is None else f"{row['compile_s']:.1f}"
        diff = "" if row["max_pixel_diff_vs_none"] is None else str(row["max_pixel_diff_vs_none"])
        print(f"{k:<9} {row['median_s']:>8.3f} {row['it_s']:>7.1f} {row['ratio_to_plain']:>9.3f} {warm:>10} {diff:>9}")  # fmt: skip
    for k, q in quality.items():
        speedup = medians["none"] / medians[k]
        print(f"{k}: {speedup:.2f}x the it/s of none; PSNR {q['psnr_db']:.1f} dB, SSIM "
              f"{q['ssim']:.3f}, mean colour shift {q['mean_colour_shift']:.1f} levels")  # fmt: skip
        rows[k]["speedup_vs_none"] = speedup
    return {"size": size, "steps": steps, "runs": runs, "setups": rows, "seconds": times}


def _quality(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Mean PSNR (dB), SSIM and colour shift (8-bit levels) of lossy images vs lossless ones."""
    from skimage.metrics import structural_similarity

    psnr, ssim, shift = [], [], []
    for exact, lossy in pairs:
        a, b = exact.astype(np.float64), lossy.astype(np.float64)
        mse = float(np.mean((a - b) ** 2))
        psnr.append(99.0 if mse == 0 else 10 * np.log10(255**2 / mse))
        ssim.append(structural_similarity(exact, lossy, channel_axis=2, data_range=255))
        shift.append(float(np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))).mean()))
    return {
        "psnr_db": float(np.mean(psnr)),
        "ssim": float(np.mean(ssim)),
        "mean_colour_shift": float(np.mean(shift)),
    }


def provenance_cost(runs: int) -> dict[str, Any]:
    marked = Generator(progress=False)
    bare = Generator(progress=False, watermark=False)

    def picture(seed: int) -> None:
        bare(PROMPT, seed=seed, steps=25).image.image.tobytes()

    def signed(seed: int) -> None:
        marked(PROMPT, seed=seed, steps=25).image.to_bytes("png")

    signed(0)
    picture(0)
    times: dict[str, list[float]] = {"picture only": [], "watermarked, PNG, signed": []}
    for seed in range(runs):
        times["picture only"] += _time(lambda _, s=seed: picture(s), 1)
        times["watermarked, PNG, signed"] += _time(lambda _, s=seed: signed(s), 1)
    medians = {k: statistics.median(v) for k, v in times.items()}
    added = medians["watermarked, PNG, signed"] / medians["picture only"] - 1
    print(f"\nprovenance on one default-model image (256x256, 25 steps), median of {runs}")
    for k, v in medians.items():
        print(f"{k:<26} {v:.3f} s")
    print(f"provenance adds {added:.1%} (target <= 10%)")
    return {"median_s": medians, "added_fraction": added, "seconds": times}


def batch_throughput(count: int) -> dict[str, Any]:
    bare = Generator(progress=False, watermark=False)
    marked = Generator(progress=False)
    prompts = [PROMPT] * count
    bare(PROMPT, seed=0, steps=25)
    clock = time.perf_counter()
    for i in range(count):
        bare(PROMPT, seed=i, steps=25).image.image.tobytes()
    only = time.perf_counter() - clock
    with tempfile.TemporaryDirectory() as tmp:
        clock = time.perf_counter()
        marked.generate_many(prompts, tmp, seed=0, steps=25)
        files = time.perf_counter() - clock
    ratio = only / files
    print(f"\n{count} default-model images: generation only {count / only:.2f} img/s, "
          f"generate_many (signed files) {count / files:.2f} img/s: {ratio:.1%}")  # fmt: skip
    return {"count": count, "generation_only_s": only, "signed_files_s": files, "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="images for generate_many")
    parser.add_argument("--skip-compile", action="store_true", help="only plain and none")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "generation_speed.json")
    args = parser.parse_args()
    from tiny_models import build_tiny_sd, build_tiny_sdxl

    levels = ["none"] if args.skip_compile else ["none", "compile", "max"]
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        sd = build_tiny_sd(Path(tmp) / "sd", sample_size=16)
        sdxl = build_tiny_sdxl(Path(tmp) / "sdxl")
        result["sd15_style"] = speed_table("SD 1.5-style (small)", sd, 128, 20, args.runs, levels)
        result["sdxl_style"] = speed_table("SDXL-style (small)", sdxl, 128, 20, args.runs, levels)
    result["default_model"] = speed_table("sdkit default model", ROOT / "sdkit" / "default_model", 256, 25, args.runs, levels)  # fmt: skip
    result["provenance"] = provenance_cost(args.runs)
    result["generate_many"] = batch_throughput(args.batch)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
