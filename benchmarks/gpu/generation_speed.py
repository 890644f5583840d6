"""Generation speed on one CUDA GPU: plain diffusers vs sdkit ``optimize="none"`` vs ``"max"``.

The full SD 1.5 (512x512, 50 steps) and SDXL (1024x1024, 30 steps) architectures, built from
the configs that ship in ``sdkit/configs`` with random weights (speed does not depend on the
weights; nothing is downloaded), saved once as fp16 folders that both sides load. Batch 1,
Euler, CFG 7. Per architecture:

- ``plain``: ``DiffusionPipeline.from_pretrained(folder, torch_dtype=float16)`` called with a
  prompt; ``none`` and ``max``: ``Generator(folder, optimize=..., watermark=False)``.
- ``max``: the first image after load (compile included), seconds per image, it/s, the
  largest pixel difference from ``none`` at the same seed, and whether a second size in the
  same bucket compiles again (dynamo's graph count before and after).
- SD 1.5 only: 32 images written as signed files by ``generate_many`` vs 32 images generated
  without provenance (same ``max`` Generator): the throughput ratio.

Prints a table and writes JSON. ``--arch sd15`` or ``--arch sdxl`` runs one (each fits one
10-minute device call; both together may not). Without CUDA it stops with exit status 2.

    python benchmarks/gpu/generation_speed.py [--arch sd15|sdxl|both] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ARCHS = {
    "sd15": {"config": "sd1", "size": 512, "steps": 50, "second": 640},
    "sdxl": {"config": "sdxl", "size": 1024, "steps": 30, "second": 1152},
}
PROMPT = "a lighthouse at dusk, dramatic clouds"


def build_folder(arch: str, out: Path) -> Path:
    """Random-weight fp16 pipeline folder of ``arch`` from sdkit's shipped configs."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sdkit._clip_vocab import clip_tokenizer

    configs = ROOT / "sdkit" / "configs" / ARCHS[arch]["config"]
    torch.manual_seed(0)
    with torch.device("cuda"):
        parts: dict[str, Any] = {
            "unet": UNet2DConditionModel.from_config(
                UNet2DConditionModel.load_config(configs / "unet")
            ),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
            "text_encoder": CLIPTextModel(
                CLIPTextConfig.from_json_file(configs / "text_encoder" / "config.json")
            ),
        }
        if arch == "sdxl":
            config = CLIPTextConfig.from_json_file(configs / "text_encoder_2" / "config.json")
            parts["text_encoder_2"] = CLIPTextModelWithProjection(config)
    scheduler = EulerDiscreteScheduler.from_config(
        EulerDiscreteScheduler.load_config(configs / "scheduler")
    )
    tokenizer = clip_tokenizer(out / "tok")
    if arch == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        pipe: Any = StableDiffusionXLPipeline(
            tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=scheduler, **parts
        )
    else:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            tokenizer=tokenizer, scheduler=scheduler, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False, **parts,
        )  # fmt: skip
    pipe.to(torch.float16)
    folder = out / arch
    pipe.save_pretrained(folder, safe_serialization=True)
    del pipe, parts
    torch.cuda.empty_cache()
    return folder


def _timed(fn: Any, runs: int) -> list[float]:
    out = []
    for seed in range(runs):
        torch.cuda.synchronize()
        clock = time.perf_counter()
        fn(seed)
        torch.cuda.synchronize()
        out.append(time.perf_counter() - clock)
    return out


