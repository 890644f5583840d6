"""Geometric synchronisation for tiled watermarks: the tile lattice and the 8 dihedral moves.

A tiled mark repeats with the tile's period, so the autocorrelation of an image's (whitened)
high-frequency residual has peaks on the tile lattice, whatever the image went through: after a
rotation, a non-uniform scale, a shear or mild perspective (locally affine) the lattice is
rotated, stretched or sheared with it (Kutter, "Watermarking resisting to translation, rotation,
and scaling", SPIE 1998). :func:`find_lattices` reads the two shortest lattice vectors from those
peaks (refined by least squares over every peak near a lattice point); :func:`rectify` resamples
the image so that the lattice becomes square and axis-aligned again, leaving only what a lattice
cannot tell apart (which basis vector was "x", and their signs: mirrors and quarter turns) to the
8 dihedral hypotheses of :func:`dihedral`, and the tile offset to the pilot correlation.

This module knows nothing about payloads: it maps pixels to pixels (numpy, scipy, OpenCV).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import scipy.fft
from scipy.ndimage import map_coordinates, maximum_filter, uniform_filter

__all__ = [
    "DIHEDRAL",
    "LagMap",
    "Lattice",
    "Rectified",
    "dihedral",
    "find_lattices",
    "find_square_lattices",
    "finer",
    "lag_map",
    "rectify",
    "same_basis",
    "undihedral",
]

FloatArray = npt.NDArray[np.float64]
DIHEDRAL = 8  # identity, 3 quarter turns, and the mirror of each
PEAK_Z = 4.0  # autocorrelation peaks below this z-score are not lattice candidates
MIN_PERIOD = 44.0  # px: shortest tile period searched (32 chips of 1.4 px)
MAX_LAG = 0.5  # longest lag searched, as a share of the shorter side (two tiles at least)
MIN_SQUARE_PERIOD = 64.0  # px: a 256 px picture's 128 px tiles at half size
REFINE_Z = 2.5  # peaks above this z-score refine a square lattice found by pooling
MAX_BASIS_ANGLE_COS = 0.5  # basis vectors within 60..120 degrees of each other


@dataclass(frozen=True)
class Lattice:
    """Two lattice vectors (pixels, x then y) and how clearly the autocorrelation shows them.

    Attributes:
        basis: 2 x 2, columns are the vectors.
        z: the weaker of the two peaks' z-scores.
    """

    basis: FloatArray
    z: float


@dataclass(frozen=True)
class Rectified:
    """An image resampled so that its lattice is square: ``matrix`` maps its pixels back.

    Attributes:
        luma: the resampled luma (float32); pixels from outside the source are 0.
        matrix: 2 x 3 affine map from resampled (x, y, 1) to source pixel coordinates.
        chip: chip size (pixels) in the resampled image.
    """

    luma: npt.NDArray[np.float32]
    matrix: FloatArray
    chip: float


def dihedral(tile: FloatArray, k: int) -> FloatArray:
    """The ``k``-th of the 8 dihedral moves of a square array (k >= 4: mirrored first)."""
    moved = tile[:, ::-1] if k >= 4 else tile
    return np.asarray(np.rot90(moved, k % 4))


def undihedral(tile: FloatArray, k: int) -> FloatArray:
    """Inverse of :func:`dihedral`: ``undihedral(dihedral(a, k), k) == a``."""
    moved = np.rot90(tile, -(k % 4))
    return np.asarray(moved[:, ::-1] if k >= 4 else moved)


def _whitened(
    luma: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    residual = luma - uniform_filter(luma, 3)
    residual = residual / np.sqrt(uniform_filter(residual * residual, 9) + 4.0)
    bad = (luma <= 0.5) | (luma >= 254.5)  # clipped, or filled borders: no mark there
    residual[bad] = 0.0
    return residual.astype(np.float32), (~bad).astype(np.float32)


def _autocorrelation(luma: npt.NDArray[np.float32]) -> tuple[FloatArray, int, int]:
    """z-scored autocorrelation of the whitened residual, centred (lag 0 at [cy, cx])."""
    height, width = luma.shape
    residual, mask = _whitened(luma)
    # zero padding by the longest lag searched: no wrap-around there
    pad = int(np.ceil(MAX_LAG * min(height, width))) + 2
    shape = (scipy.fft.next_fast_len(height + pad), scipy.fft.next_fast_len(width + pad))
    spectrum = scipy.fft.rfft2(residual, shape, workers=1)
    overlap = scipy.fft.rfft2(mask, shape, workers=1)
    corr = scipy.fft.irfft2(np.abs(spectrum) ** 2, shape, workers=1)
    count = scipy.fft.irfft2(np.abs(overlap) ** 2, shape, workers=1)
    # normalise per lag by the pixels that overlap, but never by fewer than a quarter of them
    corr = np.fft.fftshift(corr / np.maximum(count, 0.25 * height * width))
    return np.asarray(corr, dtype=np.float64), height, width


def _subpixel(corr: FloatArray, y: int, x: int) -> tuple[float, float]:
    """Parabolic refinement of a peak at (y, x)."""

    def offset(minus: float, centre: float, plus: float) -> float:
        denom = minus - 2 * centre + plus
        return 0.0 if denom >= 0 else float(np.clip(0.5 * (minus - plus) / denom, -0.5, 0.5))

    dy = offset(corr[y - 1, x], corr[y, x], corr[y + 1, x])
    dx = offset(corr[y, x - 1], corr[y, x], corr[y, x + 1])
    return y + dy, x + dx


def find_lattices(luma: npt.NDArray[np.float32] | LagMap, *, keep: int = 3) -> list[Lattice]:
    """Lattice hypotheses for a tiled mark in ``luma``, clearest first (may be empty).

    Args:
        luma: the image's luma, 0..255 (float32), or its :func:`lag_map`.
        keep: how many hypotheses to return at most.
    """
    lags = lag_map(luma) if isinstance(luma, np.ndarray) else luma
    valid, local = lags.valid, lags.local
    if not valid.any():
        return []
    cy, cx = valid.shape[0] // 2, valid.shape[1] // 2
    points = _peak_points(lags, lags.ringed, PEAK_Z, most=60)
    if len(points) < 2:
        return []
    # every pair of strong peaks is a basis hypothesis; the lattice whose points are peaks
    # (and whose other points are not missing) scores best: a half-period lattice predicts
    # points with nothing there, a double-period one misses the peaks between its points
    scored: list[tuple[float, FloatArray]] = []
    strong = [p for _, p in points[:16]]
    for i, first in enumerate(strong):
        for second in strong[i + 1 :]:
            basis = np.column_stack([first, second])
            cos = abs(float(first @ second)) / (np.hypot(*first) * np.hypot(*second) + 1e-12)
            ratio = np.hypot(*second) / np.hypot(*first)
            if cos >= MAX_BASIS_ANGLE_COS or not 0.6 < ratio < 1.67:
                continue
            score = _lattice_score(basis, local, valid, cy, cx)
            scored.append((score, basis))
    scored.sort(key=lambda item: -item[0])
    lattices: list[Lattice] = []
    for score, basis in scored:
        if score <= 0 or any(_same_lattice(basis, other.basis) for other in lattices):
            continue
        refined, _ = _refine(basis, points)
        lattices.append(Lattice(refined, score))
        if len(lattices) >= keep:
            break
    return lattices


def _lattice_score(
    basis: FloatArray, local: FloatArray, valid: npt.NDArray[np.bool_], cy: int, cx: int
) -> float:
    """Sum over the lattice's points in the searched ring of (peak z - PEAK_Z / 2)."""
    n = np.arange(-6, 7)
    nn, mm = np.meshgrid(n, n)
    pts = basis @ np.vstack([nn.ravel(), mm.ravel()])
    ys = np.rint(pts[1] + cy).astype(int)
    xs = np.rint(pts[0] + cx).astype(int)
    inside = (ys >= 0) & (ys < local.shape[0]) & (xs >= 0) & (xs < local.shape[1])
    ys, xs = ys[inside], xs[inside]
    ring = valid[ys, xs]
    return float(np.sum(local[ys[ring], xs[ring]] - PEAK_Z / 2))


