"""Does the watermark survive JPEG on the shipped model's small, flat 256 px pictures?

The robustness benchmark (``watermark_robustness.py``) uses photos of 512 px and more; the
model sdkit ships draws 256 px pictures of one flat shape, the hardest case for the mark. This
makes ``--pictures`` of them (25 steps, seeds 100.., one large shape of each colour and kind),
embeds a fixed payload per picture (the default method) (``Payload(content_id=seed, issuer_id=1)``, so a rerun gives
the same numbers), re-encodes each with PIL's JPEG (4:2:0) at every quality and with WebP q75
and q60, and counts the pictures whose exact payload comes back; the unencoded marked picture is
the baseline. Prints, for each marked picture against the unmarked one, the PSNR, the SSIM and
the share of pixels whose luma changed by more than the visibility threshold of their
background (``ss2.luminance_jnd``, Chou and Li 1995): how visible the mark is, measured.

    python benchmarks/watermark_default_model.py [--pictures 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import uniform_filter
from skimage.metrics import structural_similarity
from watermark_data import generated_prompt

from provenance.watermark import Payload, embed, extract, spread, ss2
from sdkit import Generator

QUALITIES = (95, 90, 85, 80, 75, 70, 50)
WEBP_QUALITIES = (75, 60)  # issue 22: JPEG q75 and WebP q75 >= 90 %, PSNR >= 40 dB


def _found(image: Image.Image, payload: Payload, quality: int | None, fmt: str = "JPEG") -> bool:
    if quality is not None:
        buffer = io.BytesIO()
        image.save(buffer, fmt, quality=quality)
        buffer.seek(0)
        image = Image.open(buffer)
    detection = extract(image)
    return detection is not None and detection.payload == payload


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    gen = Generator(device="cpu", progress=False, watermark=False)
    started = time.perf_counter()
    kept: dict[str, int] = {"none": 0, **{f"q{q}": 0 for q in QUALITIES}}
    kept |= {f"webp_q{q}": 0 for q in WEBP_QUALITIES}
    psnr: list[float] = []
    ssim: list[float] = []
    over_jnd: list[float] = []
    for i in range(args.pictures):
        seed = 100 + i
        picture = gen(generated_prompt(i), seed=seed).image.image
        payload = Payload(content_id=seed, issuer_id=1)
        marked = embed(picture, payload)
        kept["none"] += _found(marked, payload, None)
        for quality in QUALITIES:
            kept[f"q{quality}"] += _found(marked, payload, quality)
        for quality in WEBP_QUALITIES:
            kept[f"webp_q{quality}"] += _found(marked, payload, quality, "WEBP")
        before = np.asarray(picture.convert("RGB"), np.float64)
        after = np.asarray(marked.convert("RGB"), np.float64)
        psnr.append(
            float(10 * np.log10(255**2 / max(float(np.mean((after - before) ** 2)), 1e-12)))
        )
        ssim.append(float(structural_similarity(before, after, channel_axis=2, data_range=255)))
        luma = spread._luma(before)
        jnd = ss2.luminance_jnd(uniform_filter(luma, 5))
        over_jnd.append(float(np.mean(np.abs(spread._luma(after) - luma) > jnd)))
    elapsed = time.perf_counter() - started

    print(f"{args.pictures} pictures of the shipped model, 256 px, payload kept exactly:")
    print(f"{'re-encoding':<12} {'kept':>6}")
    for name, count in kept.items():
        print(f"{name:<12} {count:>3}/{args.pictures}")
    print(f"PSNR: min {min(psnr):.1f} dB, median {sorted(psnr)[len(psnr) // 2]:.1f} dB")
    print(f"SSIM: min {min(ssim):.3f}, median {sorted(ssim)[len(ssim) // 2]:.3f}")
    print(f"pixels changed by more than the luminance JND: at most {max(over_jnd):.2%}")
    print(f"({elapsed:.0f} s on {platform.processor() or platform.machine()})")
    if args.json:
        result = {
            "pictures": args.pictures,
            "kept": kept,
            "psnr_db": psnr,
            "ssim": ssim,
            "over_jnd_share": over_jnd,
            "elapsed_s": elapsed,
        }
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
