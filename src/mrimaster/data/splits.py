"""Leakage-free splits: stratified by class, near-duplicate groups never cross sides."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrimaster.errors import DataError

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def grouped_stratified_split(labels: Sequence[int] | np.ndarray, groups: Sequence[int] | np.ndarray,
                             fractions: Sequence[float] = (0.7, 0.15, 0.15),
                             seed: int = 0) -> np.ndarray:
    """Assign whole groups to splits so that each split's class mix follows ``fractions``.

    Groups are visited largest first (ties in seeded random order) and each goes to the split
    whose per-class quota is least filled, weighted by the group's class composition. Every
    member of a group lands in the same split, so near-duplicates never leak across.

    Args:
        labels: ``(N,)`` int class index per item.
        groups: ``(N,)`` int group id per item (near-duplicates share an id).
        fractions: Target share of each split, summing to 1.
        seed: Seed of the visiting order.

    Returns:
        ``(N,)`` int split index per item (0 = first split).
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    fr = np.asarray(fractions, dtype=np.float64)
    if labels.shape != groups.shape:
        raise ValueError("labels and groups must have the same length")
    if np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise DataError(f"split fractions {list(fractions)} must be non-negative and sum to 1")
    n_classes = int(labels.max()) + 1 if labels.size else 0
    target = fr[:, None] * np.bincount(labels, minlength=n_classes)[None, :]
    filled = np.zeros_like(target)
    unique_groups = np.unique(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(unique_groups)
    members = {g: np.flatnonzero(groups == g) for g in unique_groups}
    order = sorted(unique_groups, key=lambda g: -len(members[g]))  # stable: keeps shuffled ties
    out = np.empty(labels.shape[0], dtype=np.int64)
    for g in order:
        counts = np.bincount(labels[members[g]], minlength=n_classes)
        room = (target - filled) / np.maximum(target, 1e-9)
        score = (room * counts[None, :]).sum(axis=1)
        score[fr == 0] = -np.inf
        best = int(np.argmax(score))
        out[members[g]] = best
        filled[best] += counts
    return out


@dataclass
class SplitTable:
    """A saved split: one row per image.

    Attributes:
        paths: Image path relative to the dataset root (POSIX form).
        labels: Canonical label per image.
        groups: Near-duplicate group id per image.
        splits: ``train`` / ``val`` / ``test`` per image.
    """

    paths: list[str]
    labels: list[str]
    groups: list[int]
    splits: list[str]

    def indices(self, split: str) -> list[int]:
        """Row numbers of one split."""
        return [i for i, s in enumerate(self.splits) if s == split]

    def save(self, path: Path) -> None:
        """Write as CSV with columns ``path,label,group,split``."""
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label", "group", "split"])
            writer.writerows(zip(self.paths, self.labels, self.groups, self.splits, strict=True))

    @classmethod
    def load(cls, path: Path) -> SplitTable:
        """Read a CSV written by :meth:`save`."""
        if not Path(path).is_file():
            raise DataError(f"split file {path} not found")
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        return cls([r["path"] for r in rows], [r["label"] for r in rows],
                   [int(r["group"]) for r in rows], [r["split"] for r in rows])