def _refine(basis: FloatArray, points: list[tuple[float, FloatArray]]) -> tuple[FloatArray, float]:
    """Least squares over every peak within 2 px of a lattice point; the two basis peaks' z."""
    inverse = np.linalg.inv(basis)
    rows, targets, weights = [], [], []
    strength = []
    for z, p in points:
        n = np.rint(inverse @ p)
        if not n.any() or np.hypot(*(basis @ n - p)) > 2.0:
            continue
        rows.append(n)
        targets.append(p)
        weights.append(z)
        if abs(n).sum() == 1:
            strength.append(z)
    if len(rows) < 2:
        return basis, 0.0
    n_mat = np.array(rows) * np.sqrt(np.array(weights))[:, None]
    t_mat = np.array(targets) * np.sqrt(np.array(weights))[:, None]
    solution, *_ = np.linalg.lstsq(n_mat, t_mat, rcond=None)
    refined = np.asarray(solution.T, dtype=np.float64)
    if abs(np.linalg.det(refined)) < 0.5 * abs(np.linalg.det(basis)):
        refined = basis
    return refined, float(min(strength) if len(strength) >= 2 else 0.0)


def same_basis(a: FloatArray, b: FloatArray, tolerance: float = 0.03) -> bool:
    """Whether two bases span the same lattice (up to order and signs of the vectors)."""
    n = np.linalg.inv(a) @ b
    rounded = np.rint(n)
    return bool(
        np.allclose(n, rounded, atol=tolerance) and abs(abs(np.linalg.det(rounded)) - 1) < 1e-9
    )


