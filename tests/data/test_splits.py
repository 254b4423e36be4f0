from pathlib import Path

import numpy as np
import pytest

from mrimaster.data.folders import scan_class_folders
from mrimaster.data.hashing import near_duplicate_groups, phash_variants
from mrimaster.data.images import load_grayscale
from mrimaster.data.splits import SplitTable, grouped_stratified_split


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


@pytest.mark.realdata
def test_real_split_keeps_every_near_duplicate_group_on_one_side(data_root: Path) -> None:
    scan = scan_class_folders(data_root / "sartaj-training")
    hashes = np.stack([phash_variants(load_grayscale(p)) for p in scan.paths])
    groups = near_duplicate_groups(hashes)
    labels = np.array([sorted(set(scan.labels)).index(lab) for lab in scan.labels])
    split = grouped_stratified_split(labels, groups, seed=0)
    byte_groups: dict[bytes, list[int]] = {}
    for i, p in enumerate(scan.paths):
        byte_groups.setdefault(p.read_bytes(), []).append(i)
    for members in byte_groups.values():  # exact copies are on one side
        assert len({split[i] for i in members}) == 1
    for g in np.unique(groups):  # and so is every near-duplicate group
        assert len(set(split[groups == g])) == 1
    assert len(np.unique(groups)) < len(groups) - 93  # more than the exact copies were grouped
