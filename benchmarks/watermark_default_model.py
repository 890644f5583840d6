"""Does the watermark survive JPEG on the shipped model's small, flat 256 px pictures?

The robustness benchmark (``watermark_robustness.py``) uses photos of 512 px and more; the
model sdkit ships draws 256 px pictures of one flat shape, the hardest case for the mark. This
makes ``--pictures`` of them (25 steps, seeds 100.., one large shape of each colour and kind),
embeds a fixed payload per picture (the default method) (``Payload(content_id=seed, issuer_id=1)``, so a rerun gives
the same numbers), re-encodes each with PIL's JPEG (4:2:0) at every quality and with WebP q75, and counts the
pictures whose exact payload comes back; the unencoded marked picture is the baseline. Prints
the PSNR of each marked picture against the unmarked one too.

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

from provenance.watermark import Payload, embed, extract
from sdkit import Generator

QUALITIES = (95, 90, 85, 80, 75, 70, 50)
WEBP_QUALITIES = (75,)  # issue 22: JPEG q75 and WebP q75 >= 90 %, PSNR >= 40 dB
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black")
SHAPES = ("circle", "square", "triangle", "star", "cross")


def _prompt(i: int) -> str:
    shape, colour = SHAPES[i % len(SHAPES)], COLOURS[i % len(COLOURS)]
    background = COLOURS[(i + 4) % len(COLOURS)]
    return f"a large {colour} {shape} in the center on a {background} background"


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
    for i in range(args.pictures):
        seed = 100 + i
        picture = gen(_prompt(i), seed=seed).image.image
        payload = Payload(content_id=seed, issuer_id=1)
        marked = embed(picture, payload)
        kept["none"] += _found(marked, payload, None)
        for quality in QUALITIES:
            kept[f"q{quality}"] += _found(marked, payload, quality)
        for quality in WEBP_QUALITIES:
            kept[f"webp_q{quality}"] += _found(marked, payload, quality, "WEBP")
        diff = np.asarray(marked, np.float64) - np.asarray(picture.convert("RGB"), np.float64)
        psnr.append(float(10 * np.log10(255**2 / max(float(np.mean(diff**2)), 1e-12))))
    elapsed = time.perf_counter() - started

    print(f"{args.pictures} pictures of the shipped model, 256 px, payload kept exactly:")
    print(f"{'re-encoding':<12} {'kept':>6}")
    for name, count in kept.items():
        print(f"{name:<12} {count:>3}/{args.pictures}")
    print(f"PSNR: min {min(psnr):.1f} dB, median {sorted(psnr)[len(psnr) // 2]:.1f} dB")
    print(f"({elapsed:.0f} s on {platform.processor() or platform.machine()})")
    if args.json:
        result = {"pictures": args.pictures, "kept": kept, "psnr_db": psnr, "elapsed_s": elapsed}
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
