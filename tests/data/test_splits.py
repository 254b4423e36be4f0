import json
from pathlib import Path

import numpy as np
import pytest

from mrimaster.data.folders import scan_class_folders
from mrimaster.data.hashing import near_duplicate_groups, phash_variants
from mrimaster.data.images import load_grayscale
from mrimaster.data.splits import EXCLUDED_PART, SplitTable, grouped_stratified_split


def _random_groups(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n), rng.integers(1, 6, n))
    labels = rng.integers(0, 4, n)[groups]
    return labels, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_groups_never_cross_and_classes_are_stratified(seed: int) -> None:
    labels, groups = _random_groups(seed)
    split = grouped_stratified_split(labels, groups, (0.7, 0.15, 0.15), seed)
    for g in np.unique(groups):
        assert len(set(split[groups == g])) == 1
    for c in range(4):
        share = np.bincount(split[labels == c], minlength=3) / (labels == c).sum()
        assert np.allclose(share, [0.7, 0.15, 0.15], atol=0.03)


def test_split_is_reproducible_and_seeded() -> None:
    labels, groups = _random_groups(5)
    a = grouped_stratified_split(labels, groups, seed=3)
    assert np.array_equal(a, grouped_stratified_split(labels, groups, seed=3))
    assert not np.array_equal(a, grouped_stratified_split(labels, groups, seed=4))


def test_split_table_round_trip(tmp_path: Path) -> None:
    table = SplitTable(["a/1.jpg", "b/2.jpg"], ["glioma", "pituitary"], [0, 1], ["train", "test"])
    table.save(tmp_path / "split.csv")
    assert SplitTable.load(tmp_path / "split.csv") == table


def test_make_split_keeps_groups_whole_and_holds_out_whole_style_clusters(tmp_path: Path
                                                                          ) -> None:
    from PIL import Image

    from mrimaster.data.splits import SHIFT_PART, SplitConfig, make_split
    from tests.conftest import synthetic_slice

    root = tmp_path / "d"
    for k, name in enumerate(("glioma", "meningioma", "no_tumor", "pituitary")):
        (root / name).mkdir(parents=True)
        for i in range(30):
            img = synthetic_slice(100 * k + i, 96 if i % 3 else 160, k)
            Image.fromarray(img).save(root / name / f"{i}.png")
        # an exact copy and a re-encoded copy: near-duplicates of image 0
        Image.fromarray(synthetic_slice(100 * k, 160, k)).save(root / name / "copy.png")
        Image.fromarray(synthetic_slice(100 * k, 160, k)).save(root / name / "copy.jpg",
                                                               quality=80)
    table, info = make_split(root, SplitConfig(style_clusters=2, shift_share=0.1,
                                               max_cluster_share=0.9), progress=False)
    assert len(table.paths) == 128 and set(info["parts"]) >= {"train", "val", "test"}
    parts = np.array(table.splits)
    groups = np.array(table.groups)
    used = parts != EXCLUDED_PART
    for g in np.unique(groups):  # whole among the parts anything is trained or scored on
        assert len(set(parts[(groups == g) & used])) <= 1
    for name in ("glioma", "pituitary"):
        members = [table.paths.index(f"{name}/{f}") for f in ("0.png", "copy.png", "copy.jpg")]
        assert len({table.groups[i] for i in members}) == 1
    held = info["held_out_clusters"]
    clusters = np.array(table.clusters)
    assert held, "a style cluster should have been held out"
    shift = parts == SHIFT_PART
    in_held = np.isin(clusters, held)
    assert shift.any() and shift[in_held].mean() > 0.5  # held-out clusters went to shift
    assert not shift[~in_held].any() or shift[~in_held].mean() < 0.5
    # what is left of a held-out cluster is excluded, never trained, fitted or tested on
    assert set(parts[in_held]) <= {SHIFT_PART, EXCLUDED_PART}
    assert in_held[~used].all()


