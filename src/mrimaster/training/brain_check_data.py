"""The brain-MRI check's examples: real MRI by source and part, generated non-MRI by kind.

Every image is prepared as the classifier prepares it (crop to the head, pad, resize to 192 px,
:func:`~mrimaster.data.images.prepare_slice`), then cut to the check's 64x64 thumbnail
(:func:`~mrimaster.trust.brain_check.thumbnail`). Which image goes to which part is described
in :mod:`mrimaster.training.brain_check`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrimaster.data import non_mri
from mrimaster.data.folders import load_slices
from mrimaster.data.images import prepare_slice
from mrimaster.data.splits import EXCLUDED_PART, SplitTable
from mrimaster.errors import DataError
from mrimaster.trust.brain_check import thumbnail
from mrimaster.trust.volume_check import PREPARED_SIZE, volume_slices

"""Side of the prepared slice the thumbnail is cut from (the default classifier's input)."""
PARTS: tuple[str, ...] = ("train", "calib", "report")
SHARED_SOURCES: tuple[str, ...] = ("sartaj-training", "br35h-tumour", "brats-mini")
"""Positive sources from the shared data (the others are installed packages' MRI)."""
_SARTAJ_PART = {"train": "train", "val": "calib", "test": "report", "shift": "report"}


@dataclass
class BrainCheckConfig:
    """What ``mrimaster train-brain-check`` trains on and how.

    Paths of datasets are relative to the data root; split files to the working folder.
    ``limit`` (images per positive source and part, 0: all) keeps test runs small.
    """

    sartaj_dir: str = "sartaj-training"
    sartaj_split: str = "splits/sartaj-training.csv"
    br35h_dir: str = "br35h-tumour"
    br35h_split: str = "splits/br35h-tumour.csv"
    brats_dir: str = "brats-mini"
    brats_per_axis: int = 10
    extra_mri: bool = True
    train_kinds: list[str] = field(default_factory=lambda: [
        k for k in non_mri.KINDS if k not in non_mri.HELD_OUT_KINDS])
    held_out_kinds: list[str] = field(default_factory=lambda: list(non_mri.HELD_OUT_KINDS))
    negatives_per_kind: int = 500
    calib_per_kind: int = 60
    held_out_per_kind: int = 150
    epochs: int = 14
    batch_size: int = 128
    lr: float = 0.003
    weight_decay: float = 0.0001
    mri_reject_target: float = 0.002
    max_threshold: float = 0.5
    seed: int = 0
    limit: int = 0


@dataclass
class Examples:
    """Thumbnails with their origin.

    Attributes:
        images: ``(N, 64, 64)`` uint8.
        sources: Dataset (positives) or kind (negatives) per image.
        parts: ``train`` / ``calib`` / ``report`` per image.
        names: File, ``case/modality/axis/index`` or ``kind/index`` per image.
    """

    images: np.ndarray
    sources: list[str]
    parts: list[str]
    names: list[str]

    @classmethod
    def join(cls, items: list[Examples]) -> Examples:
        items = [e for e in items if len(e.images)]
        if not items:
            return cls(np.zeros((0, 64, 64), np.uint8), [], [], [])
        return cls(np.concatenate([e.images for e in items]),
                   [s for e in items for s in e.sources], [p for e in items for p in e.parts],
                   [n for e in items for n in e.names])

    def where(self, part: str, source: str | None = None) -> np.ndarray:
        """Indices of one part (and one source)."""
        return np.array([i for i, (s, p) in enumerate(zip(self.sources, self.parts, strict=True))
                         if p == part and source in (None, s)], dtype=np.int64)


def _files(root: Path, table: SplitTable, part_of: dict[str, str], source: str, limit: int
           ) -> Examples:
    rows: dict[str, list[int]] = {p: [] for p in PARTS}
    # An `excluded` image (the rest of a held-out style cluster) goes with its near-duplicate
    # group, which lies mostly in another part: near-copies stay on one side here too.
    group_split = {g: s for g, s in zip(table.groups, table.splits, strict=True)
                   if s != EXCLUDED_PART}
    for i, split in enumerate(table.splits):
        if split == EXCLUDED_PART:
            split = group_split.get(table.groups[i], PARTS[0])
        rows[part_of[split] if split in part_of else part_of[f"{split}/{table.groups[i] % 2}"]
             ].append(i)
    out = []
    for part, idx in rows.items():
        idx = idx[:limit] if limit else idx
        slices = load_slices([root / table.paths[i] for i in idx], None, PREPARED_SIZE,
                             progress=False)
        names = [str(p.relative_to(root)) for p in slices.paths]
        out.append(Examples(thumbnail(slices.images), [source] * len(names),
                            [part] * len(names), names))
    return Examples.join(out)


def volume_examples(cases: list[tuple[str, Path]], per_axis: int, source: str, part: str,
             min_brain: float = 0.3) -> Examples:
    import nibabel as nib

    images, names = [], []
    for name, path in cases:
        vol = np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj, np.float32)
        for where, gray in volume_slices(vol, per_axis, min_brain):
            images.append(prepare_slice(np.ascontiguousarray(gray), PREPARED_SIZE))
            names.append(f"{name}/{where}")
    thumbs = thumbnail(np.stack(images)) if images else np.zeros((0, 64, 64), np.uint8)
    return Examples(thumbs, [source] * len(names), [part] * len(names), names)


