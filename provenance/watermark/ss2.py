"""sdkit's second watermark method, ``sdkit-ss2``: ``sdkit-ss1``'s tiles, found again after
mirrors, rotations, stretches and splices, and told where they are.

The mark is built as in :mod:`provenance.watermark.spread` (tiles of 32 x 32 chips, 5 chips per
codeword bit, a pilot on the other 224) with its own seed, so the two methods never read each
other's tiles, with chips of at least 4 px and a different strength rule:

* **Chips of at least 4 px** (:func:`grid_shape`): 160, 128 or 64 chips along the long edge,
  the first whose chips are 4 px or more (6.4 px at 1024, 4 px at 512 and at 256 on a flat
  picture; ``sdkit-ss1``'s 160 everywhere gave 3.2 and 1.6 px, which WebP and JPEG q75
  remove). 64 chips only for flat pictures: a small photo keeps 128. A picture made only of
  texture keeps 160: there a coarser chip meets more of the host's own texture.
* **Strength on flat pictures** (:func:`is_flat`, :func:`luminance_jnd`). SSIM >= 0.981 held
  flat colour (where SSIM's stabilising constant is all there is) under about one level, which
  no one sees and JPEG erases. A flat picture's mark is instead held below the luminance
  visibility threshold of its background (Chou and Li 1995) at PSNR >= 40 dB; photos keep
  PSNR >= 38.5 dB and SSIM >= 0.981 as in ``sdkit-ss1``.

What is new in the decoder:

* **Dihedral hypotheses.** The folded tile is read in each of the 8 dihedral orientations
  (identity, quarter turns, mirrors); the pilot correlation picks the one, and the offset.
* **The tile lattice** (:mod:`provenance.watermark.sync`): when the image's own chip grid gives
  nothing, the autocorrelation of the whitened residual shows the tiling's lattice (square
  lattices pooled along rays, general ones from pairs of peaks); the image is resampled so that
  the lattice is square again (undoing rotation by any angle, non-uniform scale, shear and,
  locally, mild perspective) and read as above.
* **Keystones.** A projective map (a screen photographed from below or from a side, one
  corner moved) changes the lattice's scale across the picture, so no affine map undoes it:
  when nothing else has read, the keystone that makes the lattice clearest
  (:func:`sync.find_keystone`) is undone first and the lattice path runs again on the result.
* **Splices.** On the lattice path the pilot is also read in windows of half the grid; the
  rectangle of blocks where the pilot agrees best is folded alone as a second reading.
* **Localisation.** Once a payload decodes, every block of 16 x 16 chips is scored against the
  decoded pattern. :class:`Region` gives the box of the rectangle of blocks where that evidence
  is strongest, in the searched image's pixels, and the share of the blocks that agree on their
  own (z-score 3 or more), so a marked picture pasted into another is found and named.

False accepts: every hypothesis the decoder tries is one more chance for noise to decode. The
decoder makes at most :data:`MAX_DECODES` calls of ``decode_payload`` per image, each at most
``false_accept_probability(5)`` = 9.8e-13, so the union bound per image is
``MAX_DECODES * 9.8e-13`` (:func:`false_accept_bound`), kept below 1e-9 by an assertion at import.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import scipy.fft
from PIL import Image
from scipy.ndimage import uniform_filter

from . import payload as _payload
from . import spread as _ss1
from . import sync
from .region import Region, best_rectangle, block_sums, region_of
from .strength import (
    GRIDS,
    SMALL_EDGE,
    TEXTURE_SHARE,
    TEXTURE_STD,
    grid_shape,
    is_flat,
    is_smooth,
    luminance_jnd,
)

__all__ = [
    "MAX_DECODES",
    "METHOD",
    "Candidate",
    "Region",
    "candidates",
    "embed_bits",
    "false_accept_bound",
    "grid_shape",
    "is_flat",
    "locate",
    "luminance_jnd",
]

METHOD = "sdkit-ss2"
SEED = 0x5D_C1_55_02  # fixes permutation, PN and pilot: part of the method's definition
TILE = _ss1.TILE
CHIPS_PER_BIT = _ss1.CHIPS_PER_BIT
FLOOR = 1.6  # minimum amplitude (levels), before the global scaling
FLAT_PSNR = 40.0  # on a flat picture, at or above this PSNR the SSIM floor no longer applies
SYNC_Z = 5.0
MAX_DECODES = 40  # decode_payload calls per image, at most (the false-accept budget)
CHASE_BITS = _payload.MAX_CHASE_BITS
SPLICE_Z = 3.5  # a fold whose pilot scores this z or more is checked for a splice
GATE_BLOCK = TILE // 2  # chips per side of a splice's gating block
SQUARE_KEEP = 2  # square-lattice hypotheses (each with its finer and coarser alternatives)
GENERAL_KEEP = 2  # general-lattice hypotheses
RECTIFY_KEEP = 3  # hypotheses read at every phase, after a four-phase look at each,
RECTIFY_Z = 4.8  # if that look's pilot reaches this z (noise: 3.8 to 5.2; marked: 4.9 to 13;
# the 16-phase read then gains up to half a z: gravel turned 2 degrees, 4.92 -> 5.34)
COARSE_CHIPS = 320  # chips a side the first look reads at most (a splice's 3.2 px chips at
# 1024 px: 320 chips; a false lattice of 1.4 px chips: 730)
SSIM_SPARE = 0.75  # a photo's mark is scaled until 1 - SSIM reaches this share of its floor's
MAX_TRIES = 8  # amplitude scalings the embedder tries, at most (each one SSIM: 0.1 s at 1024)
MAX_WINDOWS = 6  # splice windows a side, at most (each a fold and 8 correlations)
MAX_GROWTH = 2.0  # the lattice path never resamples to more than this many times the pixels

FloatArray = npt.NDArray[np.float64]


def false_accept_bound() -> float:
    """Union bound on a false payload per image: decodes x per-decode probability."""
    return MAX_DECODES * _payload.false_accept_probability(CHASE_BITS)


assert false_accept_bound() < 1e-9, "the geometric search must keep the false-accept budget"


def _layout(n_bits: int) -> _ss1._Layout:
    """ss1's tile layout drawn from ss2's own seed (so neither method reads the other's tiles)."""
    return _ss1._layout(n_bits, SEED)


def embed_bits(image: Image.Image, bits: npt.NDArray[np.uint8]) -> Image.Image:
    """Return a copy of ``image`` carrying ``bits`` (alpha, if any, is kept).

    Raises:
        WatermarkError: the image is smaller than 256 px on a side.
    """
    _ss1._check_size(image)
    layout = _layout(len(bits))
    alpha = image.getchannel("A") if "A" in image.getbands() else None
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    height, width = rgb.shape[:2]
    luma = _ss1._luma(rgb)
    mean = uniform_filter(luma, 7)
    std = np.sqrt(np.maximum(uniform_filter(luma * luma, 7) - mean * mean, 0.0))
    textured = float(np.mean(std < TEXTURE_STD)) < TEXTURE_SHARE
    # a mostly flat picture (as the shipped model draws) is held by PSNR and the visibility
    # threshold, gets a higher floor and the coarsest grid; a photo keeps sdkit-ss1's floor
    # and is held by SSIM too
    flat = is_flat(std, mean)
    grid_h, grid_w, _ = grid_shape(height, width, textured=textured, flat=flat)
    ty, tx = np.mgrid[0:grid_h, 0:grid_w]
    ty, tx = ty % TILE, tx % TILE
    index = layout.assign[ty, tx]
    pn = layout.pn[ty, tx]
    symbols = np.where(index < 0, 1.0, 2.0 * bits[np.maximum(index, 0)].astype(np.float64) - 1.0)
    pattern = _ss1._to_pixels(symbols * pn, width, height)
    floor = FLOOR if flat or is_smooth(std) else _ss1.FLOOR
    delta = pattern * np.clip(_ss1.STRENGTH * std / 8.0, floor, _ss1.CEILING)
    delta += _ss1._informed_correction(rgb, delta, bits, index, pn)
    if flat:
        # no pixel changed by more than its background's visibility threshold (rounding may
        # add half a level); from 512 px, white lowered and black lifted just enough for the
        # mark to go both ways there
        jnd = luminance_jnd(uniform_filter(luma, 5))
        delta = np.clip(delta, 0.5 - jnd, jnd - 0.5)
    # the offset at the limits from 512 px: below, the 256 px pictures kept their payload
    # without it, and its share of the PSNR floor cost them WebP (q75: 20/20 -> 18/20)
    offset = flat and max(height, width) >= SMALL_EDGE
    marked = _held(rgb, delta, jnd if flat else None, offset=offset)
    out = Image.fromarray(marked.astype(np.uint8), "RGB")
    if alpha is not None:
        out.putalpha(alpha)
    return out


def _channel_limits(rgb: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Each pixel's lowest and highest channel (elementwise: numpy's min over a last axis of
    three took 50 ms at 1024 px)."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    low = np.minimum(np.minimum(red, green), blue)
    return low, np.maximum(np.maximum(red, green), blue)


def _pedestal(
    rgb: FloatArray, delta: FloatArray, limits: tuple[FloatArray, FloatArray] | None = None
) -> FloatArray:
    """A smooth offset that lifts black and lowers white just enough for ``delta`` to go both
    ways there.

    On a flat picture's white or black background (the shipped model's "on a white
    background") 8-bit clipping keeps only the half of the chips that move away from the limit:
    half the signal, and a step in the mean. Lifting black by the amplitude (or lowering white)
    keeps all of it. The offset is the amplitude the limit cuts, and one level more (the
    decoder leaves out chips beside a pixel at 0 or 255), spread over 9 x 9 px (a dilation,
    then a box mean) so that it is as flat as the background it sits on; its size, about 2.6
    levels, is under the visibility threshold there (20 levels on black, 6 on white: Chou and
    Li). The shipped model's white picture at 1024 px (91 % of it at 255) lost its payload even
    unattacked; with the offset, three payloads read after 19 of 21 journeys (unattacked, JPEG
    q75 and q40, WebP q60, two rotations, a stretch), at PSNR 41 dB.

    ``limits``: :func:`_channel_limits` of ``rgb``, when the caller keeps them across tries.
    """
    low, high = _channel_limits(rgb) if limits is None else limits
    amplitude = np.abs(delta)
    # the decoder leaves out chips beside a pixel whose luma rounds to 0 or 255: 1 to 254
    up = np.maximum(amplitude + 1.0 - low, 0.0)
    down = np.maximum(high + amplitude - 254.0, 0.0)
    kernel = np.ones((9, 9), np.uint8)
    up = cv2.dilate(up.astype(np.float32), kernel)
    down = cv2.dilate(down.astype(np.float32), kernel)
    return np.asarray(cv2.blur(up - down, (9, 9), borderType=cv2.BORDER_REFLECT), np.float64)


def _scale_for(tries: list[tuple[float, float]], target: float) -> float:
    """The amplitude scale whose 1 - SSIM is ``target``, from the ``tries`` so far, each
    ``(scale, 1 - SSIM)``.

    1 - SSIM is affine in the scale's square: the mark's part grows with it, the 8-bit
    rounding's does not. Through the last two tries when they differ; from one try, through the
    origin, which leaves the mark weaker than it may be when the rounding's part is large.
    """
    s1, e1 = tries[-1]
    through_origin = s1 * float(np.sqrt(target / max(e1, 1e-12)))
    if len(tries) < 2 or abs(tries[-2][1] - e1) < 1e-9:
        return through_origin
    s0, e0 = tries[-2]
    square = s1 * s1 + (target - e1) * (s1 * s1 - s0 * s0) / (e1 - e0)
    return float(np.sqrt(square)) if square > 0 else through_origin / 2


def _held(
    rgb: FloatArray, delta: FloatArray, jnd: FloatArray | None, *, offset: bool = False
) -> npt.NDArray[np.int16]:
    """``rgb`` plus ``delta`` (on every channel), scaled down as far as the floors ask, in
    whole levels.

    Every picture: PSNR >= ``sdkit-ss1``'s 38.5 dB. A photo: SSIM >= 0.981 too, with no more
    than 25 % of SSIM's margin to spare (:data:`SSIM_SPARE`) when :data:`MAX_TRIES` tries find
    that: the amplitude is bracketed between the strongest try that passed and the weakest that
    failed. A flat picture: SSIM >= 0.981 or PSNR >= 40 dB, whichever needs less scaling. If no
    try has passed by then, the amplitude is halved until one does (at scale 0 a photo is
    unchanged; a flat picture leaves the loop at its PSNR floor), so the floors always hold. Amplitudes under half a level are dithered so that
    8-bit rounding keeps their pattern on average.

    ``jnd`` (a flat picture's visibility threshold per pixel, None for a photo): each try's
    amplitude is clipped to it, after :func:`_pedestal`'s offset if ``offset``.
    """
    flat = jnd is not None
    # rgb holds whole levels, so each try is rounded and scored in integers: marked - rgb is
    # exact, and so is the sum of its squares (under 2**53), which is what numpy's float mean
    # of the same values sums; the result is the float code's to the bit, on int16 arrays
    levels = rgb.astype(np.int16)
    limits = _channel_limits(rgb) if offset else None
    limit = 255.0**2 / 10 ** (_ss1.MIN_PSNR / 10)
    flat_limit = 255.0**2 / 10 ** (FLAT_PSNR / 10)
    target = 1.0 - _ss1.MIN_SSIM
    dither = np.random.default_rng(SEED).random(rgb.shape[:2])
    ssim: _ss1._SsimAgainst | None = None  # built at the first SSIM asked for
    scale = 1.0
    failed: list[tuple[float, float]] = []  # (scale, 1 - SSIM) of the tries SSIM refused
    # the strongest try SSIM let through
    passed: tuple[float, float, npt.NDArray[np.int16]] | None = None
    for attempt in range(2 * MAX_TRIES):
        if attempt >= MAX_TRIES and passed is not None:
            break
        scaled = delta * scale
        if jnd is not None:
            if offset:
                scaled = scaled + _pedestal(rgb, scaled, limits)
            scaled = np.clip(scaled, 0.5 - jnd, jnd - 0.5)
        # rgb holds whole levels, so floor(rgb + x) = rgb + floor(x): rounded once per pixel
        steps = np.floor(scaled + np.where(np.abs(scaled) < 0.5, dither, 0.5))
        steps = np.clip(steps, -255, 255).astype(np.int16)  # the clip below gives the same
        marked = np.clip(levels + steps[..., None], 0, 255)  # int16, as levels
        change = (marked - levels).ravel().astype(np.int64)
        mse = float(change @ change) / change.size
        if mse > limit:
            scale *= 0.98 * float(np.sqrt(limit / mse))
            continue
        if flat and mse <= flat_limit:
            return marked
        ssim = ssim or _ss1._SsimAgainst(rgb)
        loss = 1.0 - ssim(marked)
        if loss <= target:
            passed = (scale, loss, marked)
            if not failed or loss >= SSIM_SPARE * target:
                return marked
        else:
            failed.append((scale, loss))
        if passed is None:
            wanted = 0.99 * _scale_for(failed, 0.99 * target)
            if flat:  # or just down to the flat PSNR, if that is the smaller step, or if
                # SSIM does not fall with the amplitude (the offset at a channel's limit is most
                # of its loss: the shipped model's pink picture at 1024 px, red at 255, lost
                # 0.01 % of SSIM per 2 % step, and ran out of tries at half its amplitude)
                to_psnr = 0.99 * scale * float(np.sqrt(flat_limit / mse))
                wanted = max(wanted, to_psnr) if wanted < 0.98 * scale else to_psnr
            scale = min(wanted, 0.98 * scale) if attempt < MAX_TRIES else scale / 2
        else:  # between the strongest pass and the weakest refusal
            low, high = passed[0], failed[-1][0]
            wanted = _scale_for([failed[-1], passed[:2]], 0.99 * target)
            scale = min(max(wanted, low + 0.1 * (high - low)), high - 0.1 * (high - low))
    # with no pass after every halving (not seen: at 1/256 of the mark a photo is as it was)
    return marked if passed is None else passed[2]


@dataclass(frozen=True)
class Candidate:
    """One alignment the decoder tried: soft bits, pilot z, and what localisation needs."""

    soft: FloatArray
    z: float
    weighted: FloatArray  # the chip grid's weighted residual, in the searched frame
    weight: FloatArray  # the chip grid's weights (0 off the image)
    k: int  # dihedral move applied to the fold
    offset: tuple[int, int]
    chip: float
    phase: tuple[float, float]
    matrix: FloatArray  # 2 x 3 (affine) or 3 x 3 (projective): searched frame (x, y, 1) ->
    # image pixels
    spliced: FloatArray | None = None  # soft bits of the blocks whose pilot agrees, when
    # only some do (a splice)

    @property
    def eligible(self) -> bool:
        """Whether the pilot is clear enough to spend a decode on."""
        return self.z >= (SPLICE_Z if self.spliced is not None else SYNC_Z)

    def readings(self) -> list[FloatArray]:
        """The soft bits worth decoding, likeliest first: the whole grid's when its pilot is
        clear, and the agreeing blocks' when only some agree."""
        if self.spliced is None:
            return [self.soft]
        if self.z < SYNC_Z:
            return [self.spliced]
        return [self.soft, self.spliced]


def _fold(
    evidence: _ss1.Evidence, chip: float, px: float, py: float, limit: int | None = None
) -> tuple[FloatArray, FloatArray, FloatArray] | None:
    """The tile fold of the chip grid at ``chip`` px and phase (``px``, ``py``), with the
    grid's weighted residual and weights; ``limit``: at most that many chips a side, in
    the middle (whole tiles off each side, so the tile offset stays)."""
    height, width = evidence.luma.shape
    grid_h, grid_w = int((height - py) // chip), int((width - px) // chip)
    if min(grid_h, grid_w) < TILE // 2:
        return None
    if limit is not None:
        skip_y, skip_x = (max(0, side - limit) // 2 // TILE * TILE for side in (grid_h, grid_w))
        px, py = px + skip_x * chip, py + skip_y * chip
        grid_h, grid_w = min(grid_h, limit), min(grid_w, limit)
    box = (px, py, px + grid_w * chip, py + grid_h * chip)
    residual, weight = evidence.chips(grid_w, grid_h, box)
    weighted = residual * weight
    return _ss1.fold_tiles(weighted), weighted, weight


def _orient(folded: FloatArray, layout: _ss1._Layout) -> tuple[float, int, int, int]:
    """Best dihedral move and tile offset for a fold: (z, k, oy, ox)."""
    return _orient_many(folded[None], layout)[0]


def _orient_many(folds: FloatArray, layout: _ss1._Layout) -> list[tuple[float, int, int, int]]:
    """:func:`_orient` of each fold of a stack (n x TILE x TILE), in a few batched FFTs."""
    zs = _move_z(folds, layout)
    moves = [int(k) for k in np.argmax(zs, axis=1)]
    offsets = _place(folds, moves, layout)
    return [(float(zs[i, k]), k, *offsets[i]) for i, k in enumerate(moves)]


def _move_z(folds: FloatArray, layout: _ss1._Layout) -> FloatArray:
    """The pilot's z for each fold of a stack under each dihedral move (n x 8).

    A dihedral move permutes a fold's correlations with the pilot: correlating the fold with
    the pilot moved back (``sync.undihedral``) gives the same values, so all eight moves come
    from one forward transform of the fold (moving the fold eight times took five times as
    long). In single precision, six times faster than double here and within 1e-5 of it.
    """
    spectra = scipy.fft.rfft2(folds.astype(np.float32))
    moved_pilots = _pilot_spectra(layout.n_bits).astype(np.complex64)
    corr = scipy.fft.irfft2(spectra[:, None] * moved_pilots[None], s=(TILE, TILE))
    corr = corr.reshape(len(folds), sync.DIHEDRAL, -1).astype(np.float64)
    return np.asarray((corr.max(axis=2) - corr.mean(axis=2)) / (corr.std(axis=2) + 1e-12))


def _place(folds: FloatArray, moves: list[int], layout: _ss1._Layout) -> list[tuple[int, int]]:
    """The tile offset (oy, ox) of each fold under its dihedral move: the pilot's peak."""
    moved = np.stack([sync.dihedral(fold, k) for fold, k in zip(folds, moves, strict=True)])
    spectra = scipy.fft.rfft2(moved) * _pilot_spectra(layout.n_bits)[0]
    peaks = np.argmax(scipy.fft.irfft2(spectra, s=(TILE, TILE)).reshape(len(folds), -1), axis=1)
    return [divmod(int(peak), TILE) for peak in peaks]


@functools.cache
def _pilot_spectra(n_bits: int) -> npt.NDArray[np.complex128]:
    """Conjugate spectra of the pilot moved back by each dihedral move (8 x TILE x TILE/2+1)."""
    pilot = _layout(n_bits).pilot
    moved = np.stack([sync.undihedral(pilot, k) for k in range(sync.DIHEDRAL)])
    return np.asarray(np.conj(scipy.fft.rfft2(moved)))


def _candidate(
    luma: _ss1.Evidence,
    chip: float,
    px: float,
    py: float,
    layout: _ss1._Layout,
    matrix: FloatArray,
    *,
    windows: bool = False,
) -> Candidate | None:
    """The alignment at one chip size and phase; its splice reading is added by
    :func:`_spliced` (only for the candidates that will be read)."""
    found = _aligned(luma, chip, px, py, layout, windows=windows)
    if found is None:
        return None
    (tile, weighted, weight), (z, k, oy, ox) = found
    soft = _soft(tile, layout, k, (oy, ox))
    return Candidate(soft, z, weighted, weight, k, (oy, ox), chip, (px, py), matrix)


def _spliced(cand: Candidate, layout: _ss1._Layout, *, windows: bool) -> Candidate:
    """``cand`` with the soft bits of the blocks whose pilot agrees, when only some do.

    A splice is looked for where the pilot is clear, or (on the lattice path, read in
    windows) where it is clear enough: most folds of an unmarked image score 3.5 to 5. The
    candidate's z stays the whole fold's: the gated fold's own z is raised by the choice of
    blocks, even on noise.
    """
    if not (cand.z >= SYNC_Z or (windows and cand.z >= SPLICE_Z)):
        return cand
    gated = _gated(cand.weighted, layout, cand.k, cand.offset)
    if gated is None:
        return cand
    return dataclasses.replace(cand, spliced=_soft(gated, layout, cand.k, cand.offset))


def _aligned(
    luma: _ss1.Evidence,
    chip: float,
    px: float,
    py: float,
    layout: _ss1._Layout,
    *,
    windows: bool = False,
    limit: int | None = None,
) -> tuple[tuple[FloatArray, FloatArray, FloatArray], tuple[float, int, int, int]] | None:
    """The fold at one chip size and phase, and the pilot's answer: (z, k, oy, ox); with
    ``windows``, the better of it and :func:`_best_window`'s."""
    folded = _fold(luma, chip, px, py, limit)
    if folded is None:
        return None
    z, k, oy, ox = _orient(folded[0], layout)
    if windows:
        z, k, oy, ox = max((z, k, oy, ox), _best_window(folded[1], layout))
    return folded, (z, k, oy, ox)


def _coarse_z(
    luma: _ss1.Evidence,
    chip: float,
    layout: _ss1._Layout,
    *,
    windows: bool = False,
    both_axes: bool = False,
) -> float:
    """The pilot's z at chip size ``chip``, the best of a few sub-chip phases: a first look
    that ranks sizes and lattices before the 16-phase read (no soft bits).

    The phases are 0 and half a chip on the diagonal, or with ``both_axes`` also half a chip
    on one axis only: a rectified image's phase is anything on either axis, and half a chip
    off on one axis costs most of the z (a rotated 1024 px photo: 6.4 at its phase, 4.4 at
    the diagonal's best), while the native grid's sizes are many and crops rarely land there.
    At most :data:`COARSE_CHIPS` chips a side are read (a lattice of small tiles costs the
    square of its chip count).
    """
    half = chip / 2
    phases = [(0.0, 0.0), (half, half)] + ([(half, 0.0), (0.0, half)] if both_axes else [])
    found = (
        _aligned(luma, chip, px, py, layout, windows=windows, limit=COARSE_CHIPS)
        for px, py in phases
    )
    return max((f[1][0] for f in found if f is not None), default=-np.inf)


def _soft(tile: FloatArray, layout: _ss1._Layout, k: int, offset: tuple[int, int]) -> FloatArray:
    """Soft codeword bits of a fold, once aligned (dihedral move ``k``, then ``offset``)."""
    aligned = np.roll(sync.dihedral(tile, k), (-offset[0], -offset[1]), axis=(0, 1)) * layout.pn
    soft = np.zeros(layout.n_bits)
    data = layout.assign >= 0
    np.add.at(soft, layout.assign[data], aligned[data])
    return soft


def _best_window(weighted: FloatArray, layout: _ss1._Layout) -> tuple[float, int, int, int]:
    """The pilot's clearest answer in one window of half the grid's sides (whole tiles, at
    strides of a quarter of a window, at least a tile): a marked region pasted into a larger
    picture is diluted by the rest of the picture in the whole fold, much less in a window
    that covers it. Each window's fold is a sum of whole tiles, from a summed-area table.

    6 x 6 windows on a 10-tile grid, and no more (:data:`MAX_WINDOWS`) on a larger one: the
    flat pictures' fine lattices gave up to 9 x 9, which cost their unmarked reads 0.3-0.7 s
    at 1024 px. Strides of half a window (3 x 3) missed half of a pasted region: gravel
    pasted into a photo twice its sides at 12 places was read at 10 with these, at 4 with
    half-window strides in the first look only.
    """
    grid_h, grid_w = weighted.shape
    tiles_y, tiles_x = -(-grid_h // TILE), -(-grid_w // TILE)
    padded = np.pad(weighted, ((0, tiles_y * TILE - grid_h), (0, tiles_x * TILE - grid_w)))
    table = np.zeros((tiles_y + 1, tiles_x + 1, TILE, TILE))
    table[1:, 1:] = padded.reshape(tiles_y, TILE, tiles_x, TILE).transpose(0, 2, 1, 3)
    for i in range(1, tiles_y + 1):  # numpy's cumsum over a leading axis is ten times slower
        table[i] += table[i - 1]
    for i in range(1, tiles_x + 1):
        table[:, i] += table[:, i - 1]
    size_y, size_x = max(2, grid_h // TILE // 2), max(2, grid_w // TILE // 2)  # in tiles
    places_y, places_x = max(1, grid_h // TILE - size_y + 1), max(1, grid_w // TILE - size_x + 1)
    y0 = np.arange(0, places_y, max(1, size_y // 4, -(-places_y // MAX_WINDOWS)))
    x0 = np.arange(0, places_x, max(1, size_x // 4, -(-places_x // MAX_WINDOWS)))
    y1, x1 = np.minimum(y0 + size_y, tiles_y), np.minimum(x0 + size_x, tiles_x)
    folds = (table[y1][:, x1] - table[y0][:, x1] - table[y1][:, x0] + table[y0][:, x0]).reshape(
        -1, TILE, TILE
    )
    zs = _move_z(folds, layout)
    best, k = np.unravel_index(int(np.argmax(zs)), zs.shape)
    [offset] = _place(folds[best : best + 1], [int(k)], layout)
    return (float(zs[best, k]), int(k), *offset)


def _expected(
    pattern: FloatArray, k: int, offset: tuple[int, int], shape: tuple[int, ...]
) -> FloatArray:
    """A tile pattern as the candidate's grid carries it (inverse of the fold's alignment)."""
    tile = sync.undihedral(np.roll(pattern, offset, axis=(0, 1)), k)
    reps = (-(-shape[0] // TILE), -(-shape[1] // TILE))
    return np.asarray(np.tile(tile, reps)[: shape[0], : shape[1]])


def _gated(
    weighted: FloatArray, layout: _ss1._Layout, k: int, offset: tuple[int, int]
) -> FloatArray | None:
    """The fold over the rectangle of blocks where the pilot agrees best, when that is only
    part of the grid (a splice); None when it is most of the grid, or under 4 blocks.

    Blocks are half a tile wide. Of every rectangle of blocks, the one whose pilot evidence
    has the highest z-score is kept (:func:`~provenance.watermark.region.best_rectangle`): a
    pasted picture is one rectangle in its own frame. Kept before, blocks whose 3 x 3
    neighbourhood's pilot reached z 2.5 missed most of a weakly marked region (gravel pasted
    into a photo twice its sides: a quarter of its blocks, 42-47 bit errors; the rectangle:
    14-19, which decodes). Blocks off the image (a rotated picture's corners) count in
    neither the rectangle's share nor the picture's. The pilot's chips are
    not the payload's, so choosing blocks by the pilot does not bias the payload's bits on an
    unmarked image: each decode stays one attempt of the payload code.
    """
    grid_h, grid_w = weighted.shape
    evidence = weighted * _expected(layout.pilot, k, offset, weighted.shape)
    total = block_sums(evidence, GATE_BLOCK)
    energy = block_sums(evidence**2, GATE_BLOCK)
    keep_blocks = best_rectangle(total, energy)
    present = energy > 0  # blocks on the image: the 80 % is a share of the picture's blocks
    kept, blocks = int(np.count_nonzero(keep_blocks & present)), int(np.count_nonzero(present))
    if kept < 4 or kept >= 0.8 * blocks:
        return None
    keep = np.kron(keep_blocks, np.ones((GATE_BLOCK, GATE_BLOCK), dtype=bool))[:grid_h, :grid_w]
    return _ss1.fold_tiles(np.where(keep, weighted, 0.0))


_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _native(luma: _ss1.Evidence, layout: _ss1._Layout) -> list[Candidate]:
    """The image's own chip grid (crops and uniform rescales) for each of :data:`GRIDS`, in
    all 8 orientations."""
    height, width = luma.luma.shape
    sizes: set[float] = set()
    for i, grid in enumerate(GRIDS):
        chip = max(height, width) / grid
        sizes |= {chip, float(np.floor(chip)), float(np.ceil(chip))}
        # crops of up to 20 %: in 1 % steps for the common grid, 2 % for the others
        step = 1 if i == 0 else 2
        sizes |= {chip / (1.0 - 0.01 * k) for k in range(step, 21, step)}
    coarse: list[tuple[float, float]] = []
    for size in _distinct(sorted(s for s in sizes if s >= 1.0)):
        coarse.append((_coarse_z(luma, size, layout), size))
    coarse.sort(reverse=True)
    return _phases(luma, [size for _, size in coarse[:3]], layout, _IDENTITY, keep=3)


def _distinct(sizes: list[float], tolerance: float = 0.003) -> list[float]:
    """Sorted chip sizes without near-repeats (the grids' crop sizes overlap: 6.4 px / 0.8 is
    the 128-chip grid's 8 px at 1024)."""
    kept: list[float] = []
    for size in sizes:
        if not kept or size > kept[-1] * (1 + tolerance):
            kept.append(size)
    return kept


def _phases(
    luma: _ss1.Evidence,
    sizes: list[float],
    layout: _ss1._Layout,
    matrix: FloatArray,
    *,
    windows: bool = False,
    keep: int,
) -> list[Candidate]:
    """The ``keep`` eligible candidates of highest z among 16 sub-chip phases of each size."""
    found = []
    for size in sizes:
        for py in (size * i / 4 for i in range(4)):
            for px in (size * i / 4 for i in range(4)):
                cand = _candidate(luma, size, px, py, layout, matrix, windows=windows)
                if cand is not None and cand.z >= SPLICE_Z:
                    found.append(cand)
    found.sort(key=lambda c: -c.z)
    kept: list[Candidate] = []
    for cand in found:  # in order of z: the splice reading only for those that may be kept
        cand = _spliced(cand, layout, windows=windows)
        if cand.eligible:
            kept.append(cand)
            if len(kept) == keep:
                break
    return kept


def _hypotheses(luma: npt.NDArray[np.float32]) -> list[sync.Lattice]:
    """Lattices worth rectifying: the square ones (rotation and scale), each with its finer
    and coarser diagonal alternatives, then the general ones (non-uniform scale, shear); no
    repeats."""
    lags = sync.lag_map(luma)
    found: list[sync.Lattice] = []
    for lattice in sync.find_square_lattices(lags, keep=SQUARE_KEEP):
        finer = sync.finer(lattice)
        # the square search looks no finer than MIN_SQUARE_PERIOD: neither do its alternatives
        keep_finer = np.hypot(*finer.basis).min() >= sync.MIN_SQUARE_PERIOD
        found += [lattice, *([finer] if keep_finer else []), sync.coarser(lattice)]
    for lattice in sync.find_lattices(lags, keep=GENERAL_KEEP):
        found += [lattice, sync.doubled(lattice)]
    unique: list[sync.Lattice] = []
    for lattice in found:
        if not any(sync.same_basis(lattice.basis, other.basis) for other in unique):
            unique.append(lattice)
    return unique


def _rectified(luma: npt.NDArray[np.float32], layout: _ss1._Layout) -> Iterator[Candidate]:
    """Candidates read after undoing the affine map the tile lattice shows.

    Each hypothesis is first read at four sub-chip phases; the :data:`RECTIFY_KEEP` whose
    pilot answers best, at :data:`RECTIFY_Z` or more, are read at all 16 phases (most of an
    unmarked image's time went there).
    """
    ranked: list[tuple[float, int, _ss1.Evidence, float, FloatArray]] = []
    for i, lattice in enumerate(_hypotheses(luma)):
        period = float(np.mean(np.hypot(*lattice.basis)))
        growth = (period / TILE) ** 2 / abs(float(np.linalg.det(lattice.basis / TILE)))
        chip = period / TILE * max(1.0, np.sqrt(growth / MAX_GROWTH))
        rect = sync.rectify(luma, lattice, TILE, chip)
        evidence = _ss1.Evidence(rect.luma)
        z = _coarse_z(evidence, chip, layout, windows=True, both_axes=True)
        ranked.append((z, i, evidence, chip, rect.matrix))
    ranked.sort(key=lambda item: (-item[0], item[1]))
    clear = [item for item in ranked if item[0] >= RECTIFY_Z]
    for _, _, evidence, chip, matrix in clear[:RECTIFY_KEEP]:
        yield from _phases(evidence, [chip], layout, matrix, windows=True, keep=2)


def _keystoned(luma: npt.NDArray[np.float32], layout: _ss1._Layout) -> Iterator[Candidate]:
    """Candidates read after undoing a keystone (:func:`sync.find_keystone`), then the affine
    map the tile lattice shows, as in :func:`_rectified`: a screen photographed from below
    or from a side, whose scale changes across the picture."""
    found = sync.find_keystone(luma)
    if found is None:
        return
    height, width = luma.shape
    keystone = sync.keystone_matrix(width, height, *found)
    back = np.linalg.inv(keystone)
    for cand in _rectified(sync.warp_projective(luma, keystone), layout):
        matrix = back @ np.vstack([cand.matrix, [0.0, 0.0, 1.0]])
        yield dataclasses.replace(cand, matrix=matrix)


def candidates(
    image: Image.Image, n_bits: int, *, evidence: _ss1.Evidence | None = None
) -> Iterator[Candidate]:
    """Alignments worth decoding, likeliest first: the native grid, then the lattice's, then
    the lattice's after a keystone.

    ``evidence`` (the image's, from ``spread.Evidence.of``) lets a caller share the chip grids
    read here with ``spread.soft_candidates``.
    """
    layout = _layout(n_bits)
    luma = evidence if evidence is not None else _ss1.Evidence.of(image)
    yield from _native(luma, layout)
    yield from _rectified(luma.luma, layout)
    yield from _keystoned(luma.luma, layout)


def locate(cand: Candidate, codeword: npt.NDArray[np.uint8], size: tuple[int, int]) -> Region:
    """Score each block of the candidate's grid against the decoded pattern: the rectangle of
    blocks where that evidence is strongest gives the box, and the blocks in it that agree on
    their own, as a share of the blocks on the image, the share
    (:func:`~provenance.watermark.region.region_of`).

    Args:
        cand: the candidate that decoded.
        codeword: the decoded codeword bits.
        size: (width, height) of the searched image, to clip the box.
    """
    layout = _layout(len(codeword))
    symbols = np.where(
        layout.assign < 0, 1.0, 2.0 * codeword[np.maximum(layout.assign, 0)].astype(np.float64) - 1
    )
    expected = _expected(symbols * layout.pn, cand.k, cand.offset, cand.weighted.shape)
    product = cand.weighted * expected
    return region_of(product, cand.weighted, cand.weight, cand.phase, cand.chip, cand.matrix, size)
