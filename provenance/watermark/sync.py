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
from scipy.ndimage import maximum_filter, uniform_filter

__all__ = ["DIHEDRAL", "Lattice", "Rectified", "dihedral", "find_lattices", "rectify", "undihedral"]

FloatArray = npt.NDArray[np.float64]
DIHEDRAL = 8  # identity, 3 quarter turns, and the mirror of each
PEAK_Z = 4.0  # autocorrelation peaks below this z-score are not lattice candidates
MIN_PERIOD = 44.0  # px: shortest tile period searched (32 chips of 1.4 px)
MAX_LAG = 0.5  # longest lag searched, as a share of the shorter side (two tiles at least)
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


def find_lattices(luma: npt.NDArray[np.float32], *, keep: int = 3) -> list[Lattice]:
    """Lattice hypotheses for a tiled mark in ``luma``, clearest first (may be empty).

    Args:
        luma: the image's luma, 0..255 (float32).
        keep: how many hypotheses to return at most.
    """
    corr, height, width = _autocorrelation(luma)
    cy, cx = corr.shape[0] // 2, corr.shape[1] // 2
    yy, xx = np.mgrid[-cy : corr.shape[0] - cy, -cx : corr.shape[1] - cx]
    radius = np.hypot(yy, xx)
    valid = (radius >= MIN_PERIOD) & (radius <= MAX_LAG * min(height, width))
    if not valid.any():
        return []
    values = corr[valid]
    z = (corr - float(values.mean())) / (float(values.std()) + 1e-12)
    z[~valid] = 0.0
    # one half plane: a peak at v is also one at -v
    half = (yy > 0) | ((yy == 0) & (xx > 0))
    peaks = (z == maximum_filter(z, 5)) & (z > PEAK_Z) & half
    ys, xs = np.nonzero(peaks)
    if len(ys) < 2:
        return []
    order = np.argsort(-z[ys, xs])[:60]
    points = []
    for i in order:
        py, px = _subpixel(corr, int(ys[i]), int(xs[i]))
        points.append((float(z[ys[i], xs[i]]), np.array([px - cx, py - cy])))
    # every pair of strong peaks is a basis hypothesis; the lattice whose points are peaks
    # (and whose other points are not missing) scores best: a half-period lattice predicts
    # points with nothing there, a double-period one misses the peaks between its points
    local = maximum_filter(z, 3)
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