def brats_parts(root: Path) -> dict[str, list[tuple[str, Path]]]:
    """``{part: [(case/modality, volume path)]}``: whole cases per part, in name order: of each
    seven cases four train, one calib, two report."""
    from mrimaster.segmentation.cases import find_cases

    cases = sorted(find_cases(root), key=lambda c: c.name)
    parts: dict[str, list[tuple[str, Path]]] = {p: [] for p in PARTS}
    for i, case in enumerate(cases):
        part = PARTS[0] if i % 7 < 4 else PARTS[1] if i % 7 == 4 else PARTS[2]
        parts[part] += [(f"{case.name}/{m}", p) for m, p in sorted(case.images.items())]
    return parts


def load_positives(data_root: Path, cfg: BrainCheckConfig, parts: tuple[str, ...] = PARTS
                   ) -> Examples:
    """Real brain MRI slices of the shared data (see the module docstring).

    Raises:
        DataError: a dataset or split file is missing.
    """
    out = []
    for name, split, part_of in (
            (cfg.sartaj_dir, cfg.sartaj_split, _SARTAJ_PART),
            (cfg.br35h_dir, cfg.br35h_split, {"report": "report", "fit/0": "train",
                                              "fit/1": "calib"})):
        root = Path(data_root) / name
        if not root.is_dir():
            raise DataError(f"{root} not found", "set MRIMASTER_DATA_ROOT to the shared data")
        table = SplitTable.load(Path(split))
        keep = [i for i, s in enumerate(table.splits)
                if (part_of.get(s) or part_of.get(f"{s}/{table.groups[i] % 2}")) in parts]
        sub = SplitTable([table.paths[i] for i in keep], [table.labels[i] for i in keep],
                         [table.groups[i] for i in keep], [table.splits[i] for i in keep])
        out.append(_files(root, sub, part_of, name, cfg.limit))
    for part, cases in brats_parts(Path(data_root) / cfg.brats_dir).items():
        if part in parts:
            cases = cases[:max(cfg.limit // 8, 1)] if cfg.limit else cases
            out.append(volume_examples(cases, cfg.brats_per_axis, "brats-mini", part))
    if cfg.extra_mri and "report" in parts:
        out.append(extra_mri(cfg.brats_per_axis))
    return Examples.join(out)


def extra_mri(per_axis: int) -> Examples:
    """MRI from installed packages, report only: matplotlib's ``s1045.ima`` head slice and,
    when pydeface is installed, its mean T1 head (scalp and face kept)."""
    import importlib.resources

    mpl = thumbnail(prepare_slice(non_mri.matplotlib_mri_slice(), PREPARED_SIZE)[None])
    out = [Examples(mpl, ["matplotlib-s1045"], ["report"], ["s1045.ima"])]
    try:
        head = Path(str(importlib.resources.files("pydeface") / "data/mean_reg2mean.nii.gz"))
    except ModuleNotFoundError:
        head = None
    if head is not None and head.is_file():
        out.append(volume_examples([("mean_reg2mean", head)], per_axis, "pydeface-mean-head",
                            "report", min_brain=0.5))
    return Examples.join(out)


def load_negatives(cfg: BrainCheckConfig) -> Examples:
    """Generated non-MRI images: training kinds in ``train`` and ``calib`` (another seed),
    held-out kinds in ``report`` only (a third seed)."""
    plan = ([(k, "train", cfg.negatives_per_kind, cfg.seed) for k in cfg.train_kinds]
            + [(k, "calib", cfg.calib_per_kind, cfg.seed + 1) for k in cfg.train_kinds]
            + [(k, "report", cfg.held_out_per_kind, cfg.seed + 2) for k in cfg.held_out_kinds])
    out = []
    for kind, part, n, seed in plan:
        prepared = np.stack([prepare_slice(im, PREPARED_SIZE)
                             for im in non_mri.generate(kind, n, seed)])
        out.append(Examples(thumbnail(prepared), [kind] * n, [part] * n,
                            [f"{kind}/{i}" for i in range(n)]))
    return Examples.join(out)