def bench(arch: str, folder: Path, runs: int) -> dict[str, Any]:
    from diffusers import DiffusionPipeline, EulerDiscreteScheduler
    from torch._dynamo.utils import counters

    from sdkit import Generator

    size, steps, second = (ARCHS[arch][k] for k in ("size", "steps", "second"))
    row: dict[str, Any] = {"size": size, "steps": steps}

    plain = DiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float16).to("cuda")
    plain.scheduler = EulerDiscreteScheduler.from_config(plain.scheduler.config)
    plain.set_progress_bar_config(disable=True)

    def run_plain(seed: int) -> Any:
        g = torch.Generator("cpu").manual_seed(seed)
        return plain(PROMPT, num_inference_steps=steps, guidance_scale=7.0, height=size,
                     width=size, generator=g).images[0]  # fmt: skip

    run_plain(0)
    row["plain"] = {"seconds": _timed(run_plain, runs)}

    eager = Generator(folder, optimize="none", watermark=False, progress=False)

    def run_eager(seed: int) -> Any:
        return eager(PROMPT, sampler="Euler", steps=steps, seed=seed, width=size, height=size).image.image  # fmt: skip

    run_eager(0)
    row["none"] = {"seconds": _timed(run_eager, runs)}
    reference = np.asarray(run_eager(123), dtype=np.int16)

    clock = time.perf_counter()
    fast = Generator(folder, optimize="max", watermark=False, progress=False)

    def run_fast(seed: int, width: int = size) -> Any:
        return fast(PROMPT, sampler="Euler", steps=steps, seed=seed, width=width, height=width).image.image  # fmt: skip

    run_fast(0)
    first = time.perf_counter() - clock
    row["max"] = {"seconds": _timed(run_fast, runs), "first_image_after_load_s": first,
                  "applied": list(fast.runtime.applied)}  # fmt: skip
    row["max"]["max_pixel_diff_vs_none"] = int(np.abs(np.asarray(run_fast(123), dtype=np.int16) - reference).max())  # fmt: skip
    graphs = counters["stats"]["unique_graphs"]
    clock = time.perf_counter()
    run_fast(0, second)
    row["max"]["second_size"] = {"size": second, "first_call_s": time.perf_counter() - clock,
                                 "new_graphs": counters["stats"]["unique_graphs"] - graphs}  # fmt: skip
    if arch == "sd15":
        from sdkit import Generator as G

        signed = G(folder, optimize="max", progress=False)
        signed.warmup(width=size, height=size)
        count = 32
        torch.cuda.synchronize()
        clock = time.perf_counter()
        for i in range(count):
            run_fast(i)
        only = time.perf_counter() - clock
        with tempfile.TemporaryDirectory() as tmp:
            clock = time.perf_counter()
            signed.generate_many([PROMPT] * count, tmp, seed=0, sampler="Euler", steps=steps,
                                 width=size, height=size, workers=4)  # fmt: skip
            files = time.perf_counter() - clock
        row["batch32"] = {"generation_only_s": only, "signed_files_s": files, "ratio": only / files}
    for key in ("plain", "none", "max"):
        median = statistics.median(row[key]["seconds"])
        row[key].update(median_s=median, it_s=steps / median)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=["sd15", "sdxl", "both"], default="sd15")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("generation_speed_gpu.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs one", file=sys.stderr)
        raise SystemExit(2)
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    archs = ["sd15", "sdxl"] if args.arch == "both" else [args.arch]
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            folder = build_folder(arch, Path(tmp))
            result[arch] = bench(arch, folder, args.runs)
            row = result[arch]
            print(
                f"\n{arch}: {row['size']}x{row['size']}, {row['steps']} steps, Euler, CFG 7, batch 1"
            )
            print(f"{'setup':<7} {'s/image':>8} {'it/s':>7} {'vs plain':>9}")
            for key in ("plain", "none", "max"):
                ratio = row[key]["median_s"] / row["plain"]["median_s"]
                print(f"{key:<7} {row[key]['median_s']:>8.3f} {row[key]['it_s']:>7.1f} {ratio:>9.3f}")  # fmt: skip
            m = row["max"]
            print(f"max: first image after load {m['first_image_after_load_s']:.1f} s; "
                  f"max pixel diff vs none {m['max_pixel_diff_vs_none']}; second size "
                  f"{m['second_size']['size']}: {m['second_size']['new_graphs']} new graphs")  # fmt: skip
            if "batch32" in row:
                print(f"32 signed files vs generation only: {row['batch32']['ratio']:.1%}")
            args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
