"""Geometric synchronisation for tiled watermarks: the tile lattice and the 8 dihedral moves.

A tiled mark repeats with the tile's period, so the autocorrelation of an image's (whitened)
high-frequency residual has peaks on the tile lattice, whatever the image went through: after a
rotation, a non-uniform scale, a shear or mild perspective (locally affine) the lattice is
rotated, stretched or sheared with it (Kutter, "Watermarking resisting to translation, rotation,
and scaling", SPIE 1998). :func:`find_lattices` reads the two shortest lattice vectors from those
peaks (refined by least squares over every peak near a lattice point); :func:`rectify` resamples
the image so that the lattice becomes square and axis-aligned again, leaving only what a lattice
cannot tell apart (which basis vector was "x", and their signs: mirrors and quarter turns) to the
8 dihedral hypotheses of :func:`dihedral`, and the tile offset to the pilot correlation. A
projective map bends the lattice (its scale changes across the picture): :func:`find_keystone`
finds the keystone (:func:`keystone_matrix`) whose undoing makes the lattice clearest, to be
undone (:func:`warp_projective`) before the lattice is searched.

This module knows nothing about payloads: it maps pixels to pixels (numpy, scipy, OpenCV).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import scipy.fft
from scipy.ndimage import map_coordinates, maximum_filter

from . import spread as _ss1

__all__ = [
    "DIHEDRAL",
    "LagMap",
    "Lattice",
    "Rectified",
    "coarser",
    "dihedral",
    "doubled",
    "find_keystone",
    "find_lattices",
    "find_square_lattices",
    "finer",
    "keystone_matrix",
    "lag_map",
    "rectify",
    "same_basis",
    "undihedral",
    "warp_projective",
]

FloatArray = npt.NDArray[np.float64]
DIHEDRAL = 8  # identity, 3 quarter turns, and the mirror of each
PEAK_Z = 4.0  # autocorrelation peaks below this z-score are not lattice candidates
MIN_PERIOD = 44.0  # px: shortest tile period searched (32 chips of 1.4 px)
MAX_LAG = 0.5  # longest lag searched, as a share of the shorter side (two tiles at least)
MIN_SQUARE_PERIOD = 64.0  # px: a 256 px picture's 128 px tiles at half size
# lattice points pooled by the square search, one of each +/- pair, closed under quarter turns
SQUARE_POINTS = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2), (2, 1), (1, 2), (2, -1), (1, -2))
SQUARE_ANGLE_STEP = 0.25  # degrees: the square search's angles
SQUARE_PERIOD_STEP = 0.5  # px: the square search's periods
REFINE_Z = 2.5  # peaks above this z-score refine a square lattice found by pooling
# box sizes of the residuals whose autocorrelations are summed: a 3 px box suits a picture
# smooth at the pixel scale (upscaled, 6.4 px chips), a 5 px box a detailed one (4 px chips
# after JPEG); each finds lattices the other misses (rotated and re-encoded 512 px photos:
# 9/14 with 3 alone, 12/14 with 5 alone, 13/14 with both)
WHITENING = (3, 5)
MAX_BASIS_ANGLE_COS = 0.5  # basis vectors within 60..120 degrees of each other
# keystones tried in each of 8 directions of (g, h) (see keystone_matrix), then half a step
# around the best: the top corners moved in by 4 % of the width are undone by h = 1/12, and the
# square lattice's score falls back to noise 0.02 away from the right h on a weak mark
# (measured on 20 pictures at 512 px)
KEYSTONE_STEPS = (0.03, 0.06, 0.09)
KEYSTONE_SIDE = 512  # px: the keystone search runs on a copy at most this long
KEYSTONE_GAIN = 2.0  # a keystone is kept when its lattice score beats the unwarped one by this
KEYSTONE_FULL = 1.5  # from this many times the copy's size, the copy only points the way:
# its KEYSTONE_LEADS best keystones are read on the picture itself (at 1024 px the right one
# ranked 1st to 3rd on the copy in 19 of 20 pictures keystoned from the top), and the search
# goes on around the best of them when it beats the unwarped picture by KEYSTONE_LEAD_GAIN
# (the right one: 1.9 to 22; 20 unmarked pictures: 0.1 to 1.9, and 5.0 on a generated one
# with a pattern of its own; each one that passes costs about 0.5 s more), or when the copy's
# best beat the unwarped copy by KEYSTONE_GAIN
KEYSTONE_LEADS = 4
KEYSTONE_LEAD_GAIN = 1.5


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


def _whitened(luma: npt.NDArray[np.float32], size: int) -> npt.NDArray[np.float32]:
    """The residual of a ``size`` px box filter, divided by its local energy (0 where
    :func:`_unmarkable`)."""
    residual = luma - _ss1._box(luma, size)
    residual = residual / np.sqrt(_ss1._box(residual * residual, 9) + 4.0)
    residual[_unmarkable(luma)] = 0.0
    return np.asarray(residual, dtype=np.float32)


def _unmarkable(luma: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Clipped pixels, or filled borders: no mark there."""
    return np.asarray((luma <= 0.5) | (luma >= 254.5))


