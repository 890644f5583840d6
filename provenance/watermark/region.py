"""Where in a picture a payload was found: the blocks of the chip grid that agree with it.

Once a payload decodes, every block of :data:`BLOCK` x :data:`BLOCK` chips is scored against
the decoded pattern; blocks with a z-score of :data:`BLOCK_Z` or more agree. :class:`Region`
gives the bounding box of the largest piece of agreeing blocks, in the searched image's pixels,
and its share of the blocks, so a marked picture pasted into another is found and named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.ndimage import binary_dilation, label

__all__ = ["BLOCK", "BLOCK_Z", "Region", "region_of"]

FloatArray = npt.NDArray[np.float64]

BLOCK = 16  # chips per localisation block side
BLOCK_Z = 3.0  # a block agrees with the payload at this z-score


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


def region_of(
    product: FloatArray,
    weighted: FloatArray,
    weight: FloatArray,
    phase: tuple[float, float],
    chip: float,
    matrix: FloatArray,
    size: tuple[int, int],
) -> Region:
    """The region of the blocks that agree, from a chip grid's evidence.

    Args:
        product: each chip's weighted residual times the decoded pattern's sign there.
        weighted: each chip's weighted residual.
        weight: each chip's weight (0 off the image).
        phase: (x, y) of the grid's first chip in the searched frame.
        chip: chip size in the searched frame.
        matrix: 2 x 3 map from the searched frame (x, y, 1) to image pixels.
        size: (width, height) of the searched image, to clip the box.
    """
    grid_h, grid_w = weighted.shape
    agree: list[tuple[int, int]] = []
    counted = 0
    for by in range(0, grid_h - BLOCK // 2, BLOCK):
        for bx in range(0, grid_w - BLOCK // 2, BLOCK):
            block = (slice(by, by + BLOCK), slice(bx, bx + BLOCK))
            if np.count_nonzero(weight[block]) < BLOCK * BLOCK // 2:
                continue
            counted += 1
            energy = float(np.sum(weighted[block] ** 2))
            if float(np.sum(product[block])) >= BLOCK_Z * np.sqrt(energy + 1e-12):
                agree.append((by, bx))
    if not agree:
        return Region((0, 0, 0, 0), 0.0)
    agree = _largest_piece(agree)
    points = []
    for by, bx in agree:
        for cy in (by, min(by + BLOCK, grid_h)):
            for cx in (bx, min(bx + BLOCK, grid_w)):
                points.append((phase[0] + cx * chip, phase[1] + cy * chip, 1.0))
    mapped = matrix @ np.array(points).T
    width, height = size
    left, top = (float(v) for v in np.clip(mapped.min(axis=1), 0, [width, height]))
    right, bottom = (float(v) for v in np.clip(mapped.max(axis=1), 0, [width, height]))
    return Region(
        (round(left), round(top), round(right), round(bottom)),
        len(agree) / max(counted, 1),
    )


def _largest_piece(blocks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The agreeing blocks that touch one another (8 neighbours, across one gap) in the
    largest group: a marked region is one piece, and a stray block of the host that happens
    to agree must not stretch its box."""
    rows = max(by for by, _ in blocks) // BLOCK + 1
    cols = max(bx for _, bx in blocks) // BLOCK + 1
    grid = np.zeros((rows, cols), dtype=bool)
    for by, bx in blocks:
        grid[by // BLOCK, bx // BLOCK] = True
    # blocks one gap apart (a dark or clipped patch inside the region) still count as touching
    labels, count = label(binary_dilation(grid, np.ones((3, 3))), structure=np.ones((3, 3)))
    if count <= 1:
        return blocks
    sizes = np.bincount(labels[grid], minlength=count + 1)[1:]  # agreeing blocks per piece
    biggest = int(np.argmax(sizes)) + 1
    return [(by, bx) for by, bx in blocks if labels[by // BLOCK, bx // BLOCK] == biggest]
