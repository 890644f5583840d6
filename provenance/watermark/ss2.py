"""sdkit's second watermark method, ``sdkit-ss2``: ``sdkit-ss1``'s tiles, found again after
mirrors, rotations, stretches and splices, and told where they are.

The mark is built as in :mod:`provenance.watermark.spread` (a chip grid of 160 chips along the
long edge, tiles of 32 x 32 chips, 5 chips per codeword bit, a pilot on the other 224) with its
own seed, so the two methods never read each other's tiles, and with a different strength rule.
What is new is in the decoder:

* **Dihedral hypotheses.** The folded tile is read in each of the 8 dihedral orientations
  (identity, quarter turns, mirrors); the pilot correlation picks the one, and the offset.
* **The tile lattice** (:mod:`provenance.watermark.sync`): when the image's own chip grid gives
  nothing, the autocorrelation of the whitened residual shows the tiling's lattice; the image is
  resampled so that the lattice is square again (undoing rotation by any angle, non-uniform
  scale, shear and, locally, mild perspective) and read as above.
* **Localisation.** Once a payload decodes, every block of 16 x 16 chips is scored against the
  decoded pattern; blocks with a z-score of 3 or more agree. :class:`Region` gives the bounding
  box of the agreeing blocks in the searched image's pixels and the share of blocks that agree,
  so a marked picture pasted into another is found and named.
* **Strength on flat pictures.** ``sdkit-ss1`` scaled the whole mark until SSIM >= 0.981, which
  held flat colour (where SSIM's stabilising constant is all there is) under one level, and the
  shipped model's 256 px pictures lost the mark to JPEG q70. Here a flat picture's flat areas
  get a floor of :data:`FLOOR` levels (photos keep ``sdkit-ss1``'s), and on a flat picture (a local standard
  deviation under 2 levels on 85 % of its pixels) a mark that keeps PSNR >= 40 dB is accepted whatever SSIM says (a
  noise of 2.5 levels rms on flat colour is below what anyone sees); photos keep PSNR >= 38.5 dB
  and SSIM >= 0.981 as in ``sdkit-ss1``.

False accepts: every hypothesis the decoder tries is one more chance for noise to decode. The
decoder makes at most :data:`MAX_DECODES` calls of ``decode_payload`` per image, each at most
``false_accept_probability(5)`` = 9.8e-13, so the union bound per image is
``MAX_DECODES * 9.8e-13`` (:func:`false_accept_bound`), kept below 1e-9 by an assertion at import.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy.ndimage import uniform_filter

from . import payload as _payload
from . import spread as _ss1
from . import sync

__all__ = [
    "MAX_DECODES",
    "METHOD",
    "Candidate",
    "Region",
    "candidates",
    "embed_bits",
    "false_accept_bound",
    "locate",
]

METHOD = "sdkit-ss2"
SEED = 0x5D_C1_55_02  # fixes permutation, PN and pilot: part of the method's definition
TILE = _ss1.TILE
CHIPS_PER_BIT = _ss1.CHIPS_PER_BIT
FLOOR = 1.6  # minimum amplitude (levels), before the global scaling
FLAT_PSNR = 40.0  # on a flat picture, at or above this PSNR the SSIM floor no longer applies
FLAT_STD = 2.0  # luma standard deviation (7 x 7) under which a pixel is flat
FLAT_SHARE = 0.85  # a picture is flat when at least this share of its pixels is (photos:
# 0.0 to 0.76 at 512 px; rocket, half sky, is 0.76 and must keep SSIM >= 0.98)
SYNC_Z = 5.0
MAX_DECODES = 40  # decode_payload calls per image, at most (the false-accept budget)
CHASE_BITS = _payload.MAX_CHASE_BITS
BLOCK = 16  # chips per localisation block side
BLOCK_Z = 3.0  # a block agrees with the payload at this z-score
GATE_Z = 1.5  # a tile-sized block whose pilot scores this z or more joins a splice's fold
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
    grid_h, grid_w, _ = _ss1._grid_shape(height, width)
    ty, tx = np.mgrid[0:grid_h, 0:grid_w]
    ty, tx = ty % TILE, tx % TILE
    index = layout.assign[ty, tx]
    pn = layout.pn[ty, tx]
    symbols = np.where(index < 0, 1.0, 2.0 * bits[np.maximum(index, 0)].astype(np.float64) - 1.0)
    pattern = _ss1._to_pixels(symbols * pn, width, height)
    luma = _ss1._luma(rgb)
    mean = uniform_filter(luma, 7)
    std = np.sqrt(np.maximum(uniform_filter(luma * luma, 7) - mean * mean, 0.0))
    # a mostly flat picture (as the shipped model draws) is held by PSNR alone and gets a
    # higher floor; a photo keeps sdkit-ss1's floor and is held by SSIM too
    flat = float(np.mean(std < FLAT_STD)) >= FLAT_SHARE
    floor = FLOOR if flat else _ss1.FLOOR
    delta = pattern * np.clip(_ss1.STRENGTH * std / 8.0, floor, _ss1.CEILING)
    delta += _ss1._informed_correction(rgb, delta, bits, index, pn)
    limit = 255.0**2 / 10 ** (_ss1.MIN_PSNR / 10)
    flat_limit = 255.0**2 / 10 ** (FLAT_PSNR / 10)
    dither = np.random.default_rng(SEED).random(rgb.shape[:2])
    marked = rgb
    for _ in range(8):
        offset = np.where(np.abs(delta) < 0.5, dither, 0.5)[..., None]
        marked = np.clip(np.floor(rgb + delta[..., None] + offset), 0, 255)
        mse = float(np.mean((marked - rgb) ** 2))
        if mse > limit:
            delta *= 0.98 * np.sqrt(limit / mse)
            continue
        if flat and mse <= flat_limit:
            break
        similarity = _ss1._ssim(rgb, marked)
        if similarity >= _ss1.MIN_SSIM:
            break
        # scale towards whichever floor is nearer: SSIM's, or the flat PSNR
        towards_ssim = np.sqrt((1 - _ss1.MIN_SSIM) / max(1 - similarity, 1e-9))
        delta *= 0.98 * min(1.0, max(towards_ssim, np.sqrt(flat_limit / mse)))
    out = Image.fromarray(marked.astype(np.uint8), "RGB")
    if alpha is not None:
        out.putalpha(alpha)
    return out


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
    matrix: FloatArray  # 2 x 3: searched frame (x, y, 1) -> image pixels


@dataclass(frozen=True)
class Region:
    """Where a payload was found.

    Attributes:
        box: (left, top, right, bottom) in the image's pixels: the agreeing blocks' bounds.
        share: agreeing blocks / blocks on the image (1.0 when the whole image carries it).
    """

    box: tuple[int, int, int, int]
    share: float

    def to_dict(self) -> dict[str, object]:
        return {"box": list(self.box), "share": self.share}


def _fold(
    evidence: _ss1.Evidence, chip: float, px: float, py: float
) -> tuple[FloatArray, FloatArray, FloatArray] | None:
    height, width = evidence.luma.shape
    grid_h, grid_w = int((height - py) // chip), int((width - px) // chip)
    if min(grid_h, grid_w) < TILE // 2:
        return None
    box = (px, py, px + grid_w * chip, py + grid_h * chip)
    residual, weight = evidence.chips(grid_w, grid_h, box)
    weighted = residual * weight
    return _ss1.fold_tiles(weighted), weighted, weight


def _orient(folded: FloatArray, layout: _ss1._Layout) -> tuple[float, int, int, int]:
    """Best dihedral move and tile offset for a fold: (z, k, oy, ox)."""
    pilot = np.conj(np.fft.fft2(layout.pilot))
    moved = np.stack([sync.dihedral(folded, k) for k in range(sync.DIHEDRAL)])
    corr = np.real(np.fft.ifft2(np.fft.fft2(moved) * pilot)).reshape(sync.DIHEDRAL, -1)
    peak = np.argmax(corr, axis=1)
    top = corr[np.arange(sync.DIHEDRAL), peak]
    zs = (top - corr.mean(axis=1)) / (corr.std(axis=1) + 1e-12)
    k = int(np.argmax(zs))
    oy, ox = divmod(int(peak[k]), TILE)
    return float(zs[k]), k, oy, ox


def _candidate(
    luma: _ss1.Evidence,
    chip: float,
    px: float,
    py: float,
    layout: _ss1._Layout,
    matrix: FloatArray,
) -> Candidate | None:
    folded = _fold(luma, chip, px, py)
    if folded is None:
        return None
    tile, weighted, weight = folded
    z, k, oy, ox = _orient(tile, layout)
    if z >= SYNC_Z:
        tile = _gated(tile, weighted, layout, k, (oy, ox))
    aligned = np.roll(sync.dihedral(tile, k), (-oy, -ox), axis=(0, 1)) * layout.pn
    soft = np.zeros(layout.n_bits)
    data = layout.assign >= 0
    np.add.at(soft, layout.assign[data], aligned[data])
    return Candidate(soft, z, weighted, weight, k, (oy, ox), chip, (px, py), matrix)


def _expected(
    pattern: FloatArray, k: int, offset: tuple[int, int], shape: tuple[int, ...]
) -> FloatArray:
    """A tile pattern as the candidate's grid carries it (inverse of the fold's alignment)."""
    tile = sync.undihedral(np.roll(pattern, offset, axis=(0, 1)), k)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.asarray(tile[yy % TILE, xx % TILE])


def _gated(
    tile: FloatArray, weighted: FloatArray, layout: _ss1._Layout, k: int, offset: tuple[int, int]
) -> FloatArray:
    """The fold over the tile-sized blocks whose pilot agrees, when only some do (a splice).

    The pilot's chips are not the payload's, so choosing blocks by the pilot does not bias the
    payload's bits on an unmarked image: each decode stays one attempt of the payload code.
    """
    grid_h, grid_w = weighted.shape
    pilot = _expected(layout.pilot, k, offset, weighted.shape)
    keep = np.zeros_like(weighted, dtype=bool)
    blocks = kept = 0
    for by in range(0, grid_h - TILE // 2, TILE):
        for bx in range(0, grid_w - TILE // 2, TILE):
            block = (slice(by, by + TILE), slice(bx, bx + TILE))
            evidence = weighted[block] * pilot[block]
            energy = float(np.sum(evidence**2))
            if energy <= 0:
                continue
            blocks += 1
            if float(np.sum(evidence)) >= GATE_Z * np.sqrt(energy):
                kept += 1
                keep[block] = True
    if kept < 2 or kept >= 0.8 * blocks:
        return tile
    return _ss1.fold_tiles(np.where(keep, weighted, 0.0))


_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _native(luma: _ss1.Evidence, layout: _ss1._Layout) -> list[Candidate]:
    """The image's own chip grid (crops and uniform rescales), in all 8 orientations."""
    height, width = luma.luma.shape
    _, _, chip = _ss1._grid_shape(height, width)
    sizes = {chip, float(np.floor(chip)), float(np.ceil(chip))}
    sizes |= {chip / (1.0 - 0.01 * k) for k in range(1, 21)}
    coarse: list[tuple[float, float]] = []
    for size in sorted(s for s in sizes if s >= 1.0):
        zs = [
            c.z for p in (0.0, size / 2) if (c := _candidate(luma, size, p, p, layout, _IDENTITY))
        ]
        coarse.append((max(zs, default=-np.inf), size))
    coarse.sort(reverse=True)
    return _phases(luma, [size for _, size in coarse[:3]], layout, _IDENTITY)


