"""Where in a picture a payload was found: the blocks of the chip grid that agree with it.

Once a payload decodes, every block of :data:`BLOCK` x :data:`BLOCK` chips is scored against
the decoded pattern. :class:`Region` gives the box of the rectangle of blocks where the
evidence is strongest, in the searched image's pixels, and the share of the image's blocks
that agree on their own (z-score :data:`BLOCK_Z` or more), so a marked picture pasted into
another is found and named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["BLOCK", "BLOCK_Z", "Region", "best_rectangle", "block_sums", "region_of"]

FloatArray = npt.NDArray[np.float64]

BLOCK = 16  # chips per localisation block side
BLOCK_Z = 3.0  # a block agrees with the payload at this z-score


@dataclass(frozen=True)
class Region:
    """Where a payload was found.

    Attributes:
        box: (left, top, right, bottom) in the image's pixels: the bounds of the rectangle of
            blocks where the evidence for the payload is strongest.
        share: blocks in that rectangle that agree on their own / blocks on the image (1.0
            when the whole image carries a clear mark).
    """

    box: tuple[int, int, int, int]
    share: float

    def to_dict(self) -> dict[str, object]:
        return {"box": list(self.box), "share": self.share}


def region_of(
    product: FloatArray,
    weighted: FloatArray,
    weight: FloatArray,
    phase: tuple[float, float],
    chip: float,
    matrix: FloatArray,
    size: tuple[int, int],
) -> Region:
    """The region where a payload was found, from a chip grid's evidence.

    The box is the rectangle of blocks whose evidence for the decoded pattern has the highest
    z-score (:func:`best_rectangle`); the share counts the blocks in it that agree on their own
    (z-score :data:`BLOCK_Z` or more). A box drawn around the agreeing blocks alone was too
    small on a weak mark, where most blocks of the marked region fall under the threshold
    (gravel pasted into a photo: boxes of IoU 0.36-0.42 with the truth).

    Args:
        product: each chip's weighted residual times the decoded pattern's sign there.
        weighted: each chip's weighted residual.
        weight: each chip's weight (0 off the image).
        phase: (x, y) of the grid's first chip in the searched frame.
        chip: chip size in the searched frame.
        matrix: 2 x 3 (affine) or 3 x 3 (projective) map from the searched frame (x, y, 1)
            to image pixels.
        size: (width, height) of the searched image, to clip the box.
    """
    grid_h, grid_w = weighted.shape
    # a block counts when half its chips are on the image (and, at the grid's edges, exist)
    on = block_sums((weight != 0).astype(np.float64), BLOCK) >= BLOCK * BLOCK // 2
    total = np.where(on, block_sums(product, BLOCK), 0.0)
    energy = np.where(on, block_sums(weighted**2, BLOCK), 0.0)
    if not on.any():
        return Region((0, 0, 0, 0), 0.0)
    agree = on & (total >= BLOCK_Z * np.sqrt(energy + 1e-12))
    keep = best_rectangle(total, energy)
    rows_kept, cols_kept = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    top, bottom = rows_kept[0] * BLOCK, min((rows_kept[-1] + 1) * BLOCK, grid_h)
    left, right = cols_kept[0] * BLOCK, min((cols_kept[-1] + 1) * BLOCK, grid_w)
    corners = [
        (phase[0] + cx * chip, phase[1] + cy * chip, 1.0)
        for cy in (top, bottom)
        for cx in (left, right)
    ]
    mapped = matrix @ np.array(corners).T
    if len(mapped) == 3:  # projective: back from homogeneous coordinates
        mapped = mapped[:2] / mapped[2]
    width, height = size
    x0, y0 = (float(v) for v in np.clip(mapped.min(axis=1), 0, [width, height]))
    x1, y1 = (float(v) for v in np.clip(mapped.max(axis=1), 0, [width, height]))
    return Region(
        (round(x0), round(y0), round(x1), round(y1)), int((agree & keep).sum()) / int(on.sum())
    )


def block_sums(values: FloatArray, size: int) -> FloatArray:
    """The sum of each ``size`` x ``size`` block of ``values`` (the last row and column of
    blocks padded with zeros)."""
    height, width = values.shape
    rows, cols = -(-height // size), -(-width // size)
    padded = np.zeros((rows * size, cols * size))
    padded[:height, :width] = values
    return np.asarray(padded.reshape(rows, size, cols, size).sum(axis=(1, 3)))


def best_rectangle(total: FloatArray, energy: FloatArray) -> npt.NDArray[np.bool_]:
    """The rectangle of blocks whose evidence has the highest z-score: its summed ``total``
    over the square root of its summed ``energy``; every rectangle is scored, from summed-area
    tables (a 20 x 20 grid of blocks has 44,100 of them).

    Rows and columns with no energy (off the image) add nothing to the score, so rectangles
    that differ by them tie: the one returned is trimmed to its blocks that have evidence (the
    first of the tied, without the trim, took in the empty blocks above and left of it).
    """
    rows, cols = total.shape
    tables = []
    for values in (total, energy):
        table = np.zeros((rows + 1, cols + 1))
        table[1:, 1:] = values.cumsum(axis=0).cumsum(axis=1)
        tables.append(table)
    r0, r1 = np.triu_indices(rows + 1, 1)
    c0, c1 = np.triu_indices(cols + 1, 1)
    bands = [t[r1] - t[r0] for t in tables]  # every pair of rows, then every pair of columns
    sums, energies = (band[:, c1] - band[:, c0] for band in bands)
    z = np.where(energies > 0, sums / np.sqrt(np.maximum(energies, 1e-300)), -np.inf)
    i, j = np.unravel_index(int(np.argmax(z)), z.shape)
    top, bottom, left, right = int(r0[i]), int(r1[i]), int(c0[j]), int(c1[j])
    present = energy[top:bottom, left:right] > 0
    if present.any():
        rows_in, cols_in = np.flatnonzero(present.any(axis=1)), np.flatnonzero(present.any(axis=0))
        top, bottom = top + int(rows_in[0]), top + int(rows_in[-1]) + 1
        left, right = left + int(cols_in[0]), left + int(cols_in[-1]) + 1
    keep = np.zeros((rows, cols), dtype=bool)
    keep[top:bottom, left:right] = True
    return keep
