"""Leakage-free splits: stratified by class, near-duplicate groups never cross sides.

A split is a dataset artifact (``mrimaster data split DIR --out FILE``): groups are computed
once, on the raw images, with the same 256-bit pHash the audit reports, and every training
config points at the file, so every recipe is measured on the same test images.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mrimaster.data.folders import scan_class_folders
from mrimaster.data.hashing import DEFAULT_THRESHOLD, near_duplicate_groups, phash_variants
from mrimaster.data.images import load_grayscale
from mrimaster.data.presence import PRESENCE_LABEL, is_presence_dataset, scan_presence
from mrimaster.data.styles import STYLE_FEATURES, kmeans, style_features
from mrimaster.errors import DataError

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
SHIFT_PART = "shift"
"""The source-held-out part: whole acquisition-style clusters no model is trained on."""
EXCLUDED_PART = "excluded"
"""Images of a held-out style cluster whose near-duplicate group went elsewhere (most of the
group lies in other clusters): neither trained, fitted nor scored on, so that no image of a
held-out style reaches training."""
PRESENCE_PARTS: tuple[str, ...] = ("fit", "report")
"""Parts of a presence-only set: ``fit`` may be used for training or fitting, ``report`` only
for reporting."""


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
        splits: ``train`` / ``val`` / ``test`` / ``shift`` (or ``fit`` / ``report``) per image.
        clusters: Acquisition-style cluster per image (``-1``: not clustered).
    """

    paths: list[str]
    labels: list[str]
    groups: list[int]
    splits: list[str]
    clusters: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.clusters:
            self.clusters = [-1] * len(self.paths)

    def indices(self, split: str) -> list[int]:
        """Row numbers of one split."""
        return [i for i, s in enumerate(self.splits) if s == split]

    def save(self, path: Path) -> None:
        """Write as CSV with columns ``path,label,group,split,cluster``."""
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label", "group", "split", "cluster"])
            writer.writerows(zip(self.paths, self.labels, self.groups, self.splits,
                                 self.clusters, strict=True))

    @classmethod
    def load(cls, path: Path) -> SplitTable:
        """Read a CSV written by :meth:`save`."""
        if not Path(path).is_file():
            raise DataError(f"split file {path} not found")
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        try:
            return cls([r["path"] for r in rows], [r["label"] for r in rows],
                       [int(r["group"]) for r in rows], [r["split"] for r in rows],
                       [int(r.get("cluster") or -1) for r in rows])
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path} is not a split file ({type(exc).__name__}: {exc})",
                            "make one with `mrimaster data split DIR --out FILE` (columns "
                            "path,label,group,split[,cluster])") from exc

    def subset(self, rel_paths: list[str]) -> SplitTable:
        """The rows of ``rel_paths``, in that order.

        Raises:
            DataError: a path is not in the table.
        """
        where = {p: i for i, p in enumerate(self.paths)}
        missing = [p for p in rel_paths if p not in where]
        if missing:
            raise DataError(f"{len(missing)} images are not in the split file (first: "
                            f"{missing[0]})", "use the dataset the split was made on, or "
                            "make a new split with `mrimaster data split`")
        idx = [where[p] for p in rel_paths]
        return SplitTable(list(rel_paths), [self.labels[i] for i in idx],
                          [self.groups[i] for i in idx], [self.splits[i] for i in idx],
                          [self.clusters[i] for i in idx])


@dataclass
class SplitConfig:
    """How ``mrimaster data split`` groups and assigns images.

    Attributes:
        threshold: Near-duplicate Hamming threshold on the raw images' 256-bit pHash (see
            :data:`mrimaster.data.hashing.DEFAULT_THRESHOLD`, the audit's, so both agree).
        fractions: Train / validation / test shares of the in-source images.
        seed: Seed of the clustering and the assignment.
        style_clusters: Number of acquisition-style clusters (0: no source-held-out part); a
            dataset with fewer than 50 images per cluster gets ``N // 50`` clusters.
        shift_share: Least share of images held out as whole style clusters (``shift``).
        max_cluster_share: Larger clusters are never held out (they would take a class away).
        presence_fit_share: For presence-only sets, share of groups in ``fit``; the rest is
            ``report`` (never used for anything but reporting).
    """

    threshold: int = DEFAULT_THRESHOLD
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    style_clusters: int = 16
    shift_share: float = 0.1
    max_cluster_share: float = 0.12
    presence_fit_share: float = 0.5


