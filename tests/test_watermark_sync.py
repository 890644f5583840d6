"""The tile lattice of sdkit-ss2 (provenance.watermark.sync): found after rotation and JPEG by
pooling the autocorrelation along rays, its diagonal alternative, and lattice identity."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import uniform_filter

from provenance.watermark import Payload, embed, extract, payload, region, spread, ss2, sync

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import watermark_data


def _tiled(period: int = 96, size: int = 640, seed: int = 0) -> Image.Image:
    """Grey noise of sigma 15 carrying a +/-4 level tiled pattern of 4 px chips, square tiles."""
    rng = np.random.default_rng(seed)
    tile = np.kron(rng.choice([-4.0, 4.0], (period // 4, period // 4)), np.ones((4, 4)))
    reps = size // period + 1
    mark = np.tile(tile, (reps, reps))[:size, :size]
    host = 128 + rng.normal(0, 15, (size, size))
    return Image.fromarray(np.clip(np.rint(host + mark), 0, 255).astype(np.uint8))


def _luma(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float32)


def _angle_and_period(basis: np.ndarray) -> tuple[float, float]:
    # the lattice's angle modulo a quarter turn, and its mean period
    angles = [math.degrees(math.atan2(v[1], v[0])) % 90 for v in basis.T]
    return angles[0], float(np.mean(np.hypot(*basis)))


@pytest.mark.parametrize("angle", [5.0, -11.0])
def test_square_lattice_after_rotation_and_jpeg(angle: float) -> None:
    turned = _tiled().rotate(angle, resample=Image.Resampling.BICUBIC).crop((80, 80, 560, 560))
    buffer = io.BytesIO()
    turned.save(buffer, "JPEG", quality=75)
    found = sync.find_square_lattices(_luma(Image.open(buffer)), keep=2)
    assert found
    got_angle, period = _angle_and_period(found[0].basis)
    # PIL turns anticlockwise on screen: lattice vectors at -angle in (x, y-down) pixels
    assert min(abs(got_angle - (-angle % 90)), 90 - abs(got_angle - (-angle % 90))) < 0.3
    assert period == pytest.approx(96.0, rel=0.005)


def test_unmarked_noise_has_no_clear_square_lattice() -> None:
    rng = np.random.default_rng(1)
    noise = Image.fromarray(np.clip(128 + rng.normal(0, 15, (480, 480)), 0, 255).astype(np.uint8))
    marked = _tiled(size=480)
    clear = sync.find_square_lattices(_luma(marked), keep=1)[0].z
    found = sync.find_square_lattices(_luma(noise), keep=1)
    assert clear > 8 and (not found or found[0].z < clear / 2)


def test_finer_lattice_is_the_one_whose_diagonals_were_found() -> None:
    square = sync.Lattice(np.array([[128.0, 0.0], [0.0, 128.0]]), 1.0)
    diagonal = sync.Lattice(np.array([[128.0, 128.0], [128.0, -128.0]]), 1.0)
    finer = sync.finer(diagonal)
    assert sync.same_basis(finer.basis, square.basis)
    assert not sync.same_basis(diagonal.basis, square.basis)  # a sub-lattice, not the same


def test_same_basis_ignores_order_and_signs_only() -> None:
    a = np.array([[100.0, 3.0], [2.0, 101.0]])
    assert sync.same_basis(a, a[:, ::-1])
    assert sync.same_basis(a, -a)
    assert sync.same_basis(a, a * 1.01)
    assert not sync.same_basis(a, a * 1.1)
    assert not sync.same_basis(a, a * 2)


def test_region_is_the_largest_piece_of_agreeing_blocks() -> None:
    # a 4 x 4-block marked patch with one dark block inside, and one stray agreeing block far
    # away: the box is the patch's, the stray block does not stretch it
    grid = np.zeros((160, 160))
    weighted = np.ones_like(grid)
    product = np.zeros_like(grid)
    product[32:96, 16:80] = 1.0  # blocks (2..5, 1..4) agree
    product[48:64, 32:48] = 0.0  # a gap of one block inside the patch
    product[144:160, 144:160] = 1.0  # a stray block
    found = region.region_of(
        product,
        weighted,
        weighted,
        (0.0, 0.0),
        2.0,
        np.array([[1.0, 0, 0], [0, 1.0, 0]]),
        (320, 320),
    )
    assert found.box == (32, 64, 160, 192)  # chips 16..80 x 32..96 at 2 px
    assert found.share == pytest.approx(15 / 100)  # 15 agreeing blocks of the 10 x 10


def test_coarser_undoes_finer() -> None:
    square = sync.Lattice(np.array([[128.0, 0.0], [0.0, 128.0]]), 1.0)
    coarse = sync.coarser(square)
    # the diagonals: 45 degrees, sides x sqrt 2
    assert np.hypot(*coarse.basis) == pytest.approx([128 * math.sqrt(2)] * 2)
    assert sync.same_basis(sync.finer(coarse).basis, square.basis)
    assert sync.same_basis(sync.coarser(sync.finer(square)).basis, square.basis)


def test_doubled_doubles_the_shorter_vector() -> None:
    stretched = sync.Lattice(np.array([[102.4, 0.0], [0.0, 64.0]]), 1.0)
    assert np.allclose(sync.doubled(stretched).basis, [[102.4, 0.0], [0.0, 128.0]])
    wide = sync.Lattice(np.array([[60.0, 0.0], [0.0, 100.0]]), 1.0)
    assert np.allclose(sync.doubled(wide).basis, [[120.0, 0.0], [0.0, 100.0]])


def test_square_lattice_is_placed_to_a_fifth_of_a_pixel() -> None:
    # at a 96 px period, 0.5 px off (the pooling grid's step) drifts by a chip across 480 px
    turned = _tiled().rotate(3.0, resample=Image.Resampling.BICUBIC).crop((80, 80, 560, 560))
    found = sync.find_square_lattices(_luma(turned), keep=1)
    got_angle, period = _angle_and_period(found[0].basis)
    assert abs(period - 96.0) < 0.2
    assert min(abs(got_angle - 87.0), 90 - abs(got_angle - 87.0)) < 0.1


def test_whitened_residual_is_the_box_filters_residual_over_its_local_energy() -> None:
    # OpenCV's box filter (the same reflected border) against scipy's uniform_filter, written
    # out: the residual of a size x size mean, over the root of its 9 x 9 mean energy + 4,
    # and 0 on clipped pixels
    luma = _luma(watermark_data.load_photo("camera", 512).image)
    luma[:40, :40] = 255.0
    for size in sync.WHITENING:
        residual = luma.astype(np.float64) - uniform_filter(luma.astype(np.float64), size)
        expected = residual / np.sqrt(uniform_filter(residual * residual, 9) + 4.0)
        expected[(luma <= 0.5) | (luma >= 254.5)] = 0.0
        got = sync._whitened(luma, size)
        assert got.dtype == np.float32
        assert np.abs(got - expected).max() < 1e-4
        assert np.all(got[:40, :40] == 0.0)


@pytest.mark.parametrize("clipped", [False, True])
def test_autocorrelation_is_normalised_by_the_overlap(clipped: bool) -> None:
    # the lag map against a direct sum over the overlapping pixels, with and without pixels
    # that carry no mark (the overlap count then comes from the mask's own autocorrelation)
    rng = np.random.default_rng(5)
    luma = rng.uniform(20, 230, (60, 70)).astype(np.float32)
    if clipped:
        luma[10:20, 30:45] = 255.0
    corr, height, width = sync._autocorrelation(luma)
    cy, cx = corr.shape[0] // 2, corr.shape[1] // 2
    keep = ~sync._unmarkable(luma)
    residuals = [sync._whitened(luma, size).astype(np.float64) for size in sync.WHITENING]
    energy = [float(np.sum(r * r)) for r in residuals]
    for dy, dx in [(0, 29), (17, -11), (-23, 5), (30, 30)]:
        ys, xs = slice(max(0, -dy), height - max(0, dy)), slice(max(0, -dx), width - max(0, dx))
        ys2, xs2 = slice(max(0, dy), height + min(0, dy)), slice(max(0, dx), width + min(0, dx))
        overlap = float(np.sum(keep[ys, xs] & keep[ys2, xs2]))
        direct = sum(
            float(np.sum(r[ys, xs] * r[ys2, xs2])) / e
            for r, e in zip(residuals, energy, strict=True)
        )
        expected = direct / max(overlap, 0.25 * height * width)
        assert corr[cy + dy, cx + dx] == pytest.approx(expected, rel=1e-3, abs=1e-7)


def test_region_box_covers_a_weak_mark_whose_blocks_fall_under_the_threshold() -> None:
    # a 6 x 6-block marked patch at a z of 1.5 per block (no block agrees on its own at 3):
    # the box is the patch's (a box around agreeing blocks alone was empty or a few blocks)
    rng = np.random.default_rng(5)
    weighted = rng.normal(0.0, 1.0, (160, 160))
    product = weighted.copy()  # the unmarked chips: signs that agree by chance
    patch = (slice(48, 144), slice(16, 112))  # blocks 3..8 x 1..6
    product[patch] = 1.5 / 16 + rng.normal(0.0, 1.0, (96, 96))
    found = region.region_of(
        product,
        weighted,
        np.ones_like(weighted),
        (0.0, 0.0),
        2.0,
        np.array([[1.0, 0, 0], [0, 1.0, 0]]),
        (320, 320),
    )
    # the truth: chips 16..112 x 48..144 at 2 px; a block of noise may join at an edge
    assert _iou(found.box, (32, 96, 224, 288)) >= 0.8
    assert found.share < 0.1


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_best_rectangle_finds_the_planted_rectangle() -> None:
    rng = np.random.default_rng(6)
    total = rng.normal(0.0, 1.0, (20, 20))
    total[4:14, 9:19] += 0.8  # a z of 8 over the 100 blocks; noise alone: about 4
    keep = region.best_rectangle(total, np.ones_like(total))
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    assert keep.sum() == len(rows) * len(cols)  # one rectangle
    planted = np.zeros_like(keep)
    planted[4:14, 9:19] = True
    assert (keep & planted).sum() / (keep | planted).sum() >= 0.8


def test_best_rectangle_leaves_out_the_blocks_off_the_image() -> None:
    # a picture's rows and columns of blocks with no energy (off the image, as a rotated
    # picture's corners are) add nothing to any rectangle's z: the rectangle is the planted
    # one, not the first of its ties, which reached up and left over the empty blocks
    rng = np.random.default_rng(7)
    total = rng.normal(0.0, 1.0, (20, 20))
    energy = np.ones_like(total)
    total[6:14, 4:12] += 1.5  # the region, in the picture's top left corner
    total[:6, :] = energy[:6, :] = 0.0  # off the image: above the region
    total[:, :4] = energy[:, :4] = 0.0  # and left of it
    keep = region.best_rectangle(total, energy)
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    assert keep.sum() == len(rows) * len(cols)  # one rectangle
    assert (energy[keep] > 0).all()
    planted = np.zeros_like(keep)
    planted[6:14, 4:12] = True
    assert (keep & planted).sum() / (keep | planted).sum() >= 0.8


def test_splice_gate_counts_only_the_blocks_on_the_image() -> None:
    # a marked region of a quarter of the picture's blocks, with as many blocks off the image
    # as on it: the gate folds the region alone (the share of the picture's blocks it covers,
    # counted over the blocks on the image, is well under 80 %)
    layout = ss2._layout(payload.CODEWORD_BITS)
    grid = 4 * ss2.TILE  # 8 x 8 blocks of half a tile
    rng = np.random.default_rng(8)
    weighted = rng.normal(0.0, 1.0, (grid, grid))
    weighted[:, : grid // 2] = 0.0  # the left half is off the image
    mark = ss2._expected(layout.pilot, 0, (0, 0), weighted.shape)
    region_ = (slice(grid // 2, grid), slice(grid // 2, grid))  # the lower right quarter
    weighted[region_] += 0.5 * mark[region_]
    gated = ss2._gated(weighted, layout, 0, (0, 0))
    assert gated is not None
    only_region = np.zeros_like(weighted)
    only_region[region_] = weighted[region_]
    expected = ss2._ss1.fold_tiles(only_region)
    assert np.corrcoef(gated.ravel(), expected.ravel())[0, 1] > 0.9


def test_keystone_matrix_keeps_the_centre_and_undoes_a_screen_seen_from_below() -> None:
    # watermark_data.keystone(0.04) moves the top corners of a 512 px picture in by 20.48 px
    # (the top edge 92 % of the bottom): h = 1/12 maps its corners to a rectangle again (the
    # scale and place left over are the lattice's affine map's), and keeps the centre
    def corners(matrix: np.ndarray, points: list[tuple[float, float]]) -> list[np.ndarray]:
        out = matrix @ np.array([[x, y, 1.0] for x, y in points]).T
        return list((out[:2] / out[2]).T)

    matrix = sync.keystone_matrix(512, 512, 0.0, 1 / 12)
    assert np.allclose(corners(matrix, [(256, 256)])[0], (256, 256))
    top_left, top_right, bottom_right, bottom_left = corners(
        matrix, [(20.48, 0), (491.52, 0), (512, 512), (0, 512)]
    )
    assert np.allclose(top_left + bottom_right, top_right + bottom_left, atol=0.05)
    assert top_left[1] == pytest.approx(top_right[1])
    assert top_right[0] - top_left[0] == pytest.approx(491.5, abs=0.1)
    # a smaller h leaves the top narrower than the bottom
    narrow = corners(sync.keystone_matrix(512, 512, 0.0, 0.07), [(20.48, 0), (491.52, 0)])
    assert narrow[1][0] - narrow[0][0] < 491.5 - 3
    # g is h turned a quarter: the same map from the left
    left_top, left_bottom, right_bottom, right_top = corners(
        sync.keystone_matrix(512, 512, 1 / 12, 0.0), [(0, 20.48), (0, 491.52), (512, 512), (512, 0)]
    )
    assert np.allclose(left_top + right_bottom, left_bottom + right_top, atol=0.05)


def test_region_maps_its_box_through_a_projective_matrix() -> None:
    # the same evidence as an affine map gives, through a keystone: the box is the keystoned
    # corners' bounds (homogeneous coordinates divided out), not the affine box
    rng = np.random.default_rng(6)
    weighted = rng.normal(0.0, 1.0, (160, 160))
    product = np.abs(weighted)  # every chip agrees: the box is the whole grid
    args = (product, weighted, np.ones_like(weighted), (0.0, 0.0), 2.0)
    affine = region.region_of(*args, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (320, 320))
    assert affine.box == (0, 0, 320, 320)
    keystone = np.linalg.inv(sync.keystone_matrix(320, 320, 0.0, 0.2))
    bent = region.region_of(*args, keystone, (400, 400))
    corners = keystone @ np.array([[0, 0, 1], [320, 0, 1], [0, 320, 1], [320, 320, 1.0]]).T
    xs, ys = corners[0] / corners[2], corners[1] / corners[2]
    expected = (0, round(ys.min()), round(xs.max()), round(ys.max()))
    assert xs.min() < 0  # clipped to the picture
    assert bent.box == expected
    assert bent.box[2] - bent.box[0] > 330  # wider than the grid: the keystone's wide edge


def test_find_keystone_reads_the_keystone_of_a_marked_photo() -> None:
    photo = watermark_data.load_photo("astronaut", 512).image
    marked = embed(photo, Payload(content_id=0x5EED_0022_0003, issuer_id=22))
    below = _luma(watermark_data.keystone(0.04)(marked))
    g, h = sync.find_keystone(below) or (9.0, 9.0)
    assert abs(g) < 0.02 and 0.07 < h < 0.1  # the map above: h = 0.08
    side = watermark_data.corners_moved((0.0, 0.04, 0.0, 0.0, 0.0, 0.0, 0.0, -0.04))
    g, h = sync.find_keystone(_luma(side(marked))) or (9.0, 9.0)
    assert 0.07 < g < 0.1 and abs(h) < 0.02
    corner = watermark_data.corners_moved((0.04, 0.04, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    g, h = sync.find_keystone(_luma(corner(marked))) or (9.0, 9.0)
    assert 0.03 < g < 0.06 and 0.03 < h < 0.06
    # the unmarked photo, as it is and keystoned: nothing beats the plain picture enough
    assert sync.find_keystone(_luma(photo)) is None
    assert sync.find_keystone(_luma(watermark_data.keystone(0.04)(photo))) is None


def test_find_keystone_on_a_large_picture_reads_around_the_copys_best_on_the_picture() -> None:
    # 1024 px: the 512 px copy points the way, the picture itself places the keystone (the
    # map that undoes watermark_data.keystone(0.04) is h = 1/12)
    payload_ = Payload(content_id=0x5EED_0022_0004, issuer_id=22)
    marked = embed(watermark_data.load_photo("coffee", 1024).image, payload_)
    below = watermark_data.keystone(0.04)(marked)
    g, h = sync.find_keystone(_luma(below)) or (9.0, 9.0)
    assert abs(g) < 0.01 and abs(h - 1 / 12) < 0.01
    found = extract(below)
    assert found is not None and found.payload == payload_


def test_find_keystone_reads_an_upscaled_photos_leads_on_the_picture() -> None:
    # brick at 1024 px is upscaled: smooth at the pixel scale, so its whitened residual is
    # mostly the mark, which the 512 px copy loses. There the right keystone ranks below a
    # wrong one (the search kept only the copy's best and read nothing); read on the
    # picture, it beats the unwarped picture by far
    payload_ = Payload(content_id=0x5EED_0022_0005, issuer_id=22)
    marked = embed(watermark_data.load_photo("brick", 1024).image, payload_)
    below = watermark_data.keystone(0.04)(marked)
    luma = _luma(below)
    copy = sync._KeystoneReads(cv2.resize(luma, (512, 512), interpolation=cv2.INTER_AREA))
    for step in sync.KEYSTONE_STEPS:
        for g, h in ((step, 0.0), (-step, 0.0), (0.0, step), (0.0, -step)):
            copy.read(g, h)
    assert copy.best()[0] != (0.0, 0.09)  # the copy's best is not the right one
    g, h = sync.find_keystone(luma) or (9.0, 9.0)
    assert abs(g) < 0.01 and abs(h - 1 / 12) < 0.01
    found = extract(below)
    assert found is not None and found.payload == payload_


def test_find_keystone_keeps_a_keystone_between_two_steps_that_the_copy_is_sure_of() -> None:
    # one corner moved in by 4 % at 1024 px: the keystone, g = h = 0.045, falls halfway
    # between the diagonal's first two steps. There the picture's narrower peak gains less
    # than KEYSTONE_LEAD_GAIN, but the copy's best cleared KEYSTONE_GAIN, and that is enough
    # for the search to go on around it on the picture
    payload_ = Payload(content_id=0x22_0000, issuer_id=22)
    marked = embed(watermark_data.load_photo("astronaut", 1024).image, payload_)
    corner = watermark_data.corners_moved((0.04, 0.04, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))(marked)
    # the decoder's own luma (float, unrounded): this case is close to the gate
    g, h = sync.find_keystone(spread.Evidence.of(corner).luma) or (9.0, 9.0)
    assert abs(g - 0.045) < 0.01 and abs(h - 0.045) < 0.01
    found = extract(corner)
    assert found is not None and found.payload == payload_
