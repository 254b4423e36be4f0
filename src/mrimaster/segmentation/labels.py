"""The one module where BraTS-style label conventions are converted.

Evaluation regions (BraTS): whole tumour (WT, every tumour label), tumour core (TC, WT without
edema) and enhancing tumour (ET). Output label maps use the BraTS 2017-2021 convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrimaster.errors import DataError

REGIONS: tuple[str, ...] = ("WT", "TC", "ET")


@dataclass(frozen=True)
class LabelConvention:
    """Which label values make up each region; ``None`` where the data cannot tell a region.

    Attributes:
        name: Short name.
        description: The labels' meaning.
        regions: ``{region: label values}``; a region missing here is unknown in this data.
    """

    name: str
    description: str
    regions: dict[str, frozenset[int]]

    @property
    def values(self) -> frozenset[int]:
        return frozenset().union(*self.regions.values()) | {0}


CONVENTIONS: dict[str, LabelConvention] = {
    "brats2015": LabelConvention(
        "brats2015", "BraTS 2013-2015: 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing",
        {"WT": frozenset({1, 2, 3, 4}), "TC": frozenset({1, 3, 4}), "ET": frozenset({4})}),
    "brats2021": LabelConvention(
        "brats2021", "BraTS 2017-2021: 1 NCR/NET, 2 edema, 4 enhancing",
        {"WT": frozenset({1, 2, 4}), "TC": frozenset({1, 4}), "ET": frozenset({4})}),
    "msd": LabelConvention(
        "msd", "Medical Segmentation Decathlon Task01: 1 edema, 2 non-enhancing, 3 enhancing",
        {"WT": frozenset({1, 2, 3}), "TC": frozenset({2, 3}), "ET": frozenset({3})}),
    "brats2023": LabelConvention(
        "brats2023", "BraTS 2023+: 1 NCR, 2 edema, 3 enhancing",
        {"WT": frozenset({1, 2, 3}), "TC": frozenset({1, 3}), "ET": frozenset({3})}),
    "wt": LabelConvention("wt", "whole-tumour mask only: 1 tumour", {"WT": frozenset({1})}),
}


def get_convention(name: str) -> LabelConvention:
    if name not in CONVENTIONS:
        raise DataError(f"unknown label convention {name!r}",
                        f"choose one of: {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


def to_regions(labels: np.ndarray, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Label map -> region masks.

    Args:
        labels: ``(D, H, W)`` integer-valued label map (any numeric dtype).
        convention: Key of :data:`CONVENTIONS`.

    Returns:
        ``(regions, known)``: ``(3, D, H, W)`` bool masks in :data:`REGIONS` order, and ``(3,)``
        bool telling which regions this convention defines (others are all False, unknown).

    Raises:
        DataError: the map holds values the convention does not define.
    """
    conv = get_convention(convention)
    values = np.unique(labels)
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise DataError("label map holds non-integer values", "is this a label map?")
    unexpected = sorted(set(values.astype(int).tolist()) - conv.values)
    if unexpected:
        raise DataError(f"label values {unexpected} are not part of the {conv.name} convention "
                        f"({conv.description})", "pass the right --labels convention")
    lab = labels.astype(np.int16)
    regions = np.zeros((3, *labels.shape), dtype=bool)
    known = np.zeros(3, dtype=bool)
    for i, name in enumerate(REGIONS):
        if name in conv.regions:
            regions[i] = np.isin(lab, list(conv.regions[name]))
            known[i] = True
    return regions, known


def regions_to_brats2021(regions: np.ndarray) -> np.ndarray:
    """``(3, D, H, W)`` bool WT/TC/ET masks -> ``(D, H, W)`` uint8 BraTS 2021 labels.

    The hierarchy is enforced (ET inside TC inside WT): ET -> 4, rest of TC -> 1 (NCR/NET),
    rest of WT -> 2 (edema).
    """
    et = regions[2]
    tc = regions[1] | et
    wt = regions[0] | tc
    out = np.zeros(regions.shape[1:], dtype=np.uint8)
    out[wt] = 2
    out[tc] = 1
    out[et] = 4
    return out


MASK_FILES: dict[str, str] = {"brats2021": "seg.nii.gz", "wt": "wt.nii.gz"}
"""The file a segmentation result writes per output convention: BraTS 2021 labels in
``seg.nii.gz`` (the name BraTS tools expect), a whole-tumour-only mask in ``wt.nii.gz`` (1 =
whole tumour), a name no reader takes for BraTS labels, where label 1 is the necrotic core."""

MASK_DESCRIPTIONS: dict[str, str] = {
    "brats2021": "MRIMaster BraTS 2021 labels: 1 NCR/NET, 2 edema, 4 enhancing",
    "wt": "MRIMaster whole tumour only: 1 = whole tumour (not BraTS labels)",
}
"""The NIfTI header's ``descrip`` (at most 80 characters) of each output convention."""


def mask_file_name(convention: str) -> str:
    """The result's mask file name for an output ``convention`` (:data:`MASK_FILES`).

    Raises:
        DataError: a convention results are not written in.
    """
    if convention not in MASK_FILES:
        raise DataError(f"results are not written in the {convention!r} convention",
                        f"use one of: {', '.join(MASK_FILES)}")
    return MASK_FILES[convention]
