"""How coarse and how strong ``sdkit-ss2``'s mark is: the chip grid for a picture, which
pictures are flat, and the smallest change anyone can see on a flat background.

These rules decide the embedding only; the decoder tries every grid of :data:`GRIDS`, so a
copy is read whichever grid it carries.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "GRIDS",
    "MIN_CHIP",
    "grid_shape",
    "is_flat",
    "is_smooth",
    "luminance_jnd",
]

FloatArray = npt.NDArray[np.float64]

# chips along the long edge: the first whose chips are at least MIN_CHIP px, else the last
GRIDS = (160, 128, 64)
MIN_CHIP = 4.0
TEXTURE_STD = 8.0  # a picture with fewer than TEXTURE_SHARE of its pixels under this 7 x 7
TEXTURE_SHARE = 0.1  # luma standard deviation is all texture (grass, gravel: 0.00 to 0.03)
FLAT_STD = 2.0  # luma standard deviation (7 x 7) under which a pixel is flat
FLAT_SHARE = 0.85  # a picture is flat when at least this share of its pixels is (photos:
# 0.0 to 0.76 at 512 px; rocket, half sky, is 0.76 and must keep SSIM >= 0.98)
SMALL_EDGE = 512  # below this long edge, smooth pictures count as flat too
LIMIT_LEVELS = 16.0  # a 7 x 7 luma mean this near black (or white) is at the 8-bit limit
LIMIT_SHARE = 0.5  # a smooth picture with this share at the limits counts as flat too (the
# shipped model's black and white pictures: 0.95 to 0.97; smooth photos: 0.00 to 0.23)
SMOOTH_STD = 6.0  # a picture is smooth when at least SMOOTH_SHARE of its pixels have a 7 x 7
SMOOTH_SHARE = 0.75  # luma standard deviation under SMOOTH_STD (the shipped model's pictures:
# 0.86 to 0.97 at 256 px, 0.95 and 0.98 at 512 and 1024; photos: rocket, retina, moon, flower)


def grid_shape(
    height: int, width: int, *, textured: bool = False, flat: bool = False
) -> tuple[int, int, float]:
    """(grid_h, grid_w, chip) of the chip grid ss2 embeds in a ``width`` x ``height`` image.

    The first of :data:`GRIDS` whose chips are at least :data:`MIN_CHIP` px; the coarsest,
    ``GRIDS[-1]``, only for a ``flat`` picture (a small photo needs the chips per bit more than
    their size: with 64 chips, astronaut at 320 px lost its payload to JPEG q95), and the
    finest, ``GRIDS[0]``, for a ``textured`` one, where a coarser chip meets more of the host.
    """
    long_edge = max(height, width)
    allowed = GRIDS if flat else GRIDS[:-1]
    grid = (
        GRIDS[0]
        if textured
        else next((g for g in allowed if long_edge / g >= MIN_CHIP), allowed[-1])
    )
    chip = long_edge / grid
    return max(1, round(height / chip)), max(1, round(width / chip)), chip


def luminance_jnd(background: FloatArray) -> FloatArray:
    """The smallest luma change visible on a flat ``background`` (0..255), in levels.

    Chou and Li's luminance-adaptation threshold (IEEE TCSVT 5(6), 1995, eq. 2, from their
    viewing experiments): ``17 * (1 - sqrt(bg / 127)) + 3`` below mid-grey, ``3 / 128 *
    (bg - 127) + 3`` above; 3 levels at mid-grey, up to 20 on black and 6 on white.
    """
    bg = np.clip(background, 0.0, 255.0)
    dark = 17.0 * (1.0 - np.sqrt(bg / 127.0)) + 3.0
    bright = 3.0 / 128.0 * (bg - 127.0) + 3.0
    return np.asarray(np.where(bg <= 127.0, dark, bright), dtype=np.float64)


def is_flat(std: FloatArray, mean: FloatArray | None = None) -> bool:
    """Whether a picture is held by PSNR and the visibility threshold rather than by SSIM.

    ``std`` and ``mean`` are the luma's 7 x 7 standard deviation and mean per pixel. Flat: under
    :data:`FLAT_STD` on :data:`FLAT_SHARE` of the pixels; or smooth (:func:`is_smooth`) and
    either below :data:`SMALL_EDGE` px (the shipped model's 256 px pictures: 0.86 to 0.97) or
    with :data:`LIMIT_SHARE` of its pixels within :data:`LIMIT_LEVELS` of black or white. There
    8-bit clipping takes half the mark, and SSIM reads any change on black as large (its
    luminance term divides by the squared mean), while no one sees a level or two: the shipped
    model's blue shapes on black at 512 px, held by SSIM, lost their payload to JPEG q75.
    """
    if float(np.mean(std < FLAT_STD)) >= FLAT_SHARE:
        return True
    if not is_smooth(std):
        return False
    if max(std.shape) < SMALL_EDGE:
        return True
    if mean is None:
        return False
    at_limits = (mean <= LIMIT_LEVELS) | (mean >= 255.0 - LIMIT_LEVELS)
    return float(np.mean(at_limits)) >= LIMIT_SHARE


def is_smooth(std: FloatArray) -> bool:
    """Whether most of a picture is smooth: under :data:`SMOOTH_STD` on :data:`SMOOTH_SHARE` of
    its pixels (``std``: the luma's 7 x 7 standard deviation per pixel).

    A smooth picture's mark gets ``sdkit-ss2``'s higher floor, still held by the SSIM and PSNR
    floors of a photo: the strength rule (amplitude in proportion to the local deviation) gives
    its smooth areas only ``sdkit-ss1``'s floor, 0.7 levels, which JPEG q40 removes.
    """
    return float(np.mean(std < SMOOTH_STD)) >= SMOOTH_SHARE
