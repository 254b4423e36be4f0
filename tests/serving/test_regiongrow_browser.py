"""Seeded region growing (``static/regiongrow.js``, Adams and Bischof 1994) in Debian's chromium,
on synthetic volumes whose answer is known: competing regions fill their own boxes exactly,
seeds are never changed, the intensity limit and the box margin stop the growth, the limit's
scale (``spread``), and a 240x240x155 volume (BraTS size) grown and timed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

import mrimaster.serving
from tests.serving.test_browser import CHROMIUM, open_page

SCRIPT = Path(mrimaster.serving.__file__).parent / "static" / "regiongrow.js"
SEED = 9  # the editor's background seed

# image and labels travel as lists in x-fastest order (NumPy's order="F" for [x, y, z])
GROW = """({image, dims, labels, background, options}) => {
  const lab = Uint8Array.from(labels);
  const out = RegionGrow.grow(Float32Array.from(image), dims, lab, background, options);
  return {labels: Array.from(lab), grown: out.grown, changed: out.changed, box: out.box};
}"""


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    """A blank page with regiongrow.js loaded, and nothing else."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail("browser tests need Debian's chromium (apt-get install chromium)")
    with sync_playwright() as pw:
        browser, page, errors, _ = open_page(pw)
        page.goto("about:blank")
        page.add_script_tag(path=str(SCRIPT))
        yield page
        assert not errors, errors
        browser.close()


def grow(page: Any, image: np.ndarray, labels: np.ndarray, background: int | None = SEED,
         **options: float) -> tuple[np.ndarray, dict[str, Any]]:
    """``RegionGrow.grow`` in the page: the labels after it, and its answer."""
    out = page.evaluate(GROW, {"image": image.ravel(order="F").tolist(),
                               "dims": list(image.shape),
                               "labels": labels.ravel(order="F").tolist(),
                               "background": background, "options": options})
    return np.asarray(out["labels"], np.uint8).reshape(image.shape, order="F"), out


def box(shape: tuple[int, ...], lo: tuple[int, int, int], hi: tuple[int, int, int]
        ) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


SHAPE = (40, 36, 30)
OUTER = box(SHAPE, (5, 5, 5), (35, 31, 25))   # 200, holds both inner boxes
INNER_A = box(SHAPE, (10, 10, 10), (20, 20, 18))  # 100
INNER_C = box(SHAPE, (24, 10, 10), (30, 20, 18))  # 300, apart from A


def nested_boxes() -> np.ndarray:
    image = np.zeros(SHAPE, np.float32)
    image[OUTER] = 200
    image[INNER_A] = 100
    image[INNER_C] = 300
    return image


def test_competing_regions_fill_their_own_boxes(page: Any) -> None:
    """A seed in box A (label 1), one in box C (label 4), background seeds in the box around
    them: every voxel goes to the region whose mean it is nearest, reached through its own box,
    so A becomes 1, C becomes 4 and all the rest 0 (the background seeds cleared)."""
    image = nested_boxes()
    labels = np.zeros(SHAPE, np.uint8)
    labels[14:16, 14, 13] = 1
    labels[26, 15, 13] = 4
    labels[7, 7, 7] = labels[32, 28, 22] = labels[22, 15, 13] = SEED
    out, answer = grow(page, image, labels, margin=40)
    expected = np.zeros(SHAPE, np.uint8)
    expected[INNER_A] = 1
    expected[INNER_C] = 4
    np.testing.assert_array_equal(out, expected)
    assert answer["grown"] == int(INNER_A.sum()) + int(INNER_C.sum()) - 3
    assert answer["changed"] == answer["grown"] + 3  # and the three background seeds cleared
    assert answer["box"] == [0, 0, 0, *SHAPE]


def test_intensity_limit_and_margin_stop_the_growth(page: Any) -> None:
    image = nested_boxes()
    labels = np.zeros(SHAPE, np.uint8)
    labels[15, 15, 14] = 2
    # no background seed: the outer box (100 away from A's mean) is over the limit of 50
    out, answer = grow(page, image, labels, background=None, margin=40, maxDifference=50)
    np.testing.assert_array_equal(out, INNER_A * np.uint8(2))
    assert answer["grown"] == int(INNER_A.sum()) - 1
    # no limit: only the seed's box widened by the margin (3 voxels) is filled, all of it
    out, answer = grow(page, image, labels, background=None, margin=3)
    np.testing.assert_array_equal(out, box(SHAPE, (12, 12, 11), (19, 19, 18)) * np.uint8(2))
    assert answer["box"] == [12, 12, 11, 19, 19, 18]
    # background seeds alone grow nothing and stay for the next try
    only_background = np.zeros(SHAPE, np.uint8)
    only_background[7, 7, 7] = SEED
    out, answer = grow(page, image, only_background, margin=3)
    np.testing.assert_array_equal(out, only_background)
    assert answer["box"] is None and answer["changed"] == 0


