"""sdkit's own watermark method, ``sdkit-ss1``: spread spectrum on a luma chip grid.

Why not invisible-watermark's methods alone: dwtDct embeds in chroma, which JPEG's 4:2:0
subsampling destroys; dwtDctSvd is thrown off by brightness changes; neither re-synchronises
after a crop. ``sdkit-ss1`` is built for those journeys:

* **Chips relative to the image.** The image is divided into a grid of chips, 160 along the
  long edge (3.2 px at 512, 6.4 px at 1024), so a uniformly rescaled copy (a re-share) has the
  same grid. (96, 128 and 192 were measured too: 160 recovered the most payloads on textured
  photos, the hardest case.) Each chip carries +/- one unit of luma (the same on R, G and B), low in frequency enough
  to survive JPEG q50, WebP and a 0.5x resize.
* **Tiles with a pilot.** The grid repeats in tiles of 32 x 32 chips. In each tile 800 chips
  carry the 160 codeword bits (5 each, scattered by a fixed permutation, times a +/-1 PN
  sequence) and 224 carry a known pilot. After a crop, the decoder finds the tile offset by
  FFT cross-correlation of the folded grid with the pilot, trying a few chip sizes and sub-chip
  phases; the pilot peak's z-score says how sure it is.
* **Perceptual strength.** The amplitude follows the local standard deviation of luma (as SSIM
  sees it), with a floor that survives 8-bit rounding; then the whole mark is scaled down until
  the rounded image keeps PSNR >= 38.5 dB and SSIM >= 0.981 against the original. Where that
  leaves it under half a level (flat areas), pixels are rounded with a fixed dither, not to the
  nearest level, which would erase it.
* **Informed embedding.** The embedder measures each bit the way the decoder will and lifts the
  bits that the host's own texture works against (to the median margin), so textured images
  keep their payload at the same PSNR. It first measures a copy brightened x1.2, where
  highlights clip and their chips drop out, so bright images survive a brightness boost.
* **Whitened, weighted decoding.** The decoder removes the host's local mean from each chip and
  weights chips by the inverse of the local residual variance, so flat areas (where the mark is
  clean) count more than busy ones; chips next to clipped pixels are left out.

The layout (grid, tile, permutation, PN and pilot seeds, strength) is fixed for this method name;
a later method gets a new name and this one stays decodable.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy.ndimage import uniform_filter

from ..errors import WatermarkError

__all__ = ["METHOD", "MIN_SIDE", "Candidate", "embed_bits", "soft_candidates"]

METHOD = "sdkit-ss1"
MIN_SIDE = 256
GRID = 160  # chips along the long edge
TILE = 32  # chips per tile side
CHIPS_PER_BIT = 5
SEED = 0x5D_C1_55_01  # fixes permutation, PN and pilot: part of the method's definition
STRENGTH = 1.6  # amplitude per unit of local luma standard deviation / 8
FLOOR = 0.7  # minimum amplitude (levels): smaller changes vanish in 8-bit rounding
CEILING = 5.0  # maximum amplitude (levels)
MIN_PSNR = 38.5
MIN_SSIM = 0.981
SYNC_Z = 5.0
VIEWS = (1.2, 1.0, 1.0)  # informed-embedding rounds: brightness gain of the view each measures
TARGET_QUANTILE = 0.5  # weak bits are lifted to this quantile of the margins
CORRECTION_CAP = 6.0  # largest informed correction per chip (levels)  # pilot z-score below which a grid alignment is not trusted

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class _Layout:
    assign: npt.NDArray[np.int64]  # (TILE, TILE): bit index per chip, -1 = pilot
    pn: FloatArray  # (TILE, TILE): +/-1
    pilot: FloatArray  # (TILE, TILE): pn on pilot chips, 0 elsewhere
    n_bits: int


@functools.cache
def _layout(n_bits: int, seed: int = SEED) -> _Layout:
    """The tile layout of ``n_bits``: chip positions, PN signs, pilot; ``seed`` names the method."""
    if n_bits * CHIPS_PER_BIT >= TILE * TILE:
        raise WatermarkError(f"{n_bits} bits do not fit a {TILE}x{TILE} tile")
    rng = np.random.default_rng(seed)
    order = rng.permutation(TILE * TILE)
    flat = -np.ones(TILE * TILE, dtype=np.int64)
    flat[order[: n_bits * CHIPS_PER_BIT]] = np.repeat(np.arange(n_bits), CHIPS_PER_BIT)
    assign = flat.reshape(TILE, TILE)
    pn = rng.choice(np.array([-1.0, 1.0]), size=(TILE, TILE))
    return _Layout(assign, pn, np.where(assign < 0, pn, 0.0), n_bits)


def _luma(rgb: FloatArray) -> FloatArray:
    return np.asarray(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114)


def _grid_shape(height: int, width: int) -> tuple[int, int, float]:
    chip = max(height, width) / GRID
    return max(1, round(height / chip)), max(1, round(width / chip)), chip


def _to_pixels(cells: npt.NDArray[np.floating], width: int, height: int) -> FloatArray:
    """Spread a chip-grid array over the pixels (each pixel takes its chip's value)."""
    scaled = Image.fromarray(cells.astype(np.float32), "F").resize(
        (width, height), Image.Resampling.NEAREST
    )
    return np.asarray(scaled, dtype=np.float64)


def _to_cells(
    pixels: npt.NDArray[np.floating],
    grid_w: int,
    grid_h: int,
    box: tuple[float, float, float, float] | None = None,
) -> FloatArray:
    """Average pixels over each chip (of ``box``, default the whole image) -> chip grid."""
    scaled = Image.fromarray(pixels.astype(np.float32), "F").resize(
        (grid_w, grid_h), Image.Resampling.BOX, box=box
    )
    return np.asarray(scaled, dtype=np.float64)


def _check_size(image: Image.Image) -> None:
    if min(image.size) < MIN_SIDE:
        raise WatermarkError(
            f"a {image.width}x{image.height} image is too small to carry the watermark",
            hint=f"both sides must be at least {MIN_SIDE} px.",
        )


def embed_bits(image: Image.Image, bits: npt.NDArray[np.uint8]) -> Image.Image:
    """Return a copy of ``image`` carrying ``bits`` (alpha, if any, is kept).

    Raises:
        WatermarkError: the image is smaller than 256 px on a side.
    """
    _check_size(image)
    layout = _layout(len(bits))
    alpha = image.getchannel("A") if "A" in image.getbands() else None
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    height, width = rgb.shape[:2]
    grid_h, grid_w, _ = _grid_shape(height, width)
    ty, tx = np.mgrid[0:grid_h, 0:grid_w]
    ty, tx = ty % TILE, tx % TILE
    index = layout.assign[ty, tx]  # bit of each chip of the image, -1 = pilot
    pn = layout.pn[ty, tx]
    symbols = np.where(index < 0, 1.0, 2.0 * bits[np.maximum(index, 0)].astype(np.float64) - 1.0)
    pattern = _to_pixels(symbols * pn, width, height)
    luma = _luma(rgb)
    # local contrast in a 7 x 7 window, the scale at which SSIM judges the change
    mean = uniform_filter(luma, 7)
    std = np.sqrt(np.maximum(uniform_filter(luma * luma, 7) - mean * mean, 0.0))
    delta = pattern * np.clip(STRENGTH * std / 8.0, FLOOR, CEILING)
    delta += _informed_correction(rgb, delta, bits, index, pn)
    limit = 255.0**2 / 10 ** (MIN_PSNR / 10)
    # Where the mark is under half a level (flat areas, where SSIM holds the amplitude down)
    # plain rounding would erase it: there a fixed dither rounds each pixel up with the
    # probability of its fraction, so a chip's mean keeps the mark.
    dither = np.random.default_rng(SEED).random(rgb.shape[:2])
    ssim: _SsimAgainst | None = None  # the original's window statistics, once
    for _ in range(6):  # scale down until the rounded, clipped result keeps PSNR and SSIM
        offset = np.where(np.abs(delta) < 0.5, dither, 0.5)[..., None]
        marked = np.clip(np.floor(rgb + delta[..., None] + offset), 0, 255)
        mse = float(np.mean((marked - rgb) ** 2))
        # distortion grows with the square of the mark's amplitude
        if mse > limit:
            delta *= 0.98 * np.sqrt(limit / mse)
            continue
        ssim = ssim or _SsimAgainst(rgb)
        similarity = ssim(marked)  # the costlier check, only once PSNR holds
        if similarity >= MIN_SSIM:
            break
        delta *= 0.98 * min(1.0, np.sqrt((1 - MIN_SSIM) / max(1 - similarity, 1e-9)))
    marked = marked.astype(np.uint8)
    out = Image.fromarray(marked, "RGB")
    if alpha is not None:
        out.putalpha(alpha)
    return out


class _SsimAgainst:
    """Mean SSIM over RGB (Wang et al. 2004) of pictures against one reference, as
    scikit-image computes it by default: 7 x 7 uniform windows, sample covariances, constants
    for an 8-bit range, borders cropped.

    The embedders score one amplitude after another against the same original, so the
    original's window means and variances are computed once; the rest runs in float32 with
    OpenCV's box filter (within 1e-7 of scikit-image's mean for changes of a few levels, as an
    embedder makes; 2e-6 for a 10 % contrast cut).
    """

    C1 = (0.01 * 255) ** 2
    C2 = (0.03 * 255) ** 2
    NORM = 49 / 48  # sample covariances

    def __init__(self, reference: FloatArray) -> None:
        self._x = [reference[..., ch].astype(np.float32) for ch in range(3)]
        self._mx = [_box(x, 7) for x in self._x]
        self._vx = [
            self.NORM * (_box(x * x, 7) - m * m) for x, m in zip(self._x, self._mx, strict=True)
        ]

    def __call__(self, picture: npt.NDArray[np.float64] | npt.NDArray[np.int16]) -> float:
        scores = []
        for ch, (x, mx, vx) in enumerate(zip(self._x, self._mx, self._vx, strict=True)):
            y = picture[..., ch].astype(np.float32)
            my = _box(y, 7)
            vy = self.NORM * (_box(y * y, 7) - my * my)
            vxy = self.NORM * (_box(x * y, 7) - mx * my)
            s = ((2 * mx * my + self.C1) * (2 * vxy + self.C2)) / (
                (mx * mx + my * my + self.C1) * (vx + vy + self.C2)
            )
            scores.append(float(s[3:-3, 3:-3].mean()))
        return float(np.mean(scores))


def _chip_evidence(
    luma: npt.NDArray[np.floating],
    grid_w: int,
    grid_h: int,
    box: tuple[float, float, float, float] | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Each chip's residual (host's local mean removed) and the weight the decoder gives it.

    Weights are the inverse of the local residual variance, so flat areas (where the mark is
    clean) count more than busy ones. Clipped pixels (e.g. highlights after a brightness boost)
    carry no mark and bend the residual of their neighbours: chips near them weigh 0.
    """
    return Evidence(luma).chips(grid_w, grid_h, box)


def fold_tiles(grid: FloatArray) -> FloatArray:
    """Sum a chip grid over its tiles: ``out[y % TILE, x % TILE] += grid[y, x]``."""
    height, width = grid.shape
    padded = np.pad(grid, ((0, -height % TILE), (0, -width % TILE)))
    tiles = padded.reshape(padded.shape[0] // TILE, TILE, padded.shape[1] // TILE, TILE)
    return np.asarray(tiles.sum(axis=(0, 2)), dtype=np.float64)


class Evidence:
    """A luma plane prepared for many chip-grid reads: what :func:`_chip_evidence` computes,
    with the PIL planes built once and each grid's result kept (a search reads the same grids
    for both methods; callers must not modify the arrays returned)."""

    def __init__(self, luma: npt.NDArray[np.floating]) -> None:
        self.luma = np.asarray(luma, dtype=np.float32)
        self._plane = Image.fromarray(self.luma, "F")
        clipped = (luma >= 254.5) | (luma <= 0.5)
        self._clipped = Image.fromarray(clipped.astype(np.float32), "F") if clipped.any() else None
        self._cache: dict[tuple[int, int, tuple[float, ...] | None], tuple[FloatArray, FloatArray]]
        self._cache = {}

    @classmethod
    def of(cls, image: Image.Image) -> Evidence:
        """The evidence of an image's luma."""
        return cls(_luma(np.asarray(image.convert("RGB"), dtype=np.float64)))

    def chips(
        self, grid_w: int, grid_h: int, box: tuple[float, float, float, float] | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """(residual, weight) on a ``grid_w`` x ``grid_h`` chip grid over ``box``."""
        key = (grid_w, grid_h, box)
        found = self._cache.get(key)
        if found is not None:
            return found
        found = residual_and_weight(*self.cells(grid_w, grid_h, box))
        self._cache[key] = found
        return found

    def cells(
        self, grid_w: int, grid_h: int, box: tuple[float, float, float, float] | None = None
    ) -> tuple[FloatArray, FloatArray | None]:
        """The mean luma of each cell of a ``grid_w`` x ``grid_h`` grid over ``box``, and the
        share of clipped pixels in each (None when the image has none)."""
        size = (grid_w, grid_h)
        grid = np.asarray(self._plane.resize(size, Image.Resampling.BOX, box=box), np.float64)
        if self._clipped is None:
            return grid, None
        share = self._clipped.resize(size, Image.Resampling.BOX, box=box)
        return grid, np.asarray(share, dtype=np.float64)


def residual_and_weight(
    grid: FloatArray, clipped: FloatArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """A chip grid's residual (the chip minus its 3 x 3 mean) and each chip's weight (the
    inverse of the residual's local energy; 0 beside a clipped pixel)."""
    residual = grid - _box(grid, 3)
    weight = 1.0 / (_box(residual * residual, 5) + 1.0)
    if clipped is not None:
        # float32 as benchmarked: `> 0` below then also drops the chips where the filter's
        # running sum leaves a tiny residue beside a clipped chip
        weight[uniform_filter(clipped.astype(np.float32), 3) > 0] = 0.0
    return residual, weight


_Float = TypeVar("_Float", np.float32, np.float64)


def _box(values: npt.NDArray[_Float], size: int) -> npt.NDArray[_Float]:
    """``scipy.ndimage.uniform_filter(values, size)`` (the same border, equal to 1e-15) by
    OpenCV, twice as fast: a search filters hundreds of chip grids."""
    return np.asarray(cv2.blur(values, (size, size), borderType=cv2.BORDER_REFLECT))


def _informed_correction(
    rgb: FloatArray,
    delta: FloatArray,
    bits: npt.NDArray[np.uint8],
    index: npt.NDArray[np.int64],
    pn: FloatArray,
) -> FloatArray:
    """Extra luma that lifts weak bits, the way the decoder will measure them.

    Informed embedding (in the spirit of Malvar and Florencio's improved spread spectrum): the
    embedder knows the host, so it computes each bit's decoder statistic on the marked image
    and, for bits below the median margin (usually because the host's own texture points the
    other way), adds a correction along that bit's chips, weighted as the decoder weights them.
    The first round measures the image brightened x1.2 (``VIEWS``): there highlights clip, the
    decoder leaves their chips out, and the bits that lived mostly in them are lifted on the
    chips that remain; the next rounds measure the image as it is.
    """
    grid_h, grid_w = index.shape
    height, width = rgb.shape[:2]
    n_bits = len(bits)
    data = index >= 0
    signs = 2.0 * bits.astype(np.float64) - 1.0
    correction = np.zeros((grid_h, grid_w))
    marked = rgb + delta[..., None]
    for gain in VIEWS:
        pixels = np.clip(marked + _to_pixels(correction, width, height)[..., None], 0, 255)
        luma = _luma(np.clip(np.rint(pixels * gain), 0, 255) if gain != 1.0 else pixels)
        residual, weight = _chip_evidence(luma, grid_w, grid_h)
        stats = np.zeros(n_bits)
        np.add.at(stats, index[data], (residual * weight * pn)[data])
        margin = signs * stats
        need = np.maximum(0.0, np.quantile(margin, TARGET_QUANTILE) - margin)
        norm = np.zeros(n_bits)
        np.add.at(norm, index[data], weight[data] ** 2)
        alpha = need / (8.0 / 9.0 * gain * np.maximum(norm, 1e-12))
        step = np.zeros((grid_h, grid_w))
        step[data] = (alpha * signs)[index[data]] * weight[data] * pn[data]
        correction = np.clip(correction + step, -CORRECTION_CAP, CORRECTION_CAP)
    return _to_pixels(correction, width, height)


@dataclass(frozen=True)
class Candidate:
    """One grid alignment the decoder tried: soft bits and how sure the pilot is."""

    soft: FloatArray
    z: float
    chip: float
    phase: tuple[float, float]
    offset: tuple[int, int]


def _soft_at(
    evidence: Evidence, chip: float, px: float, py: float, layout: _Layout
) -> Candidate | None:
    height, width = evidence.luma.shape
    grid_h, grid_w = int((height - py) // chip), int((width - px) // chip)
    if min(grid_h, grid_w) < TILE // 2:
        return None
    box = (px, py, px + grid_w * chip, py + grid_h * chip)
    residual, weight = evidence.chips(grid_w, grid_h, box)
    folded = fold_tiles(residual * weight)
    corr = np.real(np.fft.ifft2(np.fft.fft2(folded) * np.conj(np.fft.fft2(layout.pilot))))
    oy, ox = np.unravel_index(int(np.argmax(corr)), corr.shape)
    z = float((corr[oy, ox] - corr.mean()) / (corr.std() + 1e-12))
    aligned = np.roll(folded, (-oy, -ox), axis=(0, 1)) * layout.pn
    soft = np.zeros(layout.n_bits)
    data = layout.assign >= 0
    np.add.at(soft, layout.assign[data], aligned[data])
    return Candidate(soft, z, chip, (px, py), (int(oy), int(ox)))


def soft_candidates(
    image: Image.Image, n_bits: int, *, keep: int = 3, evidence: Evidence | None = None
) -> list[Candidate]:
    """Try likely grid alignments; return the ``keep`` best with a pilot z >= SYNC_Z.

    Chip sizes tried: the one the image's own size implies (right for any uniform rescale), the
    nearest whole-pixel sizes, and those of an original up to 20 % larger (crops), in 1 % steps.
    A coarse pass (two sub-chip phases) ranks the sizes; the best three get 4 x 4 phases. The
    tile offset comes from the pilot correlation. ``evidence`` (the image's, from
    :meth:`Evidence.of`) lets a caller share the grids it already read.
    """
    layout = _layout(n_bits)
    luma = evidence if evidence is not None else Evidence.of(image)
    height, width = luma.luma.shape
    _, _, chip = _grid_shape(height, width)
    sizes = {chip, float(np.floor(chip)), float(np.ceil(chip))}
    sizes |= {chip / (1.0 - 0.01 * k) for k in range(1, 21)}
    coarse: list[tuple[float, float]] = []
    for size in sorted(s for s in sizes if s >= 1.0):
        best = max(
            (c.z for c in (_soft_at(luma, size, p, p, layout) for p in (0.0, size / 2)) if c),
            default=-np.inf,
        )
        coarse.append((best, size))
    coarse.sort(reverse=True)
    found: list[Candidate] = []
    for _, size in coarse[:3]:
        for py in (size * i / 4 for i in range(4)):
            for px in (size * i / 4 for i in range(4)):
                cand = _soft_at(luma, size, px, py, layout)
                if cand is not None and cand.z >= SYNC_Z:
                    found.append(cand)
    found.sort(key=lambda c: -c.z)
    return found[:keep]