@pytest.fixture(scope="module")
def raw_hashes(data_root: Path) -> dict[str, np.ndarray]:
    """Perceptual hashes (with flips and rotations) of every raw file of sartaj-training/,
    by path relative to it: computed once for the tests below (a few seconds per thousand)."""
    root = data_root / "sartaj-training"
    return {p.relative_to(root).as_posix(): phash_variants(load_grayscale(p))
            for p in scan_class_folders(root).paths}


def _cross_side_pairs(table: SplitTable, hashes_of: dict[str, np.ndarray], threshold: int
                      ) -> list[tuple[str, str, int]]:
    from mrimaster.data.hashing import min_hamming

    hashes = np.stack([hashes_of[p] for p in table.paths])
    dist = min_hamming(hashes, hashes)
    dist = np.minimum(dist, dist.T)
    parts = np.array(table.splits)
    i, j = np.nonzero(np.triu(dist <= threshold, k=1))
    # an excluded image is never used, so its near-duplicates may lie anywhere
    cross = (parts[i] != parts[j]) & (parts[i] != EXCLUDED_PART) & (parts[j] != EXCLUDED_PART)
    return [(table.paths[a], table.paths[b], int(dist[a, b]))
            for a, b in zip(i[cross], j[cross], strict=True)]


@pytest.mark.realdata
@pytest.mark.parametrize("split_file", ["splits/sartaj-training.csv",
                                        "models/default/split.csv"])
def test_shipped_split_has_no_near_duplicate_across_sides(data_root: Path, split_file: str,
                                                          raw_hashes: dict[str, np.ndarray]
                                                          ) -> None:
    """Recomputed from the raw files, not read from the split's own group column."""
    from mrimaster.data.hashing import DEFAULT_THRESHOLD

    repo = Path(__file__).resolve().parents[2]
    table = SplitTable.load(repo / split_file)
    root = data_root / "sartaj-training"
    assert len(table.paths) == len(scan_class_folders(root).paths) == 2870
    assert {"train", "val", "test", "shift"} <= set(table.splits)
    crossing = _cross_side_pairs(table, raw_hashes, DEFAULT_THRESHOLD)
    assert crossing == [], f"{len(crossing)} near-duplicate pairs cross sides: {crossing[:5]}"
    # exact byte copies are on one side too
    byte_groups: dict[bytes, set[str]] = {}
    for path, part in zip(table.paths, table.splits, strict=True):
        if part != EXCLUDED_PART:
            byte_groups.setdefault((root / path).read_bytes(), set()).add(part)
    assert all(len(parts) == 1 for parts in byte_groups.values())
    # the held-out style clusters (two in the shipped split) are whole: none of their images
    # trains, selects or tests
    held_out = set(json.loads((repo / "splits" / "sartaj-training.json").read_text())
                   ["held_out_clusters"])
    used = {part for c, part in zip(table.clusters, table.splits, strict=True) if c in held_out}
    assert len(held_out) >= 2 and used == {"shift", EXCLUDED_PART}


@pytest.mark.realdata
def test_the_old_resized_hash_split_would_fail_the_check(data_root: Path,
                                                        raw_hashes: dict[str, np.ndarray]
                                                        ) -> None:
    """The check can fail: a split grouped on resized slices at 44 bits leaks across sides."""
    from mrimaster.data.images import prepare_slice

    scan = scan_class_folders(data_root / "sartaj-training")
    hashes = np.stack([phash_variants(prepare_slice(load_grayscale(p), 192))
                       for p in scan.paths])
    groups = near_duplicate_groups(hashes, 44)
    labels = np.array([sorted(set(scan.labels)).index(lab) for lab in scan.labels])
    split = grouped_stratified_split(labels, groups, seed=0)
    rel = [p.relative_to(data_root / "sartaj-training").as_posix() for p in scan.paths]
    table = SplitTable(rel, list(scan.labels), [int(g) for g in groups],
                       [("train", "val", "test")[k] for k in split])
    assert len(_cross_side_pairs(table, raw_hashes, 52)) > 0
