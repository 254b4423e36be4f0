"""Segment a case: choose the inputs, sliding-window inference, label map on the input grid,
volumes, overlays.

No torch or MONAI here: the model runs in whichever runtime it was loaded for
(:mod:`mrimaster.segmentation.runtime`).

Inputs (:func:`plan_inputs`): the network is fed only a combination of modalities that it was
trained on (a training combination or, with modality dropout, part of one), the largest that
the case has, preferring one with T1-Gd. Modalities the case has but the network does not get
are reported with the reason; so are modalities the model's cross-validation found to lower
the Dice (its ``excluded``), which are not fed. Without T1-Gd the tumour core and enhancing
tumour cannot be told apart from the rest of the tumour (they are defined by contrast
enhancement): only the whole tumour is written, and the outputs say "not assessable without
T1-Gd".
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.errors import DataError
from mrimaster.segmentation.cases import Case
from mrimaster.segmentation.geometry import voxel_sizes
from mrimaster.segmentation.labels import REGIONS, regions_to_brats2021
from mrimaster.segmentation.outputs import save_mask
from mrimaster.segmentation.postprocess import clean_regions
from mrimaster.segmentation.runtime import SegModel
from mrimaster.segmentation.sequence_checks import (
    SequenceCheck,
    check_sequences,
    problems_of,
    refuse_used,
)
from mrimaster.segmentation.volumes import (
    Volume,
    load_channels_zero_filled,
    restore_to_input_grid,
    to_canonical_grid,
)

log = logging.getLogger(__name__)

NOT_ASSESSABLE = "not assessable without T1-Gd"
"""What the outputs say for tumour core and enhancing tumour when T1-Gd is missing."""


@dataclass
class InputPlan:
    """Which modalities the network gets for a case, and why not the others.

    Attributes:
        used: Modalities fed to the network (the model's other channels are zero).
        missing: Modalities the model takes that the case lacks.
        ignored: ``{modality: reason}`` for volumes the case has that are not used.
        regions: Regions the output includes: WT always, TC and ET only with T1-Gd.
    """

    used: list[str]
    missing: list[str]
    ignored: dict[str, str] = field(default_factory=dict)
    regions: list[str] = field(default_factory=lambda: list(REGIONS))

    @property
    def not_assessable(self) -> dict[str, str]:
        return {r: NOT_ASSESSABLE for r in REGIONS if r not in self.regions}


def _allowed_sets(seg: SegModel) -> list[tuple[str, ...]]:
    """Modality sets the network was trained on (with dropout: every non-empty part of a
    training combination); empty when the model does not record its combinations."""
    sets: set[tuple[str, ...]] = set()
    for combo in seg.combinations:
        if seg.modality_dropout:
            for k in range(1, len(combo) + 1):
                sets.update(itertools.combinations(combo, k))
        else:
            sets.add(tuple(combo))
    return sorted(sets)


def plan_inputs(seg: SegModel, case: Case) -> InputPlan:
    """Choose the modalities the network gets for ``case`` (see the module docstring).

    Raises:
        DataError: the case has none of the model's modalities, or no combination the model
            was trained on (the message lists what it has and what the model needs).
    """
    have = case.available()
    takes = [m for m in seg.modalities if m in have]
    usable = [m for m in takes if m not in seg.excluded] or takes
    missing = [m for m in seg.modalities if m not in have]
    ignored = {m: "the model does not take it" for m in have if m not in seg.modalities}
    ignored.update({m: seg.excluded[m] for m in takes if m not in usable})
    trained = {m for combo in seg.combinations for m in combo}
    allowed = [s for s in _allowed_sets(seg) if set(s) <= set(usable)]
    if not usable or (seg.combinations and not allowed):
        needs = " or ".join("+".join(c) for c in seg.combinations) or ", ".join(seg.modalities)
        raise DataError(f"case {case.name} has {', '.join(have) or 'no recognised volume'}; "
                        f"the model needs {needs}",
                        "add the missing volumes (name them as in the README) or pass them "
                        "with --flair/--t1/--t1ce/--t2")
    if not seg.combinations:  # older model files: every combination, as trained with dropout
        if missing and not seg.modality_dropout:
            raise DataError(f"case {case.name} lacks {', '.join(missing)}, which this model "
                            "needs", f"the model takes {', '.join(seg.modalities)}")
        used = usable
    else:
        best = max(allowed, key=lambda s: ("t1ce" in s, len(s), [-usable.index(m) for m in s]))
        used = [m for m in seg.modalities if m in best]
        for m in usable:
            if m not in used:
                ignored[m] = ("no training case had it, so the network never learnt to read it"
                              if m not in trained else
                              f"never seen together with {'+'.join(used)} in training")
    regions = list(REGIONS) if "t1ce" in used else ["WT"]
    plan = InputPlan(used, missing, ignored, regions)
    if missing:
        log.warning("case %s lacks %s: segmenting without it", case.name, ", ".join(missing))
    for m, why in ignored.items():
        log.warning("case %s: %s not used (%s)", case.name, m, why)
    if "t1ce" not in used:
        log.warning("case %s: no T1-Gd, so tumour core and enhancing tumour are %s; only the "
                    "whole tumour is segmented", case.name, NOT_ASSESSABLE)
    return plan


def prepare_inputs(seg: SegModel, case: Case, plan: InputPlan | None = None
                   ) -> tuple[Volume, InputPlan]:
    """Plan the inputs (:func:`plan_inputs`, unless ``plan`` is given) and load them: channels
    in the model's order, the unused ones zero, resampled to the model's spacing.

    Raises:
        DataError: as :func:`plan_inputs` and
            :func:`mrimaster.segmentation.volumes.load_volume`.
    """
    plan = plan or plan_inputs(seg, case)
    if case.image4d is None:
        return load_channels_zero_filled(case_subset(case, plan.used), list(seg.modalities),
                                         spacing=seg.spacing), plan
    volume = load_channels_zero_filled(case, list(seg.modalities), spacing=seg.spacing)
    for c, m in enumerate(seg.modalities):  # one 4D file: blank the channels not used
        if m not in plan.used:
            volume.image[c] = 0
    return volume, plan


def case_subset(case: Case, modalities: list[str]) -> Case:
    """``case`` with only ``modalities`` (for checking what a model does without the rest)."""
    if case.image4d is not None:
        raise DataError("cannot take modalities out of a 4D (MSD) case",
                        "split it into one file per modality")
    return replace(case, images={m: p for m, p in case.images.items() if m in modalities})


MIRRORS: tuple[tuple[int, ...], ...] = tuple(
    axes for k in range(4) for axes in itertools.combinations((1, 2, 3), k))
"""Test-time augmentation: the image as it is and mirrored along every combination of the
three spatial axes (8 passes, as nnU-Net)."""


def predict_raw(seg: SegModel, image: np.ndarray, tta: bool = False) -> np.ndarray:
    """``(C, D, H, W)`` float32 -> ``(3, D, H, W)`` bool WT/TC/ET before any clean-up.

    With ``tta``, the sigmoid probabilities of the :data:`MIRRORS` passes are averaged (each
    mirrored back) and thresholded at 0.5.
    """
    if not tta:
        return seg.logits(image) > 0
    total = np.zeros((3, *image.shape[1:]), np.float32)
    for axes in MIRRORS:
        x = np.flip(image, axes) if axes else image
        logits = seg.logits(np.ascontiguousarray(x))
        prob = 1.0 / (1.0 + np.exp(-logits))
        total += np.flip(prob, axes) if axes else prob
    return total / len(MIRRORS) > 0.5


LEFT_RIGHT: tuple[int, ...] = (1,)
"""The left-right axis of the network's input (canonical RAS: the first spatial axis)."""

UNCERTAINTY_2_PASSES = "test-time mirroring disagreement (2 passes)"
UNCERTAINTY_8_PASSES = "test-time mirroring disagreement (8 passes)"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def mirroring_disagreement(passes: list[np.ndarray], voxel_ml: float, method: str
                           ) -> dict[str, Any]:
    """How much test-time passes disagree on the whole tumour (an uncertainty figure for the
    worklist until the segmentation has a calibrated one).

    Args:
        passes: Two or more ``(D, H, W)`` bool whole-tumour masks, one per pass (each mirrored
            back onto the same grid).
        voxel_ml: Volume of one voxel of these masks in millilitres.
        method: What the passes were (written as ``method``).

    Returns:
        ``{"method", "wt_dice_between_passes", "wt_volume_change_ml", "score"}``: the mean
        Dice over every pair of passes (two masks that are both empty agree: 1), the largest
        minus the smallest pass's whole-tumour volume, and ``score = 1 - Dice`` (0: the passes
        agree, 1: they share no voxel).
    """
    if len(passes) < 2:
        raise ValueError("the disagreement needs at least two passes")
    pairs = [_dice(a, b) for a, b in itertools.combinations(passes, 2)]
    d = float(np.mean(pairs))
    vols = [float(p.sum()) * voxel_ml for p in passes]
    return {"method": method, "wt_dice_between_passes": round(d, 4),
            "wt_volume_change_ml": round(max(vols) - min(vols), 3),
            "score": round(1.0 - d, 4)}


def predict_with_disagreement(seg: SegModel, image: np.ndarray, voxel_ml: float,
                              tta: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`predict_raw` (the same mask) and :func:`mirroring_disagreement` of its passes.

    Without ``tta`` the network runs once more, on the image mirrored left-right; that pass
    only measures (the mask is the plain pass's). With ``tta`` the 8 :data:`MIRRORS` passes
    that :func:`predict_raw` averages are compared (each pass thresholded at 0.5), at no
    extra cost.
    """
    if not tta:
        raw = seg.logits(image) > 0
        flipped = seg.logits(np.ascontiguousarray(np.flip(image, LEFT_RIGHT)))
        extra = np.flip(flipped[0] > 0, LEFT_RIGHT[0] - 1)
        return raw, mirroring_disagreement([raw[0], extra], voxel_ml, UNCERTAINTY_2_PASSES)
    total = np.zeros((3, *image.shape[1:]), np.float32)
    passes = []
    for axes in MIRRORS:
        x = np.flip(image, axes) if axes else image
        logits = seg.logits(np.ascontiguousarray(x))
        prob = 1.0 / (1.0 + np.exp(-logits))
        prob = np.flip(prob, axes) if axes else prob
        total += prob
        passes.append(prob[0] > 0.5)
    raw = total / len(MIRRORS) > 0.5
    return raw, mirroring_disagreement(passes, voxel_ml, UNCERTAINTY_8_PASSES)


def finish_regions(raw: np.ndarray, seg: SegModel, plan: InputPlan) -> np.ndarray:
    """The model's post-processing, then TC / ET emptied where they are not assessable."""
    regions = clean_regions(raw, seg.postprocess)
    for i, name in enumerate(REGIONS):
        if name not in plan.regions:
            regions[i] = False
    return regions


def predict_regions(seg: SegModel, image: np.ndarray) -> np.ndarray:
    """``(C, D, H, W)`` float32 -> ``(3, D, H, W)`` bool WT/TC/ET, the model's post-processing
    applied (hierarchy enforced)."""
    return clean_regions(predict_raw(seg, image), seg.postprocess)


def region_volumes(regions: np.ndarray, voxel_ml: float, plan: InputPlan
                   ) -> dict[str, float | None]:
    """Millilitres per region from ``(3, ...)`` bool masks on the input grid; ``None`` for a
    region that is not assessable."""
    return {name: float(regions[i].sum() * voxel_ml) if name in plan.regions else None
            for i, name in enumerate(REGIONS)}


@dataclass
class SegmentResult:
    """What :func:`segment_case` wrote.

    Attributes:
        seg_path: The mask: ``seg.nii.gz`` (BraTS 2021 labels) or, without T1-Gd,
            ``wt.nii.gz`` (1 = whole tumour).
        volumes_ml: mL per region on the input grid; ``None`` where not assessable.
        plan: Inputs used, missing and ignored.
        notes: Warnings about the input grid.
        pictures: Overlay PNGs.
    """

    seg_path: Path
    volumes_ml: dict[str, float | None]
    plan: InputPlan
    notes: list[str]
    pictures: list[Path]

    @property
    def missing(self) -> list[str]:
        return self.plan.missing


def segment_case(seg: SegModel, case: Case, out_dir: Path, tta: bool = False,
                 checks: dict[str, SequenceCheck] | None = None) -> SegmentResult:
    """Segment ``case`` and write into ``out_dir``: the mask on the input grid
    (``seg.nii.gz``, BraTS 2021 labels; without T1-Gd ``wt.nii.gz``, 1 = whole tumour; the
    convention also in the header's ``descrip``: :mod:`mrimaster.segmentation.outputs`),
    ``volumes.json`` (mL per region, the mask file and its convention, what was used, ignored
    and not assessable, every sequence's checks, the input grid, and ``uncertainty``:
    :func:`predict_with_disagreement`, one extra left-right mirrored pass without ``tta``,
    which only measures) and overlay PNGs of the modalities used.

    Every sequence the case has, used or not, is checked against the reference
    (:func:`mrimaster.segmentation.sequence_checks.check_sequences`) unless ``checks`` are
    given (a study the imaging stage registered: its registration's verdicts). A used sequence
    with a problem is refused; an unused one is reported by name (``sequences``,
    ``sequence_problems`` and the warnings).

    Raises:
        DataError: as :func:`prepare_inputs`; a used sequence off the reference's grid or
            head (nothing is written then).
    """
    from mrimaster.segmentation.figures import save_overlays

    plan = plan_inputs(seg, case)
    problems: list[str] = []
    if checks is None:
        checks = check_sequences(case, plan.used)
        refuse_used(checks, case.name)
        problems = problems_of(checks, case.name)
        for line in problems:
            log.warning(line)
    else:  # registered: a used sequence the registration could not undo (a flip) is refused
        for m, check in checks.items():
            check.used = check.grid == "reference" or m in plan.used
        refuse_used({m: c for m, c in checks.items() if c.head.startswith("different")},
                    case.name)
        problems = problems_of({m: c for m, c in checks.items()  # the left out: in warnings
                                if not str(c.problem).startswith("left out")}, case.name)
    volume, plan = prepare_inputs(seg, case, plan)
    volume.notes = [*volume.notes, *problems]
    work_voxels = float(np.prod(volume.work_shape or volume.canonical_shape))
    work_voxel_ml = volume.voxel_ml * float(np.prod(volume.canonical_shape)) / work_voxels
    raw, uncertainty = predict_with_disagreement(seg, volume.image, work_voxel_ml, tta)
    regions = finish_regions(raw, seg, plan)
    whole_only = "TC" not in plan.regions
    labels = regions[0].astype(np.uint8) if whole_only else regions_to_brats2021(regions)
    out_dir.mkdir(parents=True, exist_ok=True)
    convention = "wt" if whole_only else "brats2021"
    seg_path = save_mask(restore_to_input_grid(labels, volume), out_dir, convention)
    vols = region_volumes(to_canonical_grid(regions, volume), volume.voxel_ml, plan)
    info: dict[str, Any] = {
        "case": case.name, "volumes_ml": vols, "not_assessable": plan.not_assessable,
        "labels": ("whole tumour only: 1 tumour (tumour core and enhancing tumour "
                   f"{NOT_ASSESSABLE})" if whole_only else
                   "BraTS 2021: 1 NCR/NET, 2 edema, 4 enhancing"),
        "label_convention": convention, "mask_file": seg_path.name,
        "modalities_used": plan.used, "modalities_missing": plan.missing,
        "modalities_ignored": plan.ignored,
        "sequences": {m: c.as_json() for m, c in checks.items()},
        "sequence_problems": [f"{m}: {c.problem}" for m, c in checks.items() if c.problem],
        "input_grid": {"spacing_mm": [float(z) for z in voxel_sizes(volume.reference)],
                       "resampled_to_mm": list(seg.spacing) if volume.resampled else None},
        "warnings": volume.notes, "runtime": seg.runtime_name, "tta": tta,
        "postprocess": seg.postprocess, "uncertainty": uncertainty}
    (out_dir / "volumes.json").write_text(json.dumps(info, indent=2))
    pictures = save_overlays(volume, regions, out_dir, case.name, plan.used, whole_only)
    return SegmentResult(seg_path, vols, plan, volume.notes, pictures)
