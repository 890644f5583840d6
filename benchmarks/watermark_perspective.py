"""Projective maps and other geometry the robustness benchmark does not try: how often sdkit
reads the exact payload.

The robustness benchmark's ``perspective_4pct`` moves the four corners in a fixed pattern whose
opposite edges stay within 1.2 % of each other's length, so it is nearly an affine map, which
the decoder undoes. A phone photo of a screen is a keystone: one edge shorter than the one
opposite, so the scale runs across the picture. This script tries keystones of 2-4 % from the
top and from the left, one corner moved in, and a set of everyday edits outside the benchmark's
list (stretches along the other axis, shear along the other axis, other angles and fills,
compositions), on the benchmark's photos and generated pictures, one payload each.

    python benchmarks/watermark_perspective.py [--size 512] [--photos 14] [--generated 6]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from PIL import Image, ImageOps
from watermark_data import (
    Attack,
    corners_moved,
    jpeg,
    keystone,
    load_generated,
    load_photos,
    rotate,
    webp,
)

from provenance.watermark import Payload, embed, extract


def _resized(fx: float, fy: float) -> Attack:
    return lambda image: image.resize(
        (round(image.width * fx), round(image.height * fy)), Image.Resampling.BICUBIC
    )


def _turned(
    angle: float, *, fill: tuple[int, int, int] = (0, 0, 0), expand: bool = False
) -> Attack:
    return lambda image: image.rotate(
        angle, resample=Image.Resampling.BICUBIC, fillcolor=fill, expand=expand
    )


def _vertical_shear(amount: float) -> Attack:
    def attack(image: Image.Image) -> Image.Image:
        w, h = image.size
        k = 2 * amount * h / w
        return image.transform(
            (w, h), Image.Transform.AFFINE, (1, 0, 0, k, 1, -k * w / 2), Image.Resampling.BICUBIC
        )

    return attack


def _chain(*attacks: Attack) -> Attack:
    def attack(image: Image.Image) -> Image.Image:
        for step in attacks:
            image = step(image)
        return image

    return attack


ATTACKS: dict[str, Attack] = {
    **{f"keystone_top_{round(a * 100)}pct": keystone(a) for a in (0.02, 0.03, 0.04)},
    **{
        f"keystone_left_{round(a * 100)}pct": corners_moved((0, a, 0, 0, 0, 0, 0, -a))
        for a in (0.02, 0.03, 0.04)
    },
    "corner_in_4pct": corners_moved((0.04, 0.04, 0, 0, 0, 0, 0, 0)),
    "width_0.8": _resized(0.8, 1.0),
    "width_1.25": _resized(1.25, 1.0),
    "width_0.9_height_1.1": _resized(0.9, 1.1),
    "vertical_shear_4pct": _vertical_shear(0.04),
    "rotate_-13_cropped": rotate(-13.0, cropped=True),
    "rotate_11_white_fill": _turned(11.0, fill=(255, 255, 255)),
    "rotate_8_canvas_grown": _turned(8.0, expand=True),
    "mirror_rotate_7_cropped": _chain(ImageOps.mirror, rotate(7.0, cropped=True)),
    "rotate_90_jpeg_75": _chain(lambda i: i.transpose(Image.Transpose.ROTATE_90), jpeg(75)),
    "mirror_webp_70": _chain(ImageOps.mirror, webp(70)),
    "flip_jpeg_40": _chain(ImageOps.flip, jpeg(40)),
    "transpose": lambda image: image.transpose(Image.Transpose.TRANSPOSE),
    "scale_0.6_rotate_3": _chain(_resized(0.6, 0.6), _turned(3.0)),
    "screenshot_0.8_into_4x5": _chain(
        _resized(0.8, 0.8),
        lambda i: i.resize((i.width, round(i.width * 1.25)), Image.Resampling.BICUBIC),
    ),
    "rotate_-4_height_0.9_jpeg_80": _chain(
        rotate(-4.0, cropped=True), _resized(1.0, 0.9), jpeg(80)
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--photos", type=int, default=14, help="first N photos")
    parser.add_argument("--generated", type=int, default=6, help="shipped-model pictures")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pictures = load_photos(args.size, limit=args.photos) + load_generated(args.size, args.generated)
    start = time.perf_counter()
    missed: dict[str, list[str]] = {name: [] for name in ATTACKS}
    for i, picture in enumerate(pictures):
        payload = Payload(content_id=0x22_0000 + i, issuer_id=22)
        marked = embed(picture.image, payload)
        for name, attack in ATTACKS.items():
            found = extract(attack(marked))
            if found is None or found.payload != payload:
                missed[name].append(picture.name)
    print(f"exact payload, {len(pictures)} pictures at {args.size} px")
    print(f"{'attack':<30} {'read':>7}  missed")
    for name, names in missed.items():
        read = len(pictures) - len(names)
        print(f"{name:<30} {read:>3}/{len(pictures):<3}  {', '.join(names) or '-'}")
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        result = {
            "options": vars(args) | {"json": None},
            "pictures": [p.name for p in pictures],
            "missed": missed,
        }
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
