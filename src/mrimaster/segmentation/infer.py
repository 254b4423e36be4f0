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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.errors import DataError
from mrimaster.segmentation.brain_mri import check_channels
from mrimaster.segmentation.cases import Case
from mrimaster.segmentation.geometry import voxel_sizes
from mrimaster.segmentation.labels import REGIONS, regions_to_brats2021
from mrimaster.segmentation.outputs import save_mask, save_uncertainty
from mrimaster.segmentation.passes import Passes, run_passes
from mrimaster.segmentation.passes import predict_raw as predict_raw  # re-exported
from mrimaster.segmentation.passes import predict_regions as predict_regions  # re-exported
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


def prepare_inputs(seg: SegModel, case: Case, plan: InputPlan | None = None,
                   scale: Mapping[str, tuple[float, float]] | None = None
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
                                         spacing=seg.spacing, scale=scale), plan
    volume = load_channels_zero_filled(case, list(seg.modalities), spacing=seg.spacing,
                                       scale=scale)
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


def finish_regions(raw: np.ndarray, seg: SegModel, plan: InputPlan) -> np.ndarray:
    """The model's post-processing, then TC / ET emptied where they are not assessable."""
    regions = clean_regions(raw, seg.postprocess)
    for i, name in enumerate(REGIONS):
        if name not in plan.regions:
            regions[i] = False
    return regions


def region_volumes(regions: np.ndarray, voxel_ml: float, plan: InputPlan
                   ) -> dict[str, float | None]:
    """Millilitres per region from ``(3, ...)`` bool masks on the input grid; ``None`` for a
    region that is not assessable."""
    return {name: float(regions[i].sum() * voxel_ml) if name in plan.regions else None
            for i, name in enumerate(REGIONS)}


def trust_decision(seg: SegModel, passes: Passes, problems: list[str]) -> dict[str, Any]:
    """``status`` (``ok``/``refer``), ``reason`` and ``trust`` (the rule and the figures) for
    ``volumes.json``: the model's fitted rule (:mod:`mrimaster.segmentation.case_trust`) on the
    passes' figures, and a refer for any sequence problem (an inconsistent study). A model
    without a rule and a study without problems get no status (an older model's results read
    as before)."""
    rule = getattr(seg, "trust", None)
    out: dict[str, Any] = {"trust": {"features": passes.features,
                                     "rule": rule.describe() if rule else None}}
    reasons = []
    if rule is not None:
        status, why = rule.decide(passes.features)
        if status == "refer":
            reasons.append(why)
    reasons += [f"sequence check: {p}" for p in problems]
    if rule is not None or reasons:
        out.update(status="refer" if reasons else "ok", reason="; ".join(reasons))
    return out


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
        status: The trust decision (``ok``, ``refer``; ``None`` for a model without a rule).
        reason: Why ``refer``.
    """

    seg_path: Path
    volumes_ml: dict[str, float | None]
    plan: InputPlan
    notes: list[str]
    pictures: list[Path]
    status: str | None = None
    reason: str = ""

    @property
    def missing(self) -> list[str]:
        return self.plan.missing


def segment_case(seg: SegModel, case: Case, out_dir: Path, tta: bool = False,
                 checks: dict[str, SequenceCheck] | None = None,
                 scale: Mapping[str, tuple[float, float]] | None = None) -> SegmentResult:
    """Segment ``case`` and write into ``out_dir``: the mask on the input grid
    (``seg.nii.gz``, BraTS 2021 labels; without T1-Gd ``wt.nii.gz``, 1 = whole tumour; the
    convention also in the header's ``descrip``: :mod:`mrimaster.segmentation.outputs`),
    ``volumes.json`` (mL per region, the mask file and its convention, what was used, ignored
    and not assessable, every sequence's checks, the input grid, and ``uncertainty``:
    :func:`mrimaster.segmentation.passes.run_passes`: the passes' or the ensemble members'
    disagreement, written per voxel as ``uncertainty.nii.gz``), the trust decision
    (:func:`trust_decision`: ``status``, ``reason``, ``trust``) and overlay PNGs of the
    modalities used.

    Every sequence the case has, used or not, is checked against the reference
    (:func:`mrimaster.segmentation.sequence_checks.check_sequences`) unless ``checks`` are
    given (a study the imaging stage registered: its registration's verdicts). A used sequence
    with a problem is refused; an unused one is reported by name (``sequences``,
    ``sequence_problems`` and the warnings).

    ``scale``: per modality, the intensity ``(mean, standard deviation)`` to z-score with
    instead of the case's own (:func:`mrimaster.segmentation.volumes.load_volume`).

    Raises:
        DataError: as :func:`prepare_inputs`; a used sequence off the reference's grid or
            head; a used sequence that does not look like a brain MRI
            (:func:`mrimaster.segmentation.brain_mri.check_channels`). Nothing is written
            then.
    """
    from mrimaster.segmentation.figures import save_overlays

    plan = plan_inputs(seg, case)
    problems: list[str] = []
    left_out: list[str] = []
    registered = checks is not None
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
        # ... and refer as any sequence problem does: a series of the study that could not be
        # registered or is not a brain MRI may be another patient's (a mix-up to look at)
        left_out = problems_of({m: c for m, c in checks.items()
                                if str(c.problem).startswith("left out")}, case.name)
    volume, plan = prepare_inputs(seg, case, plan, scale)
    # a registered study's sequences were checked as imported (segment_study), before stripping
    brain_mri = ({"run": seg.brain_check is not None,
                  "on": "each series as imported (study.sequences)"}
                 if registered else check_channels(seg, volume, plan.used, case.name))
    volume.notes = [*seg.notes, *volume.notes, *problems]
    work_voxels = float(np.prod(volume.work_shape or volume.canonical_shape))
    work_voxel_ml = volume.voxel_ml * float(np.prod(volume.canonical_shape)) / work_voxels
    passes = run_passes(seg, volume.image, work_voxel_ml, tta)
    regions = finish_regions(passes.raw, seg, plan)
    whole_only = "TC" not in plan.regions
    labels = regions[0].astype(np.uint8) if whole_only else regions_to_brats2021(regions)
    out_dir.mkdir(parents=True, exist_ok=True)
    convention = "wt" if whole_only else "brats2021"
    seg_path = save_mask(restore_to_input_grid(labels, volume), out_dir, convention)
    uncertainty_path = save_uncertainty(passes.voxel_map, volume, out_dir)
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
        "postprocess": seg.postprocess, "uncertainty": passes.uncertainty,
        "uncertainty_file": uncertainty_path.name, "brain_mri_check": brain_mri,
        "ensemble": {"members": passes.members, "runtime": seg.runtime_name}
        if passes.members > 1 else None,
        **trust_decision(seg, passes, problems + left_out)}
    (out_dir / "volumes.json").write_text(json.dumps(info, indent=2))
    pictures = save_overlays(volume, regions, out_dir, case.name, plan.used, whole_only)
    return SegmentResult(seg_path, vols, plan, volume.notes, pictures, info.get("status"),
                         info.get("reason", ""))
