"""Data for the watermark robustness benchmark: real photos, attacks, and an unmarked corpus.

Four parts, each usable alone (by ``watermark_robustness.py`` and by the tests):

* ``load_photos(size)``: 14 real photos from scikit-image and scikit-learn, centre-cropped to a
  square and resized with LANCZOS to ``size`` x ``size`` RGB. Several sources are smaller than
  the target size and are UPSCALED (``Photo.upscaled``): at 512 px five of them, at 1024 px all
  but ``retina``. Upscaled photos are smoother than real photos of that size, which makes them
  easier to watermark invisibly and harder to carry bits in; the benchmark reports them anyway
  and records the flag per image. Greyscale sources (camera, brick, grass, gravel, moon) are
  repeated into three equal channels (``Photo.grey``).
* ``load_generated(size, count)``: pictures the shipped model draws at ``size`` px (one large
  shape on a flat background, with the model's fine grain), which issue 22 measures beside the
  photos; drawn once and then read from a cache.
* ``ATTACKS``: name -> function PIL image -> PIL image, the everyday edits a marked image meets.
  The crops and ``reshare`` change the image size; nothing is resized back unless the name says
  so ("and_back").
* ``unmarked_corpus(count, seed)``: a lazy generator of unmarked images for false-positive
  tests: the photos at both sizes, then random crops, resizes, flips and JPEG re-encodings of
  them, and synthetic flat, gradient and noise images (Gaussian, uniform, salt-and-pepper). Item
  ``i`` depends only on ``(seed, i)``, so any item can be rebuilt alone.

Example:
    >>> photo = load_photos(512, limit=1)[0]
    >>> photo.name, photo.image.size, photo.upscaled
    ('astronaut', (512, 512), False)
    >>> ATTACKS["crop_10pct"](photo.image).size
    (486, 486)
    >>> ATTACKS["reshare"](load_photos(1024, limit=1)[0].image).size
    (720, 720)
    >>> [item.kind for item in unmarked_corpus(2)]
    ['photo', 'photo']
"""

from __future__ import annotations

import functools
import io
import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import skimage.data
from PIL import Image, ImageEnhance
from sklearn.datasets import load_sample_image

Attack = Callable[[Image.Image], Image.Image]

# 1. Photos. Order matters: --quick and the tests take the first three.
PHOTO_SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": skimage.data.astronaut,  # 512x512
    "coffee": skimage.data.coffee,  # 400x600
    "chelsea": skimage.data.chelsea,  # 300x451
    "rocket": skimage.data.rocket,  # 427x640
    "china": lambda: load_sample_image("china.jpg"),  # 427x640
    "flower": lambda: load_sample_image("flower.jpg"),  # 427x640
    "hubble_deep_field": skimage.data.hubble_deep_field,  # 872x1000
    "immunohistochemistry": skimage.data.immunohistochemistry,  # 512x512
    "retina": skimage.data.retina,  # 1411x1411
    "camera": skimage.data.camera,  # 512x512 grey
    "brick": skimage.data.brick,  # 512x512 grey texture
    "grass": skimage.data.grass,  # 512x512 grey texture
    "gravel": skimage.data.gravel,  # 512x512 grey texture
    "moon": skimage.data.moon,  # 512x512 grey
}
SIZES = (512, 1024)


@dataclass(frozen=True, eq=False)
class Photo:
    """One benchmark photo: a centre square of a source image, resized to ``size``."""

    name: str
    size: int
    image: Image.Image  # RGB, size x size
    native_side: int  # side of the centre square before resizing
    grey: bool
    generated: bool = False  # drawn by the shipped model (load_generated), not a photo

    @property
    def upscaled(self) -> bool:
        return self.native_side < self.size

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "native_side": self.native_side,
            "upscaled": self.upscaled,
            "grey": self.grey,
            "generated": self.generated,
        }


@functools.cache
def _square(name: str, size: int) -> tuple[np.ndarray, int, bool]:
    pixels = np.asarray(PHOTO_SOURCES[name]())
    grey = pixels.ndim == 2
    if grey:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    h, w = pixels.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(np.ascontiguousarray(pixels[top : top + side, left : left + side, :3]))
    resized = square.resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(resized.convert("RGB"))
    array.flags.writeable = False
    return array, side, grey