def _lag_frame(
    height: int, width: int
) -> tuple[tuple[int, int], npt.NDArray[np.int64], tuple[npt.NDArray[np.int64], ...]]:
    """The transform size, the lags kept (-reach .. reach) and their (rows, cols) index into
    the inverse transform, for a ``height`` x ``width`` picture's autocorrelation."""
    reach = int(np.ceil(MAX_LAG * min(height, width))) + 3  # the 5 x 5 peak filter's margin
    # zero padding by the longest lag searched: no wrap-around there
    shape = (scipy.fft.next_fast_len(height + reach), scipy.fft.next_fast_len(width + reach))
    lags = np.arange(-reach, reach + 1)
    return shape, lags, np.ix_(lags % shape[0], lags % shape[1])  # centred, without fftshift


def _ring(margin: int, reach: float) -> npt.NDArray[np.bool_]:
    """The lags searched on a lag map of lags -``margin`` .. ``margin`` (lag 0 in the
    middle): from :data:`MIN_PERIOD` to ``reach`` px long."""
    yy, xx = np.mgrid[-margin : margin + 1, -margin : margin + 1]
    radius = np.hypot(yy, xx)
    return np.asarray((radius >= MIN_PERIOD) & (radius <= reach))


def _summed_power(
    residuals: list[npt.NDArray[np.float32]], shape: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """The residuals' power spectra at ``shape``, each divided by its residual's energy (its
    autocorrelation at lag 0), summed: one inverse transform gives their summed
    autocorrelations."""
    power = np.zeros((shape[0], shape[1] // 2 + 1), dtype=np.float32)
    for residual in residuals:
        spectrum = np.abs(scipy.fft.rfft2(residual, shape, workers=1)) ** 2
        power += spectrum / (float(np.sum(residual.astype(np.float64) ** 2)) + 1e-12)
    return power


def _autocorrelation(luma: npt.NDArray[np.float32]) -> tuple[FloatArray, int, int]:
    """Autocorrelation of the whitened residuals, normalised per lag by the pixels that
    overlap, centred and cut to the lags searched (lag 0 at [cy, cx], the middle).

    The :data:`WHITENING` residuals' autocorrelations are summed, each divided by its
    residual's energy (its value at lag 0): one inverse transform for all of them.
    """
    height, width = luma.shape
    shape, lags, (rows, cols) = _lag_frame(height, width)
    power = _summed_power([_whitened(luma, size) for size in WHITENING], shape)
    corr = scipy.fft.irfft2(power, shape, workers=1)[rows, cols]
    unmarkable = _unmarkable(luma)
    if not unmarkable.any():  # pixels overlapping at lag (dy, dx): (height-|dy|) (width-|dx|)
        count = np.outer(height - np.abs(lags), width - np.abs(lags)).astype(np.float64)
    else:
        mask = (~unmarkable).astype(np.float32)
        overlap = np.abs(scipy.fft.rfft2(mask, shape, workers=1)) ** 2
        count = scipy.fft.irfft2(overlap, shape, workers=1)[rows, cols]
    # never normalise by fewer than a quarter of the pixels
    return np.asarray(corr / np.maximum(count, 0.25 * height * width)), height, width


def _zscored(values: FloatArray, valid: npt.NDArray[np.bool_]) -> FloatArray:
    """``values`` z-scored over the ``valid`` lags."""
    ring = values[valid]
    return np.asarray((values - float(ring.mean())) / (float(ring.std()) + 1e-12))


def _local_max(values: FloatArray, size: int) -> FloatArray:
    """``scipy.ndimage.maximum_filter(values, size)`` (its border too), by OpenCV: 4 times
    faster on a lag map."""
    kernel = np.ones((size, size), np.uint8)
    return np.asarray(cv2.dilate(values, kernel, borderType=cv2.BORDER_REFLECT))


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
    valid = _ring(corr.shape[0] // 2, MAX_LAG * min(height, width))
    z = _zscored(corr, valid) if valid.any() else np.zeros_like(corr)
    ringed = np.where(valid, z, 0.0)
    return LagMap(corr, valid, z, ringed, _local_max(ringed, 3), (height, width))


def keystone_matrix(width: int, height: int, g: float, h: float) -> FloatArray:
    """The 3 x 3 projective map (x, y, 1) -> (x', y', w') of a ``width`` x ``height``
    picture that divides by ``1 + g u + h v``, where (u, v) is the pixel in coordinates
    centred on the picture and scaled to its sides (-0.5 .. 0.5): ``h > 0`` shrinks the
    bottom and widens the top (it undoes a screen photographed from below), ``g`` the same
    from right to left. The centre stays where it is."""
    to_unit = np.array([[1.0 / width, 0.0, -0.5], [0.0, 1.0 / height, -0.5], [0.0, 0.0, 1.0]])
    keystone = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [g, h, 1.0]])
    return np.asarray(np.linalg.inv(to_unit) @ keystone @ to_unit)


def warp_projective(plane: npt.NDArray[np.float32], matrix: FloatArray) -> npt.NDArray[np.float32]:
    """``plane`` resampled through ``matrix`` (3 x 3, source pixels -> output pixels; bilinear,
    the same size, 0 where the source has nothing)."""
    height, width = plane.shape
    out = cv2.warpPerspective(
        plane,
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class _SquareFrame:
    """What :class:`_SquareScore` computes once for a picture size and reads on every try:
    the transform size and the lags kept (:func:`_lag_frame`), the pixels a whole picture
    overlaps at each lag, the ring searched, and the pooled points' positions in the lag
    map (one column per angle and period of :func:`_square_grid`, a row block per point of
    :data:`SQUARE_POINTS`), with 1 where a point is inside the ring and the pooling's norm."""

    shape: tuple[int, int]
    index: tuple[npt.NDArray[np.int64], ...]
    count: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]
    map_x: npt.NDArray[np.float32]
    map_y: npt.NDArray[np.float32]
    inside: npt.NDArray[np.float32]
    norm: FloatArray


@functools.lru_cache(maxsize=4)
def _square_frame(height: int, width: int, period_step: float) -> _SquareFrame:
    """The :class:`_SquareFrame` of a ``height`` x ``width`` picture, kept for the next
    picture of that size (a copy for the keystone search is 512 px long)."""
    reach = MAX_LAG * min(height, width)
    shape, lags, index = _lag_frame(height, width)
    margin = int(lags[-1])
    count = np.outer(height - np.abs(lags), width - np.abs(lags)).astype(np.float32)
    valid = _ring(margin, reach)
    angles, periods = _square_grid(reach, period_step)
    xs, ys, weights = [], [], []
    counts = np.zeros(periods.shape[1])
    for i, j in SQUARE_POINTS:
        inside = np.hypot(i, j) * periods[0] <= reach
        counts += inside
        xs.append(margin + (i * np.cos(angles) - j * np.sin(angles)) * periods)
        ys.append(margin + (i * np.sin(angles) + j * np.cos(angles)) * periods)
        weights.append(np.broadcast_to(inside, xs[-1].shape))
    frame = _SquareFrame(
        shape,
        index,
        count,
        valid,
        np.concatenate(xs, axis=0).astype(np.float32),
        np.concatenate(ys, axis=0).astype(np.float32),
        np.concatenate(weights, axis=0).astype(np.float32),
        1.0 / np.sqrt(np.maximum(counts, 1)),
    )
    arrays: list[np.ndarray] = [
        *index,
        count,
        valid,
        frame.map_x,
        frame.map_y,
        frame.inside,
        frame.norm,
    ]
    for array in arrays:
        array.flags.writeable = False  # shared by every picture of this size
    return frame


class _SquareScore:
    """The square search's pooled score (:func:`find_square_lattices`), as one number: how
    clearly a picture shows a square lattice, at any angle and period.

    Made for many resamplings of one picture (:func:`find_keystone`): the whitened residuals
    are made once and resampled (whitening is local, so it nearly commutes with a mild warp,
    and the luma's own resampling adds a lattice of its own), and the pooled points'
    positions are computed once per picture size (:func:`_square_frame`) and read with one
    ``cv2.remap`` (1.3 ms a try at 512 px, against 17 ms for ``map_coordinates``). Summing
    the two residuals into one, for one transform a try instead of two, was 30 % faster but
    lost a weak mark's keystone at 512 px (hubble, its right keystone a hair behind a wrong
    one). Each lag is normalised by the pixels a whole picture would overlap there
    (:func:`_autocorrelation` counts unclipped pixels instead): the tries are compared with
    each other, and the borders a keystone leaves are a few percent of them.

    Args:
        luma: the picture's luma, 0..255 (float32).
        scale: the picture's size against a :data:`KEYSTONE_SIDE` px copy: the periods are
            pooled every ``scale`` times :data:`SQUARE_PERIOD_STEP` (the same share of a
            period at every size, and half the points at 1024 px).
    """

    def __init__(self, luma: npt.NDArray[np.float32], scale: float = 1.0) -> None:
        self.residuals = [_whitened(luma, size) for size in WHITENING]
        self.frame = _square_frame(*luma.shape, SQUARE_PERIOD_STEP * max(1.0, scale))

    def __call__(self, matrix: FloatArray | None) -> float:
        """The best pooled score of the picture resampled through ``matrix`` (3 x 3; ``None``:
        as it is)."""
        frame = self.frame
        residuals = self.residuals
        if matrix is not None:
            residuals = [warp_projective(residual, matrix) for residual in residuals]
        power = _summed_power(residuals, frame.shape)
        corr = scipy.fft.irfft2(power, frame.shape, workers=1)[frame.index] / frame.count
        # the lag map's z-score and the square search's re-centring, in one: a positive
        # affine map of the values commutes with the 3 x 3 maximum
        outside = float(corr[frame.valid].mean())
        local = _local_max(np.where(frame.valid, corr, outside).astype(np.float32), 3)
        ring = local[frame.valid]
        spread = float(ring.std())
        if spread <= 1e-12:
            return 0.0
        local = np.where(frame.valid, (local - float(ring.mean())) / spread, 0.0)
        sampled = cv2.remap(
            local.astype(np.float32),
            frame.map_x,
            frame.map_y,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        )
        pooled = (sampled * frame.inside).reshape(len(SQUARE_POINTS), -1, frame.norm.size)
        return float((pooled.sum(axis=0) * frame.norm).max())


def find_keystone(luma: npt.NDArray[np.float32]) -> tuple[float, float] | None:
    """The keystone (g, h) of :func:`keystone_matrix` that makes a tiled mark's lattice
    clearest, when it is clearer than with none: a projective map (a screen photographed at an
    angle) bends the lattice, so that no affine map rectifies the whole picture at once.

    The lattice's pooled score (:class:`_SquareScore`, on a copy at most
    :data:`KEYSTONE_SIDE` px long) is read after each of :data:`KEYSTONE_STEPS` in each of 8
    directions (the axes: one edge shorter than the one opposite; the diagonals: one corner
    moved), then at the 8 neighbours of the best, half a step away, and at the peak of a
    parabola through those. On a picture of :data:`KEYSTONE_FULL` times the copy's size or
    more, the copy only points the way: its :data:`KEYSTONE_LEADS` best are read on the
    picture itself, and the reads around the best of them too, when it beats the unwarped
    picture by :data:`KEYSTONE_LEAD_GAIN`, or when the copy's best beat the unwarped copy by
    :data:`KEYSTONE_GAIN` (a keystone between two steps, such as one corner moved in by 4 %,
    halfway between the diagonal's first two steps, gains less on the picture, where the
    peak is narrower, than on the copy). The copy loses most of the evidence of an
    upscaled photo, whose host is smooth at the pixel scale, so that its whitened residual
    is mostly the mark: on keystoned brick at 1024 px the lattice scored 14.2 against 5.9
    unwarped on the picture, 7.0 against 5.7 on the copy, where a wrong keystone scored
    6.3. The best is returned when it beats the unwarped picture's score by
    :data:`KEYSTONE_GAIN`.

    Args:
        luma: the picture's luma, 0..255 (float32).
    """
    height, width = luma.shape
    factor = max(height, width) / KEYSTONE_SIDE
    copy = luma
    if factor > 1:
        size = (max(1, round(width / factor)), max(1, round(height / factor)))
        copy = np.asarray(cv2.resize(luma, size, interpolation=cv2.INTER_AREA), dtype=np.float32)
    if min(copy.shape) * MAX_LAG < MIN_SQUARE_PERIOD:
        return None
    search = _KeystoneReads(copy)
    for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
        for step in KEYSTONE_STEPS:
            search.read(sx * step, sy * step)
    if factor >= KEYSTONE_FULL:
        pointed = search.best()[1] >= search.plain + KEYSTONE_GAIN  # the copy alone is sure
        leads = search.leading(KEYSTONE_LEADS)
        search = _KeystoneReads(luma, scale=factor)
        for g, h in leads:
            search.read(g, h)
        if not pointed and search.best()[1] < search.plain + KEYSTONE_LEAD_GAIN:
            return None
    search.around(*search.best()[0])
    (g, h), best = search.best()
    return (g, h) if best >= search.plain + KEYSTONE_GAIN else None


class _KeystoneReads:
    """The pooled lattice scores of one picture after keystones, each read once."""

    def __init__(self, luma: npt.NDArray[np.float32], scale: float = 1.0) -> None:
        height, width = luma.shape
        self.size = (width, height)
        self.score = _SquareScore(luma, scale)
        self.plain = self.score(None)
        self.tried: dict[tuple[float, float], float] = {(0.0, 0.0): self.plain}

    def read(self, g: float, h: float) -> None:
        key = (round(g, 4), round(h, 4))
        if key not in self.tried:
            self.tried[key] = self.score(keystone_matrix(*self.size, *key))

    def best(self) -> tuple[tuple[float, float], float]:
        return max(self.tried.items(), key=lambda item: item[1])

    def leading(self, count: int) -> list[tuple[float, float]]:
        """The ``count`` keystones read that scored best (not the unwarped picture)."""
        tried = sorted(self.tried.items(), key=lambda item: -item[1])
        return [key for key, _ in tried if key != (0.0, 0.0)][:count]

    def around(self, g: float, h: float) -> None:
        """Reads (g, h) and its 8 neighbours half a step away, then at the peak of a
        parabola through the best of them and its two neighbours along each axis (the steps
        are as wide as the peak on a weak mark)."""
        half = KEYSTONE_STEPS[0] / 2
        for du in (-half, 0.0, half):
            for dv in (-half, 0.0, half):
                self.read(g + du, h + dv)
        (g, h), centre = self.best()
        moves = []
        for du, dv in ((half, 0.0), (0.0, half)):
            minus = self.tried.get((round(g - du, 4), round(h - dv, 4)), centre)
            plus = self.tried.get((round(g + du, 4), round(h + dv, 4)), centre)
            denom = minus - 2 * centre + plus  # 0 where a side was not read: no move
            move = 0.0 if denom >= 0 else float(np.clip(0.5 * (minus - plus) / denom, -0.5, 0.5))
            moves.append(move)
        self.read(g + moves[0] * half, h + moves[1] * half)


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
    peaks = (surface == _local_max(surface, 5)) & (surface > threshold) & half & lags.valid
    ys, xs = np.nonzero(peaks)
    points = []
    for i in np.argsort(-surface[ys, xs])[:most]:
        py, px = _subpixel(lags.corr, int(ys[i]), int(xs[i]))
        points.append((float(surface[ys[i], xs[i]]), np.array([px - cx, py - cy])))
    return points


def _square_grid(
    reach: float, period_step: float = SQUARE_PERIOD_STEP
) -> tuple[FloatArray, FloatArray]:
    """The square search's angles (radians, a column) and periods (px, a row): every
    :data:`SQUARE_ANGLE_STEP` over a quarter turn, every ``period_step`` from
    :data:`MIN_SQUARE_PERIOD` to ``reach``."""
    angles = np.radians(np.arange(0.0, 90.0, SQUARE_ANGLE_STEP))[:, None]
    periods = np.arange(MIN_SQUARE_PERIOD, reach + 0.5, period_step)[None, :]
    return angles, periods


def find_square_lattices(luma: npt.NDArray[np.float32] | LagMap, *, keep: int = 2) -> list[Lattice]:
    """Lattices of square tiles (rotation and uniform scale), clearest first (may be empty).

    The autocorrelation is pooled: for each angle (0.25 degree steps over a quarter turn)
    and period (0.5 px steps), the lattice's :data:`SQUARE_POINTS` inside the searched ring
    are summed, so peaks too weak to stand out alone (a rotated copy re-encoded as JPEG) add
    up. Each winner is placed to a fifth of those steps on the autocorrelation
    (:func:`_finest_square`), refined by least squares over the peaks near its points
    (:func:`_refine`), and the better placed of the two is kept.

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
    angles, periods = _square_grid(reach)
    scores = np.zeros((angles.shape[0], periods.shape[1]))
    counts = np.zeros(periods.shape[1])
    cos, sin = np.cos(angles), np.sin(angles)
    for i, j in SQUARE_POINTS:
        inside = np.hypot(i, j) * periods[0] <= reach
        if not inside.any():
            continue
        # lattice point i * a + j * b, with a = period (cos, sin), b = a turned a quarter
        px = (i * cos - j * sin) * periods[:, inside]
        py = (i * sin + j * cos) * periods[:, inside]
        scores[:, inside] += map_coordinates(local, [cy + py, cx + px], order=1, cval=0.0)
        counts[inside] += 1
    scores = scores / np.sqrt(np.maximum(counts, 1))
    peaks = (scores == maximum_filter(scores, (9, 9), mode=("wrap", "nearest"))) & (scores > 0)
    order = np.argsort(-scores[peaks])
    ai, pi = np.nonzero(peaks)
    points = _peak_points(lags, z, REFINE_Z, most=200)
    found: list[Lattice] = []
    for o in order[: 4 * keep]:
        theta, period = float(angles[ai[o], 0]), float(periods[0, pi[o]])
        square = _finest_square(
            z, theta, period, reach, np.radians(SQUARE_ANGLE_STEP), SQUARE_PERIOD_STEP
        )
        refined, _ = _refine(square, points)
        basis = max((square, refined), key=lambda b: _point_sum(z, b, reach))
        if any(_same_lattice(basis, other.basis) for other in found):
            continue
        found.append(Lattice(basis, float(scores[ai[o], pi[o]])))
        if len(found) >= keep:
            break
    return found


def _point_sum(z: FloatArray, basis: FloatArray, reach: float) -> float:
    """Mean of ``z`` (bilinear) over the basis' :data:`SQUARE_POINTS` within ``reach``."""
    n = np.array(SQUARE_POINTS, dtype=np.float64).T
    pts = basis @ n
    inside = np.hypot(*pts) <= reach
    if not inside.any():
        return -np.inf
    cy, cx = z.shape[0] // 2, z.shape[1] // 2
    values = map_coordinates(z, [cy + pts[1, inside], cx + pts[0, inside]], order=1)
    return float(values.mean())


def _finest_square(
    z: FloatArray, theta: float, period: float, reach: float, d_theta: float, d_period: float
) -> FloatArray:
    """The square basis near (``theta``, ``period``) whose points score best on ``z``
    (:func:`_point_sum`), to a fifth of the pooling grid's steps: at a 100 px period, the
    grid's half-pixel step drifts by most of a chip across a 512 px picture."""
    candidates = [
        length * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        for t in theta + d_theta * np.linspace(-1.0, 1.0, 11)
        for length in period + d_period * np.linspace(-1.0, 1.0, 11)
    ]
    return max(candidates, key=lambda basis: _point_sum(z, basis, reach))


def finer(lattice: Lattice) -> Lattice:
    """The square lattice whose diagonal points are ``lattice``'s basis: a square lattice's
    diagonal points form a square lattice too (turned 45 degrees, sides x sqrt 2), and a
    search that finds that one must try this one as well."""
    a, b = lattice.basis[:, 0], lattice.basis[:, 1]
    return Lattice(np.column_stack([(a + b) / 2, (a - b) / 2]), lattice.z)


def doubled(lattice: Lattice) -> Lattice:
    """``lattice`` with its shorter basis vector doubled: a stretched picture's tiles can show
    a strong peak at half a tile along the stretch (interpolation), which the general search
    takes for the lattice and keeps instead of the tiles' own (one per family of lattices)."""
    a, b = lattice.basis[:, 0], lattice.basis[:, 1]
    if np.hypot(*a) <= np.hypot(*b):
        a = 2 * a
    else:
        b = 2 * b
    return Lattice(np.column_stack([a, b]), lattice.z)


def coarser(lattice: Lattice) -> Lattice:
    """The square lattice made of ``lattice``'s diagonal points (the inverse of :func:`finer`):
    the square search pools the same points for both (a mark's lattice, and the one with a
    point at each tile's centre too, score within a few percent of each other) and keeps one
    of the two, so the other must be tried as well."""
    a, b = lattice.basis[:, 0], lattice.basis[:, 1]
    return Lattice(np.column_stack([a + b, a - b]), lattice.z)
