"""The synthetic world of sdkit's default model: shapes, captions, and an independent judge.

* :func:`render` draws one shape (circle, square, triangle, star, cross) in a colour, at a size,
  at one of nine positions, on a background colour, anti-aliased, at 256 x 256.
* :func:`caption` writes it in plain English, in one of several phrasings (templates, synonyms,
  optional size); :data:`TRAIN_TEMPLATES` and :data:`HELDOUT_TEMPLATES` are disjoint.
* :class:`Judge` reads a picture back without knowing how it was made: background colour from
  the border, the shape as the largest region that differs from it, its colour as the palette
  colour whose blends with the background best explain the region, its outline at half the
  contrast between the two, its position from the centroid, and its kind from outline features
  (OpenCV: circularity, solidity, extents, polygon fits, and the radial spectrum) fed to a
  classifier trained on this renderer only (scikit-learn), on clean, blurred, pixelated and
  :func:`roughen`-ed renders. It is how the default model is evaluated
  (``tools/eval_default_model.py``).

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


def _along(pixels: np.ndarray, background: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """How far each pixel lies from ``background`` towards ``background + direction`` (0 to 1
    for blends of the two): the shape's coverage of a pixel, for a two-colour picture."""
    return np.asarray((pixels - background) @ direction / float(direction @ direction))


def roughen(
    image: Image.Image,
    scene: Scene,
    rng: random.Random,
    *,
    block: int = 8,
    edge_noise: float = 0.25,
    pixel_noise: float = 15.0,
) -> Image.Image:
    """A render made to look decoded from latents, from the renderer's own picture only.

    The picture is ``background + alpha * (colour - background)``; alpha is taken per ``block``
    x ``block`` square (the autoencoder's grid), the squares on and next to the outline get
    noise of standard deviation up to ``edge_noise`` (dents and one-block spurs), the grid is
    scaled back up and softened and each pixel gets noise of standard deviation up to
    ``pixel_noise`` (speckle). The strengths are drawn from ``rng``.
    """
    bg = np.asarray(COLOURS[scene.background], dtype=np.float64)
    direction = np.asarray(COLOURS[scene.colour], dtype=np.float64) - bg
    alpha = np.clip(_along(np.asarray(image, dtype=np.float64), bg, direction), 0.0, 1.0)
    side = image.width // block
    grid = np.asarray(
        Image.fromarray(alpha.astype(np.float32)).resize((side, side), Image.Resampling.BOX)
    ).astype(np.float64)
    kernel = np.ones((3, 3), np.uint8)
    near = cv2.dilate(((grid > 0.02) & (grid < 0.98)).astype(np.uint8), kernel) > 0
    np_rng = np.random.default_rng(rng.getrandbits(32))
    grid = grid + near * np_rng.normal(0.0, rng.uniform(0.0, edge_noise), grid.shape)
    up = Image.fromarray(np.clip(grid, 0.0, 1.0).astype(np.float32))
    up = up.resize(image.size, Image.Resampling.NEAREST)
    soft = cv2.GaussianBlur(np.asarray(up, dtype=np.float64), (0, 0), rng.uniform(0.5, 2.0))
    out = bg + soft[..., None] * direction
    out += np_rng.normal(0.0, rng.uniform(0.0, pixel_noise), out.shape)
    return Image.fromarray(np.clip(out, 0, 255).round().astype(np.uint8))


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