def load_photo(name: str, size: int) -> Photo:
    """Returns photo ``name`` (a key of ``PHOTO_SOURCES``) as a ``size`` x ``size`` RGB image."""
    if name not in PHOTO_SOURCES:
        raise ValueError(f"unknown photo {name!r}; choose from {', '.join(PHOTO_SOURCES)}")
    array, side, grey = _square(name, size)
    return Photo(name, size, Image.fromarray(array.copy()), side, grey)


def load_photos(size: int, limit: int | None = None) -> list[Photo]:
    """Returns the first ``limit`` photos (all 14 by default) at ``size`` x ``size``."""
    return [load_photo(name, size) for name in list(PHOTO_SOURCES)[:limit]]


GENERATED_STEPS = 25  # the shipped model's pictures: the default sampler, this many steps
GENERATED_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black")
GENERATED_SHAPES = ("circle", "square", "triangle", "star", "cross")


def generated_prompt(i: int) -> str:
    """The ``i``-th prompt of the generated pictures: one large shape on a flat background (what
    the shipped model draws; ``watermark_default_model.py`` uses the same prompts at 256 px)."""
    shape = GENERATED_SHAPES[i % len(GENERATED_SHAPES)]
    colour = GENERATED_COLOURS[i % len(GENERATED_COLOURS)]
    background = GENERATED_COLOURS[(i + 4) % len(GENERATED_COLOURS)]
    return f"a large {colour} {shape} in the center on a {background} background"


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "sdkit-benchmarks" / "generated"


def load_generated(size: int, count: int) -> list[Photo]:
    """``count`` pictures the shipped model draws at ``size`` x ``size`` (seeds 100, 101, ...,
    prompts :func:`generated_prompt`), unwatermarked.

    Drawing one takes about 10 s at 512 px and 40 s at 1024 on 2 cores, so each is kept as a PNG
    under ``$XDG_CACHE_HOME/sdkit-benchmarks/generated`` (by default ``~/.cache``), named by the
    shipped model's weights hash, seed and size; a later run reads it back.
    """
    if count <= 0:
        return []
    import torch  # torch and diffusers: only when pictures are asked for

    from sdkit import Generator

    generator = Generator(device="cpu", progress=False, watermark=False)
    folder = _cache_dir()
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # a benchmark pins one thread: draw on all
    try:
        pictures = []
        for i in range(count):
            seed = 100 + i
            path = folder / f"{generator.model_sha256[:16]}-{seed}-{size}.png"
            if path.is_file():
                image = Image.open(path).convert("RGB")
            else:
                result = generator(
                    generated_prompt(i), seed=seed, width=size, height=size, steps=GENERATED_STEPS
                )
                image = result.image.image.convert("RGB")
                folder.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".part")
                image.save(partial, "PNG")
                partial.replace(path)  # whole files only: an interrupted run leaves no bad PNG
            pictures.append(
                Photo(f"generated_{seed}", size, image, size, grey=False, generated=True)
            )
        return pictures
    finally:
        torch.set_num_threads(threads)


# 2. Attacks.
def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)  # PIL default: 4:2:0 subsampling
    return Image.open(buffer).convert("RGB")


def _webp(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "WEBP", quality=quality)  # lossy
    return Image.open(buffer).convert("RGB")


def jpeg(quality: int) -> Attack:
    """JPEG re-encoding at ``quality`` with PIL's defaults (4:2:0 chroma subsampling)."""
    return functools.partial(_jpeg, quality=quality)


def webp(quality: int) -> Attack:
    """Lossy WebP re-encoding at ``quality``."""
    return functools.partial(_webp, quality=quality)


