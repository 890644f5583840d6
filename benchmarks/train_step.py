"""Seconds per training step of the default model's denoiser on this machine, several ways.

The shipped recipe (``tools/train_default_model.py``) trains the denoiser for 6,000 steps at
batch 32. Whether it fits the project's 90 minutes depends on the seconds per step: 0.72 on a
2-core CPU with avx512_bf16, about 1.7 on one with AVX2 only. This times one step (forward,
v-prediction loss, backward, AdamW) of the shipped UNet architecture (``build_unet``, fresh
weights: speed does not depend on their values) on random latents, with captions through the
shipped frozen text encoder, in these variants:

* ``fp32``: as the script runs on a CPU without bf16 (the baseline of the ratios);
* ``fp32 + cached text``: the frozen text encoder's states looked up instead of recomputed
  (the script re-encodes each batch's captions);
* ``channels_last``: the UNet and its input in channels-last memory format;
* ``no_onednn``: fp32 with PyTorch's oneDNN (mkldnn) kernels switched off;
* ``bf16 autocast``: as the script runs where the CPU has bf16 (emulated, and slow, without);
* ``torch.compile``: the UNet compiled by inductor (compile time reported apart).

Each variant gets ``--warmup`` untimed steps, then the median of ``--steps`` timed ones.

On 2 AMD EPYC cores with AVX2 and no AVX-512 (2026-11-30), two runs: fp32 1.33-1.48 s a step
(6,000 steps: 133-148 min); cached text 0.90-1.02x, channels_last 0.86x, torch.compile
0.82-0.92x (after 15-17 s of compiling), bf16 autocast 0.07x (20 s a step: bf16 is emulated
without avx512_bf16, which is why the training script picks fp32 there). Nothing here brings
the 6,000-step recipe under 90 minutes on such a CPU; with avx512_bf16 it took 76 minutes.

    python benchmarks/train_step.py [--steps 8] [--warmup 2] [--variants fp32,compile,...]
        [--json benchmarks/train_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

VARIANTS = ("fp32", "cached_text", "channels_last", "no_onednn", "bf16", "compile")
LABELS = {
    "fp32": "fp32",
    "cached_text": "fp32 + cached text",
    "channels_last": "channels_last",
    "no_onednn": "fp32 without oneDNN",
    "bf16": "bf16 autocast",
    "compile": "torch.compile",
}


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return " ".join(f for f in wanted if f" {f}" in flags) or "none of " + ", ".join(wanted)


def captions(batch: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The shipped frozen text encoder, a batch of caption ids, and their states (loaded once)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from sdkit.models import DEFAULT_MODEL_DIR

    tokenizer = CLIPTokenizer.from_pretrained(DEFAULT_MODEL_DIR / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(
        DEFAULT_MODEL_DIR / "text_encoder", torch_dtype=torch.float32
    ).eval()
    texts = ["a small red star at the top left on a blue background"] * batch
    ids = tokenizer(
        texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        states = text_encoder(ids)[0]
    return text_encoder, ids, states


def time_variant(
    variant: str, args: argparse.Namespace, text: tuple[Any, torch.Tensor, torch.Tensor]
) -> dict[str, Any]:
    from train_default_model import build_unet

    text_encoder, ids, cached = text
    torch.manual_seed(0)
    unet = build_unet().train()
    if variant == "channels_last":
        unet = unet.to(memory_format=torch.channels_last)
    step_fn: Any = unet
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    compile_s = 0.0
    if variant == "compile":
        step_fn = torch.compile(unet)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16")

    def step() -> float:
        clock = time.perf_counter()
        latents = torch.randn(args.batch, 4, 32, 32)
        if variant == "channels_last":
            latents = latents.contiguous(memory_format=torch.channels_last)
        t = torch.randint(0, 1000, (args.batch,))
        if variant == "cached_text":
            context = cached
        else:
            with torch.no_grad():
                context = text_encoder(ids)[0]
        with autocast:
            prediction = step_fn(latents, t, context).sample.float()
        loss = F.mse_loss(prediction, torch.randn_like(prediction))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - clock

    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = variant != "no_onednn"
    try:
        for k in range(args.warmup):
            took = step()
            if k == 0 and variant == "compile":
                compile_s = took
        times = [step() for _ in range(args.steps)]
    finally:
        torch.backends.mkldnn.enabled = onednn
    return {
        "median_s": statistics.median(times),
        "fastest_s": min(times),
        "compile_s": round(compile_s, 1) if variant == "compile" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "train_step.json")
    args = parser.parse_args()
    variants = list(dict.fromkeys(v.strip() for v in args.variants.split(",") if v.strip()))
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    text = captions(args.batch)
    results = {}
    for variant in variants:
        results[variant] = time_variant(variant, args, text)
        print(f"  {LABELS[variant]}: {results[variant]['median_s']:.3f} s", flush=True)
    baseline = results.get("fp32", {}).get("median_s")
    print(f"\ndenoiser training step, batch {args.batch}, {args.threads} threads ({cpu_flags()})")
    print(f"{'variant':<20} {'median s':>9} {'fastest s':>10} {'vs fp32':>8} {'6,000 steps':>12}")
    for variant, row in results.items():
        ratio = baseline / row["median_s"] if baseline else float("nan")
        row["speedup_vs_fp32"] = ratio
        minutes = 6000 * row["median_s"] / 60
        extra = f"  (compile {row['compile_s']} s)" if row["compile_s"] is not None else ""
        print(
            f"{LABELS[variant]:<20} {row['median_s']:9.3f} {row['fastest_s']:10.3f} "
            f"{ratio:7.2f}x {minutes:9.0f} min{extra}"
        )
    summary = {
        "machine": {
            "platform": platform.platform(),
            "cpu_flags": cpu_flags(),
            "torch": torch.__version__,
            "threads": args.threads,
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        },
        "batch": args.batch,
        "steps": args.steps,
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
