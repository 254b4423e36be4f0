"""Segment a real study: the imaging stage, the network, and the results on the reference grid.

:func:`segment_study` runs :func:`mrimaster.imaging.prepare.prepare_study` (import, roles,
registration, skull stripping), :func:`mrimaster.segmentation.infer.segment_case` on the
prepared working grid, then writes what a doctor's tools read:

- ``seg.nii.gz`` (BraTS 2021 labels) or, without T1-Gd, ``wt.nii.gz`` (1 = whole tumour): the
  mask on the reference sequence's own grid (nearest neighbour from the working grid), the grid
  of the series a viewer shows, its convention in ``descrip``
  (:mod:`mrimaster.segmentation.outputs`);
- ``seg.dcm`` (DICOM input only): a DICOM Segmentation of the reference series
  (:mod:`mrimaster.imaging.dicom_seg`);
- ``brain_mask.nii.gz``: the brain mask on the reference grid;
- ``registration_<role>.png`` and ``brain_mask.png``: checks a doctor judges at a glance;
- ``volumes.json``: the volumes (mL, measured on the working grid) and, under ``study``, the
  series found with their roles and why, the registration figures, the stripping decision and
  the time of each step; ``sequences``: each sequence's checks, here the registration's verdict
  (:func:`mrimaster.segmentation.sequence_checks.from_registration`: a sequence whose
  registration was refused is left out and named in ``sequence_problems``);
- ``series.json`` (DICOM input): every series of the study, as ``mrimaster dicom import``
  writes it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mrimaster.imaging.prepare import PrepareConfig, PreparedStudy, Progress, prepare_study
from mrimaster.imaging.register import from_sitk, to_sitk
from mrimaster.segmentation.brain_mri import check_image
from mrimaster.segmentation.infer import SegmentResult, segment_case
from mrimaster.segmentation.outputs import UNCERTAINTY_FILE, UNCERTAINTY_SCALE, save_mask
from mrimaster.segmentation.runtime import SegModel
from mrimaster.segmentation.sequence_checks import (
    SequenceCheck,
    from_registration,
    head_figures,
)
from mrimaster.segmentation.volumes import load_nifti


@dataclass
class StudyResult:
    """What :func:`segment_study` wrote.

    Attributes:
        result: The segmentation (``seg_path``, the mask, is on the reference grid).
        prepared: The imaging stage's result (its report is in ``volumes.json``).
        dicom_seg: ``seg.dcm`` for DICOM input, else ``None``.
        timings_s: Seconds per step: import, registration, skull_strip, segmentation,
            outputs, total.
    """

    result: SegmentResult
    prepared: PreparedStudy
    dicom_seg: Path | None
    timings_s: dict[str, float]


def onto_reference(labels: nib.Nifti1Image, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """A label map (working grid) resampled nearest-neighbour onto ``reference``'s grid,
    uint8."""
    moved = sitk.Resample(to_sitk(labels, np.uint8), to_sitk(reference), sitk.Transform(),
                          sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    out = from_sitk(moved, np.uint8)
    out.set_data_dtype(np.uint8)
    return out


def segment_study(seg: SegModel, source: Path | dict[str, Path], out_dir: Path,
                  config: PrepareConfig | None = None, tta: bool = False,
                  model_version: str = "unknown", work: Path | None = None,
                  progress: Progress | None = None, keep_registered: bool = False
                  ) -> StudyResult:
    """Import, register, strip and segment ``source`` into ``out_dir`` (see the module
    docstring).

    Args:
        seg: The loaded segmentation model.
        source: A DICOM folder or zip, a NIfTI case folder, or ``{role: NIfTI path}``.
        out_dir: The run folder to write.
        config: The imaging stage's settings.
        tta: Test-time augmentation (the 8 mirrorings).
        model_version: Recorded in ``seg.dcm``'s algorithm identification.
        work: Scratch folder (a temporary one by default, removed afterwards).
        progress: Told each step as it starts, with the fraction done (0-1).
        keep_registered: Also write ``registered_<role>.nii.gz``: every sequence used,
            registered and resampled (linearly) onto the reference grid, as the network saw
            it (skull-stripped when it was stripped): for viewers and training exports.

    Raises:
        DataError, RegistrationError: as :func:`prepare_study` and :func:`segment_case`;
            nothing is written into ``out_dir`` then.
    """
    from mrimaster.imaging.figures import brain_mask_figure, registration_figures

    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mrimaster-study-", dir=work) as tmp:
        scratch = Path(tmp)
        tell = progress or (lambda _done, _what: None)
        prepared = prepare_study(source, scratch / "prepare", config,
                                 accept=lambda roles: _accept(seg, roles),
                                 progress=lambda done, what: tell(0.6 * done, what),
                                 vet=lambda what, image: check_image(seg, what, image))
        tell(0.6, "segmenting (U-Net, sliding window)")
        start = time.perf_counter()
        result = segment_case(seg, prepared.case, scratch / "seg", tta, _checks(prepared))
        segmentation_s = time.perf_counter() - start

        start = time.perf_counter()
        tell(0.9, "writing the mask, the DICOM segmentation and the pictures")
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in (scratch / "seg").iterdir():
            shutil.move(str(item), out_dir / item.name)
        ref = prepared.reference_image
        info: dict[str, Any] = json.loads((out_dir / "volumes.json").read_text())
        labels = onto_reference(load_nifti(out_dir / result.seg_path.name), ref)
        result.seg_path = save_mask(labels, out_dir, info["label_convention"])
        _uncertainty_onto_reference(out_dir / UNCERTAINTY_FILE, ref)
        mask = onto_reference(load_nifti(prepared.brain_mask), ref)
        nib.save(mask, str(out_dir / "brain_mask.nii.gz"))
        series_json = scratch / "prepare" / "import" / "series.json"
        if series_json.exists():
            shutil.copyfile(series_json, out_dir / "series.json")
        dicom_seg = None
        if prepared.source_files:
            from mrimaster.imaging.dicom_seg import write_dicom_seg

            dicom_seg = write_dicom_seg(labels, prepared.source_files, out_dir / "seg.dcm",
                                        convention=info["label_convention"],
                                        algorithm_version=model_version)
        case_images = {role: load_nifti(p) for role, p in prepared.case.images.items()}
        if keep_registered:
            for role, img in case_images.items():
                moved = sitk.Resample(to_sitk(img), to_sitk(ref), sitk.Transform(),
                                      sitk.sitkLinear, 0.0, sitk.sitkFloat32)
                nib.save(from_sitk(moved), str(out_dir / f"registered_{role}.nii.gz"))
        pictures = registration_figures(case_images, prepared.reference.role, out_dir)
        pictures.append(brain_mask_figure(case_images[prepared.reference.role],
                                          load_nifti(prepared.brain_mask), out_dir))
        outputs_s = time.perf_counter() - start
    timings = {**prepared.report["timings_s"], "segmentation": round(segmentation_s, 2),
               "outputs": round(outputs_s, 2),
               "total": round(time.perf_counter() - begin, 2)}
    grid = prepared.report["working_grid"]
    info["case"] = prepared.case.name
    info["input_grid"] = {"spacing_mm": prepared.report["reference"]["spacing_mm"],
                          "shape": prepared.report["reference"]["shape"],
                          "resampled_to_mm": grid["spacing_mm"] if grid["resampled"] else
                          info["input_grid"].get("resampled_to_mm")}
    info["warnings"] = [*prepared.report["warnings"], *info.get("warnings", [])]
    result.notes = list(info["warnings"])
    info["study"] = {**{k: v for k, v in prepared.report.items() if k != "timings_s"},
                     "timings_s": timings, "outputs": sorted(
                         p.name for p in [result.seg_path, *pictures,
                                          *([dicom_seg] if dicom_seg else [])])}
    (out_dir / "volumes.json").write_text(json.dumps(info, indent=2, default=float) + "\n")
    result.pictures = sorted(out_dir.glob("*.png"))
    return StudyResult(result, prepared, dicom_seg, timings)


def _uncertainty_onto_reference(path: Path, reference: nib.Nifti1Image) -> None:
    """Move the uncertainty map (uint8, scaled) onto the reference grid as the mask is moved
    (nearest-neighbour), keeping its scaling; nothing when there is none."""
    if not path.is_file():
        return
    stored = nib.load(str(path))
    assert isinstance(stored, nib.Nifti1Image)
    raw = nib.Nifti1Image(np.asarray(stored.dataobj.get_unscaled()),  # type: ignore[attr-defined]
                          stored.affine)
    moved = onto_reference(raw, reference)
    moved.header.set_slope_inter(1.0 / UNCERTAINTY_SCALE, 0)
    moved.header["descrip"] = stored.header["descrip"]
    nib.save(moved, str(path))


def _checks(prepared: PreparedStudy) -> dict[str, SequenceCheck]:
    """Every sequence's checks: the registration's verdicts, and the mirror test on the
    working grid after it (:func:`mrimaster.segmentation.sequence_checks.from_registration`)."""
    images = prepared.case.images
    ref = prepared.reference.role
    reference = load_nifti(images[ref])
    after = {role: head_figures(reference, load_nifti(path))
             for role, path in images.items() if role != ref}
    return from_registration(prepared.report["sequences"], ref, after)


def _accept(seg: SegModel, roles: list[str]) -> None:
    """Raise when the model cannot segment a study with these roles (before any
    registration)."""
    from mrimaster.segmentation.cases import Case
    from mrimaster.segmentation.infer import plan_inputs

    quiet = logging.getLogger("mrimaster.segmentation.infer")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # segment_case says the same warnings later
    try:
        plan_inputs(seg, Case("the study", {r: Path(r) for r in roles}))
    finally:
        quiet.setLevel(level)
