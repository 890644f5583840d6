"""How often do the known public watermarks "decode" from photos that carry none?

``sdkit detect`` accepts diffusers' SDXL mark and the SD 1 / SD 2 scripts' marks
(:mod:`provenance.detector.known_watermarks`) only when every bit matches. invisible-watermark
returns bits from any image, and photos are not random, so this measures the false-positive
rate instead of assuming 2^-n. The corpus: ``--photos`` unmarked images made from the photos in
scikit-image and scikit-learn (random crops of at least 256 px, rescaled 0.5-1.5x), each as
decoded pixels and as a JPEG re-encoding (quality 50-95). For each mark it counts exact matches
(the false positives) and the best bit agreement seen (the margin); the declaration readers run
on the same files. As a baseline in the same run, the same marks embedded by their tools'
methods into ``--marked`` of the photos, and how many come back exactly.

    python benchmarks/known_watermarks_false_positives.py [--photos 500] [--marked 50] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from imwatermark import WatermarkDecoder, WatermarkEncoder
from PIL import Image
from skimage import data
from sklearn.datasets import load_sample_images

from provenance.detector.declarations import find_declarations
from provenance.detector.known_watermarks import KNOWN_MARKS, find_known_marks

SKIMAGE = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)


def _sources() -> list[Image.Image]:
    out = []
    for name in SKIMAGE:
        try:
            pixels = getattr(data, name)()
        except Exception:  # a photo that needs a download: skip it (the count is printed)
            continue
        if pixels.dtype == bool:
            pixels = pixels.astype(np.uint8) * 255
        out.append(Image.fromarray(pixels).convert("RGB"))
    out += [Image.fromarray(p).convert("RGB") for p in load_sample_images().images]
    return [im for im in out if min(im.size) >= 256]


def _variant(source: Image.Image, rng: random.Random) -> Image.Image:
    scale = rng.uniform(0.5, 1.5)
    image = source.resize(
        (max(256, round(source.width * scale)), max(256, round(source.height * scale))),
        Image.Resampling.BICUBIC,
    )
    w = rng.randint(256, image.width)
    h = rng.randint(256, image.height)
    left, top = rng.randint(0, image.width - w), rng.randint(0, image.height - h)
    return image.crop((left, top, left + w, top + h))


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as im:
        im.load()
        return im


def _agreement(image: Image.Image) -> dict[str, int]:
    """Bits of each mark that the image's decoded bits agree with."""
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    out = {}
    for mark in KNOWN_MARKS:
        bits = WatermarkDecoder("bits", len(mark.bits)).decode(bgr.astype(mark.dtype), "dwtDct")
        decoded = (np.asarray(bits).reshape(-1) > 0).astype(int)
        out[mark.name] = int((decoded == np.asarray(mark.bits)).sum())
    return out


def _mark(image: Image.Image, name: str) -> Image.Image:
    mark = next(m for m in KNOWN_MARKS if m.name == name)
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", list(mark.bits))
    rgb = np.asarray(image.convert("RGB"))
    if mark.dtype == "float32":  # diffusers: the float array 255 * (x / 2 + 0.5), clamped after
        out = encoder.encode(rgb[:, :, ::-1].astype(np.float32), "dwtDct")[:, :, ::-1]
        return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # the SD scripts' put_watermark
    return Image.fromarray(encoder.encode(bgr, "dwtDct")[:, :, ::-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--marked", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sources = _sources()
    start = time.perf_counter()
    names = [m.name for m in KNOWN_MARKS]
    false_pos = {n: 0 for n in names}
    best = {n: 0 for n in names}
    declared = 0
    checked = 0
    marked_ok = {n: 0 for n in names}
    for i in range(args.photos):
        image = _variant(sources[i % len(sources)], rng)
        for copy in (image, _jpeg(image, rng.randint(50, 95))):
            checked += 1
            for mark in find_known_marks(copy):
                false_pos[mark.name] += 1
            for name, agree in _agreement(copy).items():
                best[name] = max(best[name], agree)
            declared += bool(find_declarations(copy, None))
        if i < args.marked:
            for name in names:
                found = find_known_marks(_mark(image, name))
                marked_ok[name] += name in [m.name for m in found]
    elapsed = time.perf_counter() - start
    rows = [
        {
            "mark": m.name,
            "bits": len(m.bits),
            "unmarked_checked": checked,
            "false_positives": false_pos[m.name],
            "best_agreement": best[m.name],
            "marked": min(args.marked, args.photos),
            "marked_found_exactly": marked_ok[m.name],
        }
        for m in KNOWN_MARKS
    ]
    print(f"{len(sources)} source photos, {args.photos} variants + their JPEG re-encodings")
    print(
        f"{'mark':<16}{'bits':>5}{'checked':>9}{'false pos.':>11}{'best agree':>12}{'marked found':>14}"
    )
    for r in rows:
        print(
            f"{r['mark']:<16}{r['bits']:>5}{r['unmarked_checked']:>9}{r['false_positives']:>11}"
            f"{str(r['best_agreement']) + '/' + str(r['bits']):>12}"
            f"{str(r['marked_found_exactly']) + '/' + str(r['marked']):>14}"
        )
    print(f"declarations found on the unmarked files: {declared} of {checked}; {elapsed:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": rows,
                    "declarations_on_unmarked": declared,
                    "sources": len(sources),
                    "seconds": elapsed,
                    "python": sys.version.split()[0],
                    "machine": platform.machine(),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