def test_seeds_kept_growth_connected_and_repeatable(page: Any) -> None:
    """On noise with scattered seeds of four labels: no seed changes, no background seed is
    left, every grown voxel lies in the seeds' box widened by the margin, every connected
    piece of a label holds a seed of that label (6-connectivity), and a second run gives the
    same labels."""
    rng = np.random.default_rng(25)
    shape = (30, 26, 20)
    image = ndimage.gaussian_filter(rng.normal(size=shape), 1.5).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels.ravel()[rng.choice(labels.size, 10, replace=False)] = SEED  # anywhere
    block = np.zeros((14, 14, 10), np.uint8)  # the other seeds: in a block, a smaller box
    block.ravel()[rng.choice(block.size, 30, replace=False)] = rng.choice(
        np.array([1, 2, 4], np.uint8), 30)
    labels[8:22, 6:20, 5:15] = np.where(block > 0, block, labels[8:22, 6:20, 5:15])
    margin = 2
    out, answer = grow(page, image, labels, margin=margin, maxDifference=0.15)
    seeds = (labels != 0) & (labels != SEED)
    np.testing.assert_array_equal(out[seeds], labels[seeds])
    assert not (out == SEED).any()
    grown = (out != 0) & (labels == 0)
    assert int(grown.sum()) == answer["grown"] > 100, answer["grown"]
    lo = np.argwhere(seeds).min(axis=0) - margin
    hi = np.argwhere(seeds).max(axis=0) + margin + 1
    inside = box(shape, tuple(np.maximum(lo, 0)), tuple(np.minimum(hi, shape)))
    assert not (grown & ~inside).any()
    faces = inside & ~box(shape, tuple(np.maximum(lo, 0) + 1), tuple(np.minimum(hi, shape) - 1))
    assert (grown & faces).any()  # the box is what stopped it
    six = ndimage.generate_binary_structure(3, 1)
    for label in (1, 2, 4):
        pieces, n = ndimage.label(out == label, structure=six)
        with_seed = set(np.unique(pieces[labels == label]).tolist())
        assert with_seed >= set(range(1, n + 1)), (label, n, with_seed)
    again, _ = grow(page, image, labels, margin=margin, maxDifference=0.15)
    np.testing.assert_array_equal(again, out)


def test_spread_is_the_interquartile_range_above_the_background(page: Any) -> None:
    """1..100 among 300 voxels of background (-5, the minimum): IQR 75 - 25 (the values at
    ranks floor(0.75 * 99) and floor(0.25 * 99)); a flat image has none."""
    values = [-5.0] * 300 + list(range(100, 0, -1))
    assert page.evaluate("(v) => RegionGrow.spread(Float32Array.from(v))", values) == 50
    assert page.evaluate("RegionGrow.spread(new Float32Array(64).fill(3))") == 0
    # only the first n voxels count
    assert page.evaluate("(v) => RegionGrow.spread(Float32Array.from(v), 300)", values) == 0


def test_wrong_grid_is_an_error(page: Any) -> None:
    from playwright.sync_api import Error

    with pytest.raises(Error, match="region grow: labels have 10 voxels"):
        page.evaluate("RegionGrow.grow(new Float32Array(27), [3, 3, 3], new Uint8Array(10), 9)")


# A 240x240x155 volume made in the page (too large to send): a head (100) with a tumour ball
# (180, radius 20) in it, over a background (0), each voxel plus uniform noise of +-10 from a
# fixed generator. Seeds: three tumour voxels at the ball's centre, background seeds in the
# head beside it; the limit 40 and the margin 24 (the ball's radius and some) are the ones a
# doctor's seed inside a tumour would get.
FULL_SIZE = """() => {
  const nx = 240, ny = 240, nz = 155, n = nx * ny * nz;
  const image = new Float32Array(n), labels = new Uint8Array(n), ball = new Uint8Array(n);
  let state = 25;
  for (let i = 0; i < n; i++) {
    const x = i % nx, y = Math.floor(i / nx) % ny, z = Math.floor(i / (nx * ny));
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    const inBall = (x - 120) ** 2 + (y - 110) ** 2 + (z - 70) ** 2 < 400;
    const inHead = ((x - 120) / 100) ** 2 + ((y - 120) / 110) ** 2 + ((z - 77) / 70) ** 2 < 1;
    ball[i] = inBall ? 1 : 0;
    image[i] = (inBall ? 180 : inHead ? 100 : 0) + 20 * (state / 4294967296 - 0.5);
  }
  const at = (x, y, z) => x + nx * (y + ny * z);
  for (let dx = -1; dx <= 1; dx++) labels[at(120 + dx, 110, 70)] = 1;
  labels[at(95, 110, 70)] = labels[at(145, 110, 70)] = labels[at(120, 132, 70)] = 9;
  const t0 = performance.now();
  const out = RegionGrow.grow(image, [nx, ny, nz], labels, 9, {margin: 24, maxDifference: 40});
  const ms = performance.now() - t0;
  let grownOutsideBall = 0, ballMissed = 0, ballVoxels = 0, others = 0;
  for (let i = 0; i < n; i++) {
    ballVoxels += ball[i];
    if (labels[i] === 1 && !ball[i]) grownOutsideBall++;
    if (ball[i] && labels[i] !== 1) ballMissed++;
    if (labels[i] !== 0 && labels[i] !== 1) others++;
  }
  return {ms, grown: out.grown, box: out.box, grownOutsideBall, ballMissed, ballVoxels, others};
}"""


def test_full_size_volume(page: Any) -> None:
    got = page.evaluate(FULL_SIZE)
    print(f"\nregion grow on 240x240x155 in headless chromium: {got['ms']:.0f} ms "
          f"(box {got['box']}, {got['grown']} voxels grown)")
    assert got["ballMissed"] == 0 and got["grownOutsideBall"] == 0, got
    assert got["others"] == 0, got  # the background seeds are cleared
    assert got["grown"] == got["ballVoxels"] - 3, got
    assert got["box"] == [119 - 24, 110 - 24, 70 - 24, 121 + 25, 110 + 25, 70 + 25]