def _radial_spectrum(contour: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """How far the outline is from ``centre`` at each angle, as harmonics 2-8 of its mean.

    A circle is flat, a triangle peaks at 3, a square and a cross at 4 (the cross higher), a
    star at 5. Unlike Hu's moment invariants 2-4, which the symmetry of a square, a cross or a
    circle makes zero (so their logarithm swings on the first stray pixel), these move little
    with a dented edge.
    """
    points = contour[:, 0, :].astype(np.float64) - np.asarray(centre)
    bins = 72
    angle = np.arctan2(points[:, 1], points[:, 0])
    index = ((angle + math.pi) / (2 * math.pi) * bins).astype(int) % bins
    radius = np.full(bins, np.nan)
    np.fmax.at(radius, index, np.hypot(points[:, 0], points[:, 1]))
    known = np.flatnonzero(~np.isnan(radius))
    radius = np.interp(np.arange(bins), known, radius[known], period=bins)
    spectrum = np.abs(np.fft.rfft(radius / max(float(radius.mean()), 1e-9))) / bins
    return spectrum[2:9]


def _features(mask: np.ndarray) -> np.ndarray:
    """Scale- and rotation-free outline features of a binary mask (largest contour)."""
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
    moments = cv2.moments(contour)
    hu1 = cv2.HuMoments(moments).ravel()[0]  # spread; the higher ones only flag asymmetry
    m00 = max(moments["m00"], 1e-9)
    centre = (moments["m10"] / m00, moments["m01"] / m00)
    return np.array(
        [
            4 * math.pi * area / perimeter**2,  # circularity
            area / hull_area,  # solidity
            area / max(w * h, 1),  # extent
            area / max(rw * rh, 1.0),  # extent of the rotated box
            area / (math.pi * radius**2 + 1e-9),  # fill of the enclosing circle
            *approx,
            -math.log10(abs(hu1) + 1e-30),
            *_radial_spectrum(contour, centre),
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
            if roll < 0.3:  # 8 x 8 blocks, as the default model's autoencoder draws them
                image = pixelate(image, 8)
            elif roll < 0.55:
                small = rng.choice((64, 96, 128))
                image = image.resize((small, small)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
            elif roll < 0.85:  # dented, speckled outlines on the 8 x 8 grid
                image = roughen(image, scene, rng)
            found = self._outline(np.asarray(image), COLOURS[scene.background], scene.background)
            if found is None:
                continue
            features.append(_features(found[0]))
            labels.append(scene.shape)
        self.classifier = RandomForestClassifier(n_estimators=200, random_state=seed)
        self.classifier.fit(np.array(features), np.array(labels))

    @staticmethod
    def _mask(pixels: np.ndarray, background: Sequence[float]) -> np.ndarray | None:
        """The largest region far from ``background`` in colour: where the shape is."""
        distance = np.sqrt(np.sum((pixels.astype(np.float64) - background) ** 2, axis=2))
        return _largest(distance > 60)

    def _outline(
        self, pixels: np.ndarray, background: Sequence[float], exclude: str
    ) -> tuple[np.ndarray, str] | None:
        """The shape's mask and colour, or ``None`` where there is no shape.

        A fixed distance from the background finds the shape and its colour; the outline is
        then drawn at half the contrast between the two, measured along the line from the
        background to the shape's colour (on a lightly smoothed copy, against speckle). A
        fixed distance alone cuts low-contrast shapes (orange on yellow, white on pink) into
        fragments.
        """
        found = self._mask(pixels, background)
        if found is None:
            return None
        bg = np.asarray(background, dtype=np.float64)
        colour = mixed_colour(pixels[found], bg, exclude=exclude)
        direction = np.asarray(COLOURS[colour], dtype=np.float64) - bg
        smooth = cv2.GaussianBlur(pixels.astype(np.float64), (0, 0), 1.0)
        alpha = _along(smooth, bg, direction)
        full = float(np.percentile(alpha[found], 90))
        mask = _largest(alpha > 0.5 * full) if full > 0 else None
        return (found if mask is None else mask), colour

    def read(self, image: Image.Image) -> Reading:
        pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE)))
        edges = (pixels[:6], pixels[-6:], pixels[:, :6], pixels[:, -6:])
        border = np.concatenate([edge.reshape(-1, 3) for edge in edges])
        background_rgb = np.median(border, axis=0)
        background = nearest_colour(background_rgb)
        found = self._outline(pixels, background_rgb, background)
        if found is None:
            return Reading(background, None, None, None, 0.0)
        mask, colour = found
        ys, xs = np.nonzero(mask)
        column = ("left", "", "right")[min(int(xs.mean() / SIZE * 3), 2)]
        row = ("top", "", "bottom")[min(int(ys.mean() / SIZE * 3), 2)]
        position = f"{row} {column}".strip() or "center"
        shape = str(self.classifier.predict(_features(mask)[None])[0])
        return Reading(background, colour, shape, position, float(mask.mean()))


def _largest(mask: np.ndarray, least: int = 40) -> np.ndarray | None:
    """The largest 8-connected region of ``mask``, or ``None`` when it has under ``least`` pixels."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), None, None, None, 8
    )
    if count < 2:
        return None
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[biggest, cv2.CC_STAT_AREA] < least:
        return None
    return np.asarray(labels == biggest)
