"""LoRA sets: switching between them vs reloading the model; fused vs unfused denoising steps.

One run on one machine, the ratios against a baseline measured in the same run:

* **switch**: make another set of already-loaded LoRAs the active one
  (``set_adapters`` with per-component weights) vs **reload**: build a fresh ``Generator``
  of the same model (what a tool without adapters does to change LoRAs);
* **load**: the first ``load_lora`` of a file (read, convert, inject);
* **step**: seconds per denoising step without LoRAs, with two unfused LoRAs (peft adds
  ``B(A x)`` in every targeted layer) and with the same two fused into the weights
  (``fuse_loras=True``).

Two LoRAs are made with peft on the model (rank 16 on the UNet's attention projections and the
text encoder's, as tests/addon_files.py makes them) and saved in kohya format.

    python benchmarks/lora_switch.py [--model M] [--runs 7] [--steps 8] [--size 256] [--json F]

Uses the model sdkit ships (256x256) unless --model is given (a diffusers folder).
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from addon_files import make_lora, save_kohya

from sdkit import Generator
from sdkit.addons.lora import LoraWeights


def _median(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/lora_switch.json"))
    args = parser.parse_args()

    gen = Generator(args.model, progress=False, watermark=False)
    folder = Path(gen.source.location)  # the shipped model: sdkit/default_model
    if not (folder / "unet").is_dir():
        raise SystemExit(f"{folder} is not a diffusers folder: give --model a folder")
    tmp = Path(tempfile.mkdtemp(prefix="sdkit-lora-bench-"))
    for name, seed in (("a", 1), ("b", 2)):
        save_kohya(
            make_lora(folder, seed, rank=16, alpha=16), tmp / f"{name}.safetensors", xl=False
        )

    load_s = _median(
        lambda: (gen.prompt_addons.loras.unload("a"), gen.load_lora(tmp / "a.safetensors")), 3
    )
    gen.load_lora(tmp / "b.safetensors")
    loras = gen.prompt_addons.loras
    sets = [
        [(loras.loaded["a"], LoraWeights(1.0, 1.0))],
        [(loras.loaded["b"], LoraWeights(0.8, 0.5)), (loras.loaded["a"], LoraWeights(0.3, 0.3))],
    ]
    flip = iter(range(10**6))
    switch_s = _median(lambda: loras.apply(sets[next(flip) % 2], fuse=False), args.runs * 5)
    reload_s = _median(
        lambda: Generator(args.model, progress=False, watermark=False), max(3, args.runs // 2)
    )

    call = dict(sampler="Euler", steps=args.steps, seed=1, width=args.size, height=args.size)
    both = {"a": 1.0, "b": 0.5}

    def step(**extra: object) -> float:
        gen("a red circle on a blue background", **call, **extra)  # warm-up (and fuse once)
        whole = _median(
            lambda: gen("a red circle on a blue background", **call, **extra), args.runs
        )
        return whole / args.steps

    plain_step = step()
    unfused_step = step(loras=both)
    fused_step = step(loras=both, fuse_loras=True)
    loras.apply([], fuse=False)

    rows = [
        ("load one LoRA (first time)", load_s, None),
        ("switch LoRA set (loaded adapters)", switch_s, None),
        ("reload the model (fresh Generator)", reload_s, reload_s / switch_s),
        ("step, no LoRA", plain_step, None),
        ("step, 2 LoRAs unfused", unfused_step, unfused_step / plain_step),
        ("step, 2 LoRAs fused", fused_step, fused_step / plain_step),
    ]
    print(f"{'measure':38} {'seconds':>10} {'ratio':>8}")
    for label, seconds, ratio in rows:
        print(f"{label:38} {seconds:10.4f} {'' if ratio is None else f'{ratio:8.1f}x':>8}")
    summary = {
        "reload_over_switch": reload_s / switch_s,
        "unfused_over_fused_step": unfused_step / fused_step,
        "unfused_over_plain_step": unfused_step / plain_step,
        "fused_over_plain_step": fused_step / plain_step,
    }
    print(", ".join(f"{k} = {v:.2f}" for k, v in summary.items()))
    result = {
        "seconds": {label: seconds for label, seconds, _ in rows},
        "ratios": summary,
        "settings": {
            "model": args.model or "sdkit-default",
            "runs": args.runs,
            "steps": args.steps,
            "size": args.size,
            "rank": 16,
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "device": str(gen.device),
        },
    }
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