def resize_and_back(factor: float) -> Attack:
    """Bicubic downscale by ``factor``, then bicubic back up to the original size."""

    def attack(image: Image.Image) -> Image.Image:
        w, h = image.size
        small = image.resize(
            (max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BICUBIC
        )
        return small.resize((w, h), Image.Resampling.BICUBIC)

    return attack


def crop(area_removed: float, anchor: Literal["centre", "top_left"] = "centre") -> Attack:
    """Crops away ``area_removed`` of the area; the result keeps the aspect ratio and its size.

    Each side is scaled by ``sqrt(1 - area_removed)`` (0.1 -> 94.87 %: 486 of 512 px, 971 of
    1024). ``centre`` keeps the middle (13 px off each edge at 512, so block grids are shifted);
    ``top_left`` cuts only the right and bottom edges (the image origin stays in place).
    """
    keep = math.sqrt(1.0 - area_removed)

    def attack(image: Image.Image) -> Image.Image:
        w, h = image.size
        cw, ch = round(w * keep), round(h * keep)
        left, top = ((w - cw) // 2, (h - ch) // 2) if anchor == "centre" else (0, 0)
        return image.crop((left, top, left + cw, top + ch))

    return attack


def enhance(kind: type[ImageEnhance._Enhance], factor: float) -> Attack:
    """``PIL.ImageEnhance`` ``kind`` (Brightness, Contrast, ...) by ``factor``."""
    return lambda image: kind(image).enhance(factor)


def reshare(image: Image.Image, long_edge: int = 720, quality: int = 80) -> Image.Image:
    """What a messaging app does: LANCZOS down to a ``long_edge`` px long edge, then JPEG.

    Images whose long edge is already at most ``long_edge`` (512 px) are only re-encoded.
    """
    w, h = image.size
    if max(w, h) > long_edge:
        scale = long_edge / max(w, h)
        image = image.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
    return _jpeg(image, quality)


def _angle_of(image: Image.Image) -> float:
    """A rotation angle in [-15, 15] degrees drawn from the image's own bytes (reproducible)."""
    rng = np.random.default_rng(zlib.crc32(image.tobytes()))
    return float(rng.uniform(-15.0, 15.0))


def rotate(angle: float | None, *, cropped: bool) -> Attack:
    """Rotate by ``angle`` degrees (None: drawn per image in +/-15), bicubic, corners filled
    black; ``cropped``: then keep the centred axis-aligned rectangle with no filled pixel."""

    def attack(image: Image.Image) -> Image.Image:
        theta = _angle_of(image) if angle is None else angle
        turned = image.rotate(theta, resample=Image.Resampling.BICUBIC)
        if not cropped:
            return turned
        w, h = image.size
        t = math.radians(abs(theta))
        # the largest centred rectangle of the same aspect inside the rotated frame
        scale = min(w, h) / (min(w, h) * math.cos(t) + max(w, h) * math.sin(t))
        cw, ch = int(w * scale), int(h * scale)
        left, top = (w - cw) // 2, (h - ch) // 2
        return turned.crop((left, top, left + cw, top + ch))

    return attack


def aspect(factor: float) -> Attack:
    """Height x ``factor`` (bicubic), width kept: a picture squeezed into another slot."""
    return lambda image: image.resize(
        (image.width, round(image.height * factor)), Image.Resampling.BICUBIC
    )


def shear(amount: float) -> Attack:
    """Horizontal shear moving the top and bottom edges by ``amount`` of the width, opposite."""

    def attack(image: Image.Image) -> Image.Image:
        w, h = image.size
        k = 2 * amount * w / h
        return image.transform(
            (w, h), Image.Transform.AFFINE, (1, k, -k * h / 2, 0, 1, 0), Image.Resampling.BICUBIC
        )

    return attack


def _output_to_input(target: np.ndarray, source: np.ndarray) -> tuple[float, ...]:
    """PIL's 8 perspective coefficients: the map from the output's corners ``target`` back to
    the input's ``source`` (each 4 x 2, x then y)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return tuple(np.linalg.solve(np.array(rows), np.array(rhs)))


def perspective(amount: float) -> Attack:
    """A phone photo of a screen: the four corners moved inwards/outwards by up to ``amount``
    of the side (fixed pattern), bilinear, outside filled black."""

    def attack(image: Image.Image) -> Image.Image:
        w, h = image.size
        d = amount * np.array([w, h, w, h, w, h, w, h], dtype=np.float64)
        moves = np.array([1.0, 0.5, -0.6, 1.0, -1.0, -0.4, 0.3, -1.0]) * d
        target = np.array([0, 0, w, 0, w, h, 0, h], dtype=np.float64) + moves
        source = np.array([0, 0, w, 0, w, h, 0, h], dtype=np.float64)
        coeffs = _output_to_input(target.reshape(4, 2), source.reshape(4, 2))
        return image.transform(
            (w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR
        )

    return attack


def corners_moved(moves: tuple[float, ...]) -> Attack:
    """The projective map that moves the corners (top left, top right, bottom right, bottom
    left; x then y) by ``moves``, as shares of the width and height; bicubic, outside black."""

    def attack(image: Image.Image) -> Image.Image:
        w, h = image.size
        source = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64)
        target = source + np.array(moves, dtype=np.float64).reshape(4, 2) * (w, h)
        coeffs = _output_to_input(target, source)
        return image.transform(
            (w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC
        )

    return attack


def keystone(amount: float) -> Attack:
    """A screen photographed from below: the top corners moved in by ``amount`` of the width
    each (the top edge ``1 - 2 * amount`` of the bottom's).

    Unlike :func:`perspective`'s pattern, whose opposite edges stay within 1.2 % of each
    other's length (nearly an affine map), this is a projective map: the picture's scale runs
    from ``1 - 2 * amount`` at the top to 1 at the bottom."""
    return corners_moved((amount, 0.0, -amount, 0.0, 0.0, 0.0, 0.0, 0.0))


def _rot5_crop10_jpeg75(image: Image.Image) -> Image.Image:
    return _jpeg(crop(0.10, "top_left")(rotate(5.0, cropped=True)(image)), 75)


ATTACKS: dict[str, Attack] = {
    "none": lambda image: image,
    "jpeg_q90": jpeg(90),
    "jpeg_q75": jpeg(75),
    "jpeg_q50": jpeg(50),
    "webp_q80": webp(80),
    "resize_0.5x_and_back": resize_and_back(0.5),
    "crop_10pct": crop(0.10, "centre"),
    "crop_10pct_corner": crop(0.10, "top_left"),
    "brightness_1.2": enhance(ImageEnhance.Brightness, 1.2),
    "contrast_0.8": enhance(ImageEnhance.Contrast, 0.8),
    "reshare": reshare,
    # issue 22: geometry and harder compression
    "jpeg_q40": jpeg(40),
    "webp_q70": webp(70),
    "webp_q60": webp(60),
    "mirror_h": lambda image: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "mirror_v": lambda image: image.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    "rotate_90": lambda image: image.transpose(Image.Transpose.ROTATE_90),
    "rotate_180": lambda image: image.transpose(Image.Transpose.ROTATE_180),
    "rotate_270": lambda image: image.transpose(Image.Transpose.ROTATE_270),
    "rotate_any_filled": rotate(None, cropped=False),
    "rotate_any_cropped": rotate(None, cropped=True),
    "rotate_2_cropped": rotate(2.0, cropped=True),
    "rotate_15_filled": rotate(15.0, cropped=False),
    "aspect_0.8": aspect(0.8),
    "aspect_1.25": aspect(1.25),
    "shear_4pct": shear(0.04),
    "perspective_4pct": perspective(0.04),
    "keystone_4pct": keystone(0.04),
    "rot5_crop10_jpeg75": _rot5_crop10_jpeg75,
}
ATTACK_DESCRIPTIONS: dict[str, str] = {
    "none": "the marked image as embed returned it",
    "jpeg_q90": "JPEG quality 90, PIL defaults (4:2:0 chroma subsampling)",
    "jpeg_q75": "JPEG quality 75, PIL defaults (4:2:0 chroma subsampling)",
    "jpeg_q50": "JPEG quality 50, PIL defaults (4:2:0 chroma subsampling)",
    "webp_q80": "lossy WebP quality 80 (PIL)",
    "resize_0.5x_and_back": "bicubic down to half width and height, bicubic back to the size",
    "crop_10pct": "remove 10% of the area: keep the centred region with sides x sqrt(0.9) "
    "(486 of 512 px, 971 of 1024), not resized back",
    "crop_10pct_corner": "remove 10% of the area from the right and bottom edges only: keep the "
    "top-left region with sides x sqrt(0.9), not resized back (no target; tells lost content "
    "from a shifted origin)",
    "brightness_1.2": "PIL ImageEnhance.Brightness(1.2)",
    "contrast_0.8": "PIL ImageEnhance.Contrast(0.8)",
    "reshare": "LANCZOS down to a 720 px long edge when larger (1024 -> 720), then JPEG quality "
    "80; images of 720 px or less (512) are only re-encoded",
    "jpeg_q40": "JPEG quality 40, PIL defaults (4:2:0 chroma subsampling)",
    "webp_q70": "lossy WebP quality 70 (PIL)",
    "webp_q60": "lossy WebP quality 60 (PIL)",
    "mirror_h": "mirrored left-right",
    "mirror_v": "mirrored top-bottom",
    "rotate_90": "a quarter turn anticlockwise",
    "rotate_180": "a half turn",
    "rotate_270": "three quarter turns anticlockwise",
    "rotate_any_filled": "rotated by an angle in +/-15 degrees drawn per image, bicubic, same "
    "size, corners filled black",
    "rotate_any_cropped": "as rotate_any_filled, then cropped to the centred rectangle of the "
    "same aspect without filled pixels",
    "rotate_2_cropped": "rotated by 2 degrees, cropped to remove the filled corners",
    "rotate_15_filled": "rotated by 15 degrees, corners filled black",
    "aspect_0.8": "height x 0.8 (bicubic), width kept",
    "aspect_1.25": "height x 1.25 (bicubic), width kept",
    "shear_4pct": "horizontal shear: top and bottom edges moved by 4% of the width, opposite ways",
    "perspective_4pct": "perspective: the corners moved by up to 4% of the side, outside black "
    "(a fixed pattern whose opposite edges stay within 1.2% of each other's length)",
    "keystone_4pct": "a screen photographed from below: the top corners moved in by 4% of the "
    "width each, bicubic, outside black (the top edge 92% of the bottom's)",
    "rot5_crop10_jpeg75": "rotated 5 degrees and cropped to remove the corners, 10% of the area "
    "cropped from the right and bottom, JPEG quality 75",
}


def splice(
    marked: Image.Image, host: Image.Image, rng: np.random.Generator
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Paste ``marked`` as it is into ``host`` resized to twice its sides (so it covers 25 % of
    the composite), at a random place: a generated picture pasted into a photo.

    Returns:
        The composite and the pasted region's box (left, top, right, bottom).
    """
    w, h = marked.size
    composite = host.resize((2 * w, 2 * h), Image.Resampling.LANCZOS).convert("RGB")
    left = int(rng.integers(0, w + 1))
    top = int(rng.integers(0, h + 1))
    composite.paste(marked.convert("RGB"), (left, top))
    return composite, (left, top, left + w, top + h)


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two boxes (left, top, right, bottom).

    Example:
        >>> iou((0, 0, 10, 10), (5, 0, 15, 10))
        0.3333333333333333
    """
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


# 3. Unmarked corpus.
@dataclass(frozen=True, eq=False)
class CorpusItem:
    """One unmarked image; ``name`` says how it was made."""

    index: int
    kind: str
    name: str
    image: Image.Image  # RGB


def _random_size(rng: np.random.Generator, low: int = 256, high: int = 1024) -> tuple[int, int]:
    return int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))


def _random_photo(rng: np.random.Generator) -> tuple[str, Image.Image]:
    name = str(rng.choice(list(PHOTO_SOURCES)))
    size = int(rng.choice(SIZES))
    return f"{name}@{size}", load_photo(name, size).image


def _random_crop(rng: np.random.Generator) -> tuple[str, Image.Image]:
    source, image = _random_photo(rng)
    w, h = _random_size(rng, 256, image.width)
    x, y = int(rng.integers(0, image.width - w + 1)), int(rng.integers(0, image.height - h + 1))
    return f"{source} crop {w}x{h}+{x}+{y}", image.crop((x, y, x + w, y + h))


def _random_resize(rng: np.random.Generator) -> tuple[str, Image.Image]:
    source, image = _random_photo(rng)
    w, h = _random_size(rng)
    method = rng.choice(["LANCZOS", "BICUBIC", "BILINEAR"])
    return f"{source} resize {w}x{h} {method}", image.resize((w, h), Image.Resampling[str(method)])


def _random_flip(rng: np.random.Generator) -> tuple[str, Image.Image]:
    name, image = _random_crop(rng) if rng.random() < 0.5 else _random_photo(rng)
    flip = str(rng.choice(["FLIP_LEFT_RIGHT", "FLIP_TOP_BOTTOM", "ROTATE_180"]))
    return f"{name} {flip}", image.transpose(Image.Transpose[flip])


def _random_jpeg(rng: np.random.Generator) -> tuple[str, Image.Image]:
    name, image = _random_crop(rng) if rng.random() < 0.5 else _random_photo(rng)
    quality = int(rng.integers(30, 96))
    return f"{name} jpeg q{quality}", _jpeg(image, quality)


def _random_rotation(rng: np.random.Generator) -> tuple[str, Image.Image]:
    name, image = _random_crop(rng) if rng.random() < 0.5 else _random_photo(rng)
    angle = float(rng.uniform(-20, 20))
    cropped = bool(rng.random() < 0.5)
    return f"{name} rotate {angle:.1f}{' cropped' if cropped else ''}", rotate(
        angle, cropped=cropped
    )(image)


def _random_webp(rng: np.random.Generator) -> tuple[str, Image.Image]:
    name, image = _random_crop(rng) if rng.random() < 0.5 else _random_photo(rng)
    quality = int(rng.integers(30, 96))
    return f"{name} webp q{quality}", _webp(image, quality)


def _flat(rng: np.random.Generator) -> tuple[str, Image.Image]:
    w, h = _random_size(rng)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    return f"flat {w}x{h} rgb{colour}", Image.new("RGB", (w, h), colour)


def _gradient(rng: np.random.Generator) -> tuple[str, Image.Image]:
    w, h = _random_size(rng)
    angle = float(rng.uniform(0, 2 * np.pi))
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    pixels = start + t[:, :, None] * (end - start).astype(np.float32)
    return (
        f"gradient {w}x{h} angle {np.degrees(angle):.0f} {start.tolist()}->{end.tolist()}",
        Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)),
    )


def _gaussian_noise(rng: np.random.Generator) -> tuple[str, Image.Image]:
    w, h = _random_size(rng)
    mean, sigma = float(rng.uniform(40, 215)), float(rng.uniform(2, 80))
    channels = 3 if rng.random() < 0.7 else 1
    noise = rng.normal(mean, sigma, (h, w, channels))
    pixels = np.repeat(np.clip(np.rint(noise), 0, 255).astype(np.uint8), 3 // channels, axis=2)
    return f"gaussian {w}x{h} mean {mean:.0f} sigma {sigma:.1f} channels {channels}", (
        Image.fromarray(pixels)
    )


def _uniform_noise(rng: np.random.Generator) -> tuple[str, Image.Image]:
    w, h = _random_size(rng)
    low = int(rng.integers(0, 200))
    high = int(rng.integers(low + 1, 257))
    pixels = rng.integers(low, high, (h, w, 3), dtype=np.uint8)
    return f"uniform {w}x{h} [{low},{high})", Image.fromarray(pixels)


def _salt_and_pepper(rng: np.random.Generator) -> tuple[str, Image.Image]:
    name, image = _flat(rng) if rng.random() < 0.5 else _random_crop(rng)
    amount = float(rng.uniform(0.01, 0.2))
    pixels = np.array(image)
    hit = rng.random(pixels.shape[:2]) < amount
    pixels[hit] = np.where(rng.random(int(hit.sum())) < 0.5, 0, 255)[:, None].astype(np.uint8)
    return f"{name} salt-and-pepper {amount:.3f}", Image.fromarray(pixels)


CORPUS_KINDS: dict[str, Callable[[np.random.Generator], tuple[str, Image.Image]]] = {
    "crop": _random_crop,
    "resize": _random_resize,
    "flip": _random_flip,
    "jpeg": _random_jpeg,
    "rotation": _random_rotation,
    "webp": _random_webp,
    "flat": _flat,
    "gradient": _gradient,
    "gaussian_noise": _gaussian_noise,
    "uniform_noise": _uniform_noise,
    "salt_and_pepper": _salt_and_pepper,
}


def corpus_item(index: int, seed: int = 0) -> CorpusItem:
    """Item ``index`` of the unmarked corpus: first every photo at every size, then the kinds of
    ``CORPUS_KINDS`` in turn, each drawn from ``np.random.default_rng([seed, index])``."""
    photos = [(name, size) for size in SIZES for name in PHOTO_SOURCES]
    if index < len(photos):
        name, size = photos[index]
        return CorpusItem(index, "photo", f"{name}@{size}", load_photo(name, size).image)
    kind = list(CORPUS_KINDS)[(index - len(photos)) % len(CORPUS_KINDS)]
    name, image = CORPUS_KINDS[kind](np.random.default_rng([seed, index]))
    return CorpusItem(index, kind, name, image.convert("RGB"))


def unmarked_corpus(count: int = 2000, seed: int = 0) -> Iterator[CorpusItem]:
    """Yields ``count`` unmarked images, one at a time (see ``corpus_item``)."""
    for index in range(count):
        yield corpus_item(index, seed)