def _phases(
    luma: _ss1.Evidence, sizes: list[float], layout: _ss1._Layout, matrix: FloatArray
) -> list[Candidate]:
    found = []
    for size in sizes:
        for py in (size * i / 4 for i in range(4)):
            for px in (size * i / 4 for i in range(4)):
                cand = _candidate(luma, size, px, py, layout, matrix)
                if cand is not None and cand.z >= SYNC_Z:
                    found.append(cand)
    found.sort(key=lambda c: -c.z)
    return found


def _rectified(luma: npt.NDArray[np.float32], layout: _ss1._Layout) -> Iterator[Candidate]:
    """Candidates read after undoing the affine map the tile lattice shows."""
    for lattice in sync.find_lattices(luma):
        period = float(np.mean(np.hypot(*lattice.basis)))
        growth = (period / TILE) ** 2 / abs(float(np.linalg.det(lattice.basis / TILE)))
        chip = period / TILE * max(1.0, np.sqrt(growth / MAX_GROWTH))
        rect = sync.rectify(luma, lattice, TILE, chip)
        yield from _phases(_ss1.Evidence(rect.luma), [chip], layout, rect.matrix)[:2]


def candidates(
    image: Image.Image, n_bits: int, *, evidence: _ss1.Evidence | None = None
) -> Iterator[Candidate]:
    """Alignments worth decoding, likeliest first: the native grid, then the lattice's.

    ``evidence`` (the image's, from ``spread.Evidence.of``) lets a caller share the chip grids
    read here with ``spread.soft_candidates``.
    """
    layout = _layout(n_bits)
    luma = evidence if evidence is not None else _ss1.Evidence.of(image)
    yield from _native(luma, layout)[:3]
    yield from _rectified(luma.luma, layout)