def _same_lattice(a: FloatArray, b: FloatArray) -> bool:
    """Whether one lattice is a sub- or super-lattice of the other (the same periodic family,
    e.g. a JPEG block grid and its multiples): one hypothesis per family."""
    for x, y in ((a, b), (b, a)):
        n = np.linalg.inv(x) @ y
        if np.allclose(n, np.rint(n), atol=0.06):
            return True
    return False


def rectify(luma: npt.NDArray[np.float32], lattice: Lattice, tile: int, chip: float) -> Rectified:
    """Resample ``luma`` so that ``lattice`` becomes square with period ``tile * chip`` px.

    Args:
        luma: source luma (float32).
        lattice: the lattice found in it.
        tile: chips per tile side of the mark.
        chip: chip size wanted in the output (pixels).
    """
    period = tile * chip
    to_source = lattice.basis / period  # output pixel step -> source pixels
    height, width = luma.shape
    to_output = np.linalg.inv(to_source)
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64).T
    mapped = to_output @ corners
    low, high = mapped.min(axis=1), mapped.max(axis=1)
    size = np.ceil(high - low).astype(int)
    matrix = np.column_stack([to_source, to_source @ low])
    out = cv2.warpAffine(
        luma,
        matrix.astype(np.float64),
        (int(size[0]), int(size[1])),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    return Rectified(np.asarray(out, dtype=np.float32), matrix, chip)


@dataclass(frozen=True)
class LagMap:
    """The autocorrelation of an image's whitened residual, read by both lattice searches.

    Attributes:
        corr: the autocorrelation, centred (lag 0 at the middle).
        valid: the lags searched (a ring from :data:`MIN_PERIOD` to :data:`MAX_LAG`).
        z: ``corr`` z-scored over the ring.
        ringed: ``z`` on the ring, 0 elsewhere.
        local: the 3 x 3 maximum of ``ringed`` (both searches score lattice points on it).
        shape: (height, width) of the image.
    """

    corr: FloatArray
    valid: npt.NDArray[np.bool_]
    z: FloatArray
    ringed: FloatArray
    local: FloatArray
    shape: tuple[int, int]


def lag_map(luma: npt.NDArray[np.float32]) -> LagMap:
    """The :class:`LagMap` of a luma plane (0..255, float32)."""
    corr, height, width = _autocorrelation(luma)
    cy, cx = corr.shape[0] // 2, corr.shape[1] // 2
    yy, xx = np.mgrid[-cy : corr.shape[0] - cy, -cx : corr.shape[1] - cx]
    radius = np.hypot(yy, xx)
    valid = (radius >= MIN_PERIOD) & (radius <= MAX_LAG * min(height, width))
    z = np.zeros_like(corr)
    if valid.any():
        values = corr[valid]
        z = (corr - float(values.mean())) / (float(values.std()) + 1e-12)
    ringed = np.where(valid, z, 0.0)
    return LagMap(corr, valid, z, ringed, maximum_filter(ringed, 3), (height, width))


def _peak_points(
    lags: LagMap, surface: FloatArray, threshold: float, most: int
) -> list[tuple[float, FloatArray]]:
    """The ``most`` strongest 5 x 5 maxima of ``surface`` (``lags.z`` or ``lags.ringed``) on
    the ring above ``threshold``, in one half plane (a peak at v is also one at -v): (z, lag
    x/y), placed to sub-pixel on the autocorrelation."""
    z = lags.z
    cy, cx = z.shape[0] // 2, z.shape[1] // 2
    yy, xx = np.mgrid[-cy : z.shape[0] - cy, -cx : z.shape[1] - cx]
    half = (yy > 0) | ((yy == 0) & (xx > 0))
    peaks = (surface == maximum_filter(surface, 5)) & (surface > threshold) & half & lags.valid
    ys, xs = np.nonzero(peaks)
    points = []
    for i in np.argsort(-surface[ys, xs])[:most]:
        py, px = _subpixel(lags.corr, int(ys[i]), int(xs[i]))
        points.append((float(surface[ys[i], xs[i]]), np.array([px - cx, py - cy])))
    return points


def find_square_lattices(luma: npt.NDArray[np.float32] | LagMap, *, keep: int = 2) -> list[Lattice]:
    """Lattices of square tiles (rotation and uniform scale), clearest first (may be empty).

    The autocorrelation is pooled along rays: for each angle (0.25 degree steps over a
    quarter turn) and period (0.5 px steps), the lattice's nearest points on both axes (one
    and two periods out) and on both diagonals are summed, so peaks too weak to stand out
    alone (a rotated copy re-encoded as JPEG) add up; each winner is then refined by least
    squares over the peaks near its points (:func:`_refine`).

    Args:
        luma: the image's luma, 0..255 (float32), or its :func:`lag_map`.
        keep: how many hypotheses to return at most.
    """
    lags = lag_map(luma) if isinstance(luma, np.ndarray) else luma
    z, valid = lags.z, lags.valid
    height, width = lags.shape
    if not valid.any():
        return []
    # the 3 x 3 maximum of noise is biased upwards: re-centre it, or a sum over many points
    # favours short periods
    spread = float(lags.local[valid].std())
    if spread <= 1e-9:  # a flat picture: nothing periodic to find
        return []
    local = np.where(valid, (lags.local - float(lags.local[valid].mean())) / spread, 0.0)
    cy, cx = z.shape[0] // 2, z.shape[1] // 2
    reach = MAX_LAG * min(height, width)
    step = 0.25
    angles = np.radians(np.arange(0.0, 180.0, step))
    radii = np.arange(0.0, reach * 1.5 + 2, 0.5)
    ys = cy + np.sin(angles)[:, None] * radii[None, :]
    xs = cx + np.cos(angles)[:, None] * radii[None, :]
    polar = map_coordinates(local, [ys, xs], order=1, mode="constant", cval=0.0)
    n = len(angles)
    quarter, eighth = n // 2, n // 4
    axis = polar[:quarter] + polar[quarter:]
    diag = polar[eighth : eighth + quarter] + np.roll(polar, -eighth, axis=0)[quarter : 2 * quarter]
    periods = np.arange(MIN_SQUARE_PERIOD, reach + 0.5, 0.5)
    scores = np.zeros((quarter, len(periods)))
    counts = np.zeros(len(periods))
    for k in range(1, 3):  # the nearest points: they overlap most (a splice: 25 %)
        inside = k * periods <= reach
        idx = np.rint(k * periods / 0.5).astype(int)
        scores[:, inside] += axis[:, idx[inside]]
        counts[inside] += 2
    idx = np.rint(np.sqrt(2) * periods / 0.5).astype(int)
    inside = np.sqrt(2) * periods <= reach
    scores[:, inside] += diag[:, idx[inside]]
    counts[inside] += 2
    scores = scores / np.sqrt(np.maximum(counts, 1))
    peaks = (scores == maximum_filter(scores, (9, 9), mode=("wrap", "nearest"))) & (scores > 0)
    order = np.argsort(-scores[peaks])
    ai, pi = np.nonzero(peaks)
    points = _peak_points(lags, z, REFINE_Z, most=200)
    found: list[Lattice] = []
    for o in order[: 4 * keep]:
        theta, period = angles[ai[o]], periods[pi[o]]
        c, s_ = np.cos(theta), np.sin(theta)
        basis, _ = _refine(period * np.array([[c, -s_], [s_, c]]), points)
        if any(_same_lattice(basis, other.basis) for other in found):
            continue
        found.append(Lattice(basis, float(scores[ai[o], pi[o]])))
        if len(found) >= keep:
            break
    return found


def finer(lattice: Lattice) -> Lattice:
    """The square lattice whose diagonal points are ``lattice``'s basis: a square lattice's
    diagonal points form a square lattice too (turned 45 degrees, sides x sqrt 2), and a
    search that finds that one must try this one as well."""
    a, b = lattice.basis[:, 0], lattice.basis[:, 1]
    return Lattice(np.column_stack([(a + b) / 2, (a - b) / 2]), lattice.z)