def _describe_raw(paths: list[Path], progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """256-bit pHash variants and style features of each raw image (not resized first)."""
    hashes, styles = [], []
    for path in tqdm(paths, desc="hashing", unit="img", disable=None if progress else True,
                     leave=False):
        gray = load_grayscale(path)
        hashes.append(phash_variants(gray))
        styles.append(style_features(gray))
    return np.stack(hashes), np.stack(styles)


def _held_out_clusters(clusters: np.ndarray, labels: np.ndarray, cfg: SplitConfig
                       ) -> list[int]:
    """Style clusters to hold out: most class-diverse first (entropy of their class mix),
    skipping any larger than ``max_cluster_share``, until ``shift_share`` is reached."""
    n = len(clusters)
    candidates = []
    for c in np.unique(clusters):
        members = clusters == c
        if members.sum() > cfg.max_cluster_share * n:
            continue
        mix = np.bincount(labels[members]) / members.sum()
        mix = mix[mix > 0]
        candidates.append((-float(-(mix * np.log(mix)).sum()), int(c)))
    chosen: list[int] = []
    for _, c in sorted(candidates):
        if np.isin(clusters, chosen).sum() >= cfg.shift_share * n:
            break
        chosen.append(c)
    return chosen


def make_split(root: Path, cfg: SplitConfig, progress: bool = True
               ) -> tuple[SplitTable, dict[str, Any]]:
    """Group a dataset's raw images into near-duplicate groups and assign whole groups to parts.

    Class-per-folder datasets get ``train`` / ``val`` / ``test`` (in-source, stratified by
    class) and ``shift``: every group whose images mostly fall in a held-out acquisition-style
    cluster (:mod:`mrimaster.data.styles`), an estimate of accuracy on a new source. The rest
    of a held-out cluster (images whose group mostly lies in other clusters) is
    :data:`EXCLUDED_PART`, not moved into training: the model never sees a held-out style.
    Presence-only datasets (:mod:`mrimaster.data.presence`) get ``fit`` / ``report``.

    Returns:
        ``(table, info)``: the split and a JSON-ready summary (counts per part and class,
        clusters and which were held out).
    """
    root = Path(root)
    if is_presence_dataset(root):
        presence = scan_presence(root)
        base = presence.root
        paths, labels_text = presence.paths, [PRESENCE_LABEL] * len(presence.paths)
    else:
        scan = scan_class_folders(root)
        base, paths, labels_text = root, scan.paths, scan.labels
    hashes, styles = _describe_raw(paths, progress)
    groups = near_duplicate_groups(hashes, cfg.threshold)
    names = sorted(set(labels_text))
    labels = np.array([names.index(lab) for lab in labels_text])
    clusters = np.full(len(paths), -1, dtype=np.int64)
    held: list[int] = []
    if labels_text[0] == PRESENCE_LABEL:
        fr = (cfg.presence_fit_share, 1 - cfg.presence_fit_share, 0.0)
        parts = np.array(PRESENCE_PARTS + ("",))[grouped_stratified_split(labels, groups, fr,
                                                                          cfg.seed)]
    else:
        parts = np.empty(len(paths), dtype=object)
        k = min(cfg.style_clusters, len(paths) // 50)
        if k >= 2:
            clusters = kmeans(styles, k, cfg.seed)
            held = _held_out_clusters(clusters, labels, cfg)
        # a group goes where most of its images' clusters go
        group_shift = {g: np.isin(clusters[groups == g], held).mean() > 0.5
                       for g in np.unique(groups)}
        shift = np.array([group_shift[g] for g in groups], dtype=bool)
        parts[shift] = SHIFT_PART
        rest = np.flatnonzero(~shift)
        idx = grouped_stratified_split(labels[rest], groups[rest], cfg.fractions, cfg.seed)
        parts[rest] = np.array(SPLIT_NAMES)[idx]
        parts[np.isin(clusters, held) & ~shift] = EXCLUDED_PART
    rel = [p.relative_to(base).as_posix() for p in paths]
    table = SplitTable(rel, list(labels_text), [int(g) for g in groups], [str(p) for p in parts],
                       [int(c) for c in clusters])
    info: dict[str, Any] = {
        "root": str(root), "images": len(rel), "threshold_bits": cfg.threshold,
        "config": {**asdict(cfg), "fractions": list(cfg.fractions)},
        "groups": int(len(np.unique(groups))),
        "parts": {part: dict(Counter(lab for lab, s in zip(labels_text, parts, strict=True)
                                     if s == part)) for part in sorted(set(parts))},
        "held_out_clusters": held,
        "clusters": [{"cluster": int(c), "images": int((clusters == c).sum()),
                      "classes": dict(Counter(np.array(labels_text)[clusters == c].tolist())),
                      "median_style": dict(zip(STYLE_FEATURES, np.round(np.median(
                          styles[clusters == c], axis=0), 3).tolist(), strict=True))}
                     for c in np.unique(clusters) if c >= 0],
    }
    return table, info
