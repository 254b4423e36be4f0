"""The data a classification run trains and selects on: the split dataset and extra sources."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrimaster.data.brats_slices import load_brats_slices
from mrimaster.data.folders import SliceSet, load_class_folders, load_slices
from mrimaster.data.labels import CLASSES
from mrimaster.data.presence import scan_presence
from mrimaster.data.splits import SplitConfig, SplitTable, make_split
from mrimaster.runs.data_roots import under_root
from mrimaster.settings import Settings
from mrimaster.training.config import TrainConfig

PRESENT = -1
"""Label of a presence-only training image: a tumour of unknown type."""


@dataclass
class SplitData:
    """The decoded dataset and its split."""

    slices: SliceSet
    labels: np.ndarray
    table: SplitTable

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        idx = self.table.indices(name)
        return self.slices.images[idx], self.labels[idx]


def load_split_data(cfg: TrainConfig, data_dir: Path) -> SplitData:
    """Decode the dataset and load (or compute, on the raw images) the leakage-free split."""
    slices = load_class_folders(data_dir, cfg.image_size)
    labels = slices.label_indices()
    rel = [p.relative_to(data_dir).as_posix() for p in slices.paths]
    if cfg.split_file:
        table = SplitTable.load(cfg.split_file).subset(rel)
    else:
        split_cfg = SplitConfig(threshold=cfg.dedup_threshold, seed=cfg.seed,
                                fractions=(cfg.split_fractions[0], cfg.split_fractions[1],
                                           cfg.split_fractions[2]))
        table = make_split(data_dir, split_cfg, progress=False)[0].subset(rel)
    return SplitData(slices, labels, table)


def load_extra_training(cfg: TrainConfig, settings: Settings) -> tuple[np.ndarray, np.ndarray,
                                                                       dict[str, int]]:
    """Training images from other sources: BraTS slices (labelled) and the ``fit`` part of a
    presence-only set (label :data:`PRESENT`).

    Returns:
        ``(images (N, S, S) uint8, labels (N,) int64, counts per source)``.
    """
    images = [np.zeros((0, cfg.image_size, cfg.image_size), np.uint8)]
    labels = [np.zeros(0, np.int64)]
    counts: dict[str, int] = {}
    if cfg.brats_dir:
        brats = load_brats_slices(under_root(Path(cfg.brats_dir), settings), cfg.image_size,
                                  cfg.brats_slices_per_case)
        images.append(brats.images)
        labels.append(np.array([CLASSES.index(lab) for lab in brats.labels], np.int64))
        for lab in set(brats.labels):
            counts[f"brats_{lab}"] = brats.labels.count(lab)
    if cfg.presence_dir and cfg.presence_split:
        scan = scan_presence(under_root(Path(cfg.presence_dir), settings))
        table = SplitTable.load(cfg.presence_split)
        rel = [p.relative_to(scan.root).as_posix() for p in scan.paths]
        parts = table.subset(rel).splits
        fit = [p for p, part in zip(scan.paths, parts, strict=True) if part == "fit"]
        loaded = load_slices(fit, None, cfg.image_size, progress=False)
        images.append(loaded.images)
        labels.append(np.full(len(loaded.paths), PRESENT, np.int64))
        counts["presence_fit"] = len(loaded.paths)
    return np.concatenate(images), np.concatenate(labels), counts
