"""The synthetic world of sdkit's default model: shapes, captions, and an independent judge.

* :func:`render` draws one shape (circle, square, triangle, star, cross) in a colour, at a size,
  at one of nine positions, on a background colour, anti-aliased, at 256 x 256.
* :func:`caption` writes it in plain English, in one of several phrasings (templates, synonyms,
  optional size); :data:`TRAIN_TEMPLATES` and :data:`HELDOUT_TEMPLATES` are disjoint.
* :class:`Judge` reads a picture back without knowing how it was made: background colour from
  the border, the shape as the largest region that differs from it, its colour from the region's
  median, its position from the centroid, and its kind from contour features (OpenCV) fed to a
  classifier trained on this renderer only (scikit-learn). It is how the default model is
  evaluated (``tools/eval_default_model.py``).

Attribute combinations in :data:`HELDOUT_PAIRS` (shape colour + shape) never appear in training.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
SUPERSAMPLE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "purple": (140, 50, 180),
    "pink": (250, 140, 200),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
# Nine positions: name -> (x, y) centre as a fraction of the side.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.2, 0.2),
    "top": (0.5, 0.2),
    "top right": (0.8, 0.2),
    "left": (0.2, 0.5),
    "center": (0.5, 0.5),
    "right": (0.8, 0.5),
    "bottom left": (0.2, 0.8),
    "bottom": (0.5, 0.8),
    "bottom right": (0.8, 0.8),
}
# Radius as a fraction of the side. Small was 0.085 until the shipped model's continuation run:
# 2.7 latent pixels, where the denoiser drew every small shape as the same dot (the model card)
SIZES: dict[str, float] = {"small": 0.11, "large": 0.15}
JITTER = 0.03  # random offset of the centre, fraction of the side

# Phrasings of each attribute (all words appear in training).
POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "top left": ("at the top left", "in the top left corner", "in the upper left"),
    "top": ("at the top", "at the top center", "in the upper middle"),
    "top right": ("at the top right", "in the top right corner", "in the upper right"),
    "left": ("on the left", "at the left", "in the middle left"),
    "center": ("in the center", "in the middle", "at the center"),
    "right": ("on the right", "at the right", "in the middle right"),
    "bottom left": ("at the bottom left", "in the bottom left corner", "in the lower left"),
    "bottom": ("at the bottom", "at the bottom center", "in the lower middle"),
    "bottom right": ("at the bottom right", "in the bottom right corner", "in the lower right"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big", "huge"),
}
TRAIN_TEMPLATES = (
    "{a} {size}{colour} {shape} {position} on {ab} {background} background",
    "{a} {size}{colour} {shape} {position}, {background} background",
    "{background} background with {a} {size}{colour} {shape} {position}",
    "{a} {size}{colour} {shape} on {ab} {background} background, {position}",
    "{size}{colour} {shape} {position} on {background}",
    "a picture of {a} {size}{colour} {shape} {position} on {ab} {background} background",
    # the background first: without these, "the last colour named is the background" was a
    # shortcut the model took
    "{background} background, {a} {size}{colour} {shape} {position}",
    "{ab} {background} picture with {a} {size}{colour} {shape} {position}",
)
# New phrasings for evaluation: the same words in orders never seen in training.
HELDOUT_TEMPLATES = (
    "{position_cap}, {a} {size}{colour} {shape} on {ab} {background} background",
    "on {ab} {background} background, {a} {size}{colour} {shape} {position}",
)
# Shape colour + shape combinations that never appear in training.
HELDOUT_PAIRS = frozenset(
    {
        ("red", "triangle"),
        ("blue", "star"),
        ("green", "cross"),
        ("yellow", "circle"),
        ("purple", "square"),
        ("orange", "star"),
        ("pink", "triangle"),
        ("white", "cross"),
        ("black", "circle"),
    }
)


@dataclass(frozen=True)
class Scene:
    """What one picture shows."""

    shape: str
    colour: str
    background: str
    position: str
    size: str

    def to_dict(self) -> dict[str, str]:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "background": self.background,
            "position": self.position,
            "size": self.size,
        }


def random_scene(rng: random.Random, *, heldout: bool | None = False) -> Scene:
    """A scene; ``heldout=False``: never a held-out pair, True: always one, None: any."""
    while True:
        shape = rng.choice(SHAPES)
        colour = rng.choice(list(COLOURS))
        if heldout is None or ((colour, shape) in HELDOUT_PAIRS) == heldout:
            break
    background = rng.choice([c for c in COLOURS if c != colour])
    return Scene(shape, colour, background, rng.choice(list(POSITIONS)), rng.choice(list(SIZES)))


def caption(scene: Scene, rng: random.Random, templates: Sequence[str] = TRAIN_TEMPLATES) -> str:
    """A plain-English caption of ``scene`` in a random phrasing from ``templates``."""
    size = rng.choice(SIZE_WORDS[scene.size]) + " " if rng.random() < 0.7 else ""
    position = rng.choice(POSITION_WORDS[scene.position])
    first = size or scene.colour
    return rng.choice(templates).format(
        size=size,
        colour=scene.colour,
        shape=scene.shape,
        position=position,
        position_cap=position[0].upper() + position[1:],
        background=scene.background,
        a="an" if first[0] in "aeiou" else "a",
        ab="an" if scene.background[0] in "aeiou" else "a",
    )


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [
            (cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a)))
            for a in (-90, 30, 150)
        ]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.42
            angle = math.radians(-90 + 36 * k)
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    if shape == "cross":
        a, b = r * 0.9, r * 0.32
        return [
            (cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b),
            (cx + a, cy + b), (cx + b, cy + b), (cx + b, cy + a), (cx - b, cy + a),
            (cx - b, cy + b), (cx - a, cy + b), (cx - a, cy - b), (cx - b, cy - b),
        ]  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}")


def render(
    scene: Scene,
    rng: random.Random | None = None,
    size: int = SIZE,
    radii: Mapping[str, float] = SIZES,
) -> Image.Image:
    """Draw ``scene`` (the centre jitters with ``rng``), anti-aliased, ``size`` px square;
    ``radii`` maps each size word to a radius as a fraction of the side."""
    big = size * SUPERSAMPLE
    fx, fy = POSITIONS[scene.position]
    if rng is not None:
        fx += rng.uniform(-JITTER, JITTER)
        fy += rng.uniform(-JITTER, JITTER)
    cx, cy, r = fx * big, fy * big, radii[scene.size] * big
    image = Image.new("RGB", (big, big), COLOURS[scene.background])
    draw = ImageDraw.Draw(image)
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(scene.shape, cx, cy, r), fill=fill)
    return image.resize((size, size), Image.Resampling.BOX)


def pixelate(image: Image.Image, block: int) -> Image.Image:
    """Each ``block`` x ``block`` square replaced by its mean colour."""
    side = image.width // block
    small = image.resize((side, side), Image.Resampling.BOX)
    return small.resize(image.size, Image.Resampling.NEAREST)


# -- the judge ------------------------------------------------------------------------------


def nearest_colour(rgb: np.ndarray) -> str:
    """The palette colour nearest to ``rgb`` (in CIELAB, as people see colour)."""
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.uint8)[None]
    lab = cv2.cvtColor(palette, cv2.COLOR_RGB2LAB).astype(np.float64)[0]
    probe = np.clip(np.asarray(rgb, dtype=np.float64), 0, 255).astype(np.uint8)
    probe_lab = cv2.cvtColor(probe.reshape(1, 1, 3), cv2.COLOR_RGB2LAB).astype(np.float64)[0, 0]
    return names[int(np.argmin(np.sum((lab - probe_lab) ** 2, axis=1)))]


def mixed_colour(pixels: np.ndarray, background: np.ndarray, exclude: str | None = None) -> str:
    """The palette colour that best explains ``pixels`` as mixtures of it with ``background``.

    Edge pixels of a small or soft shape are blends of shape and background; a palette colour
    c explains a pixel p when p lies on the segment from the background to c. The colour with
    the least mean distance from its segment wins (the background's own colour is excluded).
    """
    p = pixels.reshape(-1, 3).astype(np.float64)
    bg = np.asarray(background, dtype=np.float64)
    best, best_cost = "", math.inf
    for name, rgb in COLOURS.items():
        if name == exclude:
            continue
        direction = np.asarray(rgb, dtype=np.float64) - bg
        length = float(direction @ direction)
        if length < 1.0:
            continue
        alpha = np.clip((p - bg) @ direction / length, 0.0, 1.0)
        residual = np.sqrt(np.sum((p - bg - alpha[:, None] * direction) ** 2, axis=1))
        cost = float(residual.mean())
        if cost < best_cost:
            best, best_cost = name, cost
    return best


def _features(mask: np.ndarray) -> np.ndarray:
    """Scale-free contour features of a binary mask (largest contour)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    area = max(cv2.contourArea(contour), 1.0)
    perimeter = max(cv2.arcLength(contour, True), 1.0)
    hull = cv2.convexHull(contour)
    hull_area = max(cv2.contourArea(hull), 1.0)
    _, _, w, h = cv2.boundingRect(contour)
    (_, _), (rw, rh), _ = cv2.minAreaRect(contour)
    (_, _), radius = cv2.minEnclosingCircle(contour)
    hull_perimeter = max(cv2.arcLength(hull, True), 1.0)
    approx = [len(cv2.approxPolyDP(hull, eps * hull_perimeter, True)) for eps in (0.02, 0.05)]
    hu = cv2.HuMoments(cv2.moments(contour)).ravel()[:4]
    hu = -np.sign(hu) * np.log10(np.abs(hu) + 1e-30)
    return np.array(
        [
            4 * math.pi * area / perimeter**2,  # circularity
            area / hull_area,  # solidity
            area / max(w * h, 1),  # extent
            area / max(rw * rh, 1.0),  # extent of the rotated box
            area / (math.pi * radius**2 + 1e-9),  # fill of the enclosing circle
            *approx,
            *hu,
        ]
    )


@dataclass(frozen=True)
class Reading:
    """What the judge sees in a picture (``None`` where it sees nothing)."""

    background: str
    colour: str | None
    shape: str | None
    position: str | None
    area_fraction: float


class Judge:
    """Reads scenes back from pixels; its shape classifier is trained on the renderer only."""

    def __init__(self, seed: int = 0, samples: int = 1500) -> None:
        from sklearn.ensemble import RandomForestClassifier

        rng = random.Random(seed)
        features, labels = [], []
        for _ in range(samples):
            scene = random_scene(rng, heldout=None)
            image = render(scene, rng)
            # the generator's pictures are softer than the renderer's: train on degraded copies
            if rng.random() < 0.7:
                image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5)))
            roll = rng.random()
            if roll < 0.4:  # 8 x 8 blocks, as the default model's autoencoder draws them
                image = pixelate(image, 8)
            elif roll < 0.7:
                small = rng.choice((64, 96, 128))
                image = image.resize((small, small)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
            mask = self._mask(np.asarray(image), COLOURS[scene.background])
            if mask is None:
                continue
            features.append(_features(mask))
            labels.append(scene.shape)
        self.classifier = RandomForestClassifier(n_estimators=200, random_state=seed)
        self.classifier.fit(np.array(features), np.array(labels))

    @staticmethod
    def _mask(pixels: np.ndarray, background: Sequence[int]) -> np.ndarray | None:
        distance = np.sqrt(np.sum((pixels.astype(np.float64) - background) ** 2, axis=2))
        mask = distance > 60
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
        if count < 2:
            return None
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        if stats[biggest, cv2.CC_STAT_AREA] < 40:
            return None
        return np.asarray(labels == biggest)

    def read(self, image: Image.Image) -> Reading:
        pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE)))
        edges = (pixels[:6], pixels[-6:], pixels[:, :6], pixels[:, -6:])
        border = np.concatenate([edge.reshape(-1, 3) for edge in edges])
        background_rgb = np.median(border, axis=0)
        background = nearest_colour(background_rgb)
        mask = self._mask(pixels, background_rgb)
        if mask is None:
            return Reading(background, None, None, None, 0.0)
        colour = mixed_colour(pixels[mask], background_rgb, exclude=background)
        ys, xs = np.nonzero(mask)
        column = ("left", "", "right")[min(int(xs.mean() / SIZE * 3), 2)]
        row = ("top", "", "bottom")[min(int(ys.mean() / SIZE * 3), 2)]
        position = f"{row} {column}".strip() or "center"
        shape = str(self.classifier.predict(_features(mask)[None])[0])
        return Reading(background, colour, shape, position, float(mask.mean()))