def locate(cand: Candidate, codeword: npt.NDArray[np.uint8], size: tuple[int, int]) -> Region:
    """Score each block of the candidate's grid against the decoded pattern.

    Args:
        cand: the candidate that decoded.
        codeword: the decoded codeword bits.
        size: (width, height) of the searched image, to clip the box.
    """
    layout = _layout(len(codeword))
    symbols = np.where(
        layout.assign < 0, 1.0, 2.0 * codeword[np.maximum(layout.assign, 0)].astype(np.float64) - 1
    )
    expected = sync.undihedral(np.roll(symbols * layout.pn, cand.offset, axis=(0, 1)), cand.k)
    grid_h, grid_w = cand.weighted.shape
    yy, xx = np.mgrid[0:grid_h, 0:grid_w]
    product = cand.weighted * expected[yy % TILE, xx % TILE]
    agree: list[tuple[int, int]] = []
    counted = 0
    for by in range(0, grid_h - BLOCK // 2, BLOCK):
        for bx in range(0, grid_w - BLOCK // 2, BLOCK):
            block = (slice(by, by + BLOCK), slice(bx, bx + BLOCK))
            if np.count_nonzero(cand.weight[block]) < BLOCK * BLOCK // 2:
                continue
            counted += 1
            energy = float(np.sum(cand.weighted[block] ** 2))
            if float(np.sum(product[block])) >= BLOCK_Z * np.sqrt(energy + 1e-12):
                agree.append((by, bx))
    if not agree:
        return Region((0, 0, 0, 0), 0.0)
    points = []
    for by, bx in agree:
        for cy in (by, min(by + BLOCK, grid_h)):
            for cx in (bx, min(bx + BLOCK, grid_w)):
                points.append((cand.phase[0] + cx * cand.chip, cand.phase[1] + cy * cand.chip, 1.0))
    mapped = cand.matrix @ np.array(points).T
    width, height = size
    left, top = (float(v) for v in np.clip(mapped.min(axis=1), 0, [width, height]))
    right, bottom = (float(v) for v in np.clip(mapped.max(axis=1), 0, [width, height]))
    return Region(
        (round(left), round(top), round(right), round(bottom)),
        len(agree) / max(counted, 1),
    )
