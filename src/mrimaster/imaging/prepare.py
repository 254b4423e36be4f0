"""Study in, model-ready case out: the imaging stage's one entry point.

:func:`prepare_study` takes what a user has (a DICOM folder or zip as the scanner wrote it, a
folder of NIfTI volumes, or explicit NIfTI files per role) and returns a case whose volumes all
lie on one **working grid**, skull-stripped when they were not, with a report of every decision:

1. **Inputs** (:func:`mrimaster.imaging.inputs.gather`): DICOM goes through
   :func:`mrimaster.imaging.dicom_import.import_study` (one NIfTI per series, roles from
   acquisition attributes); a doctor's role corrections (``overrides``) replace the
   detector's. Series that are not structural are listed, never used. When two series have
   one role, the one with the smaller voxels is used and the other listed with the reason.
   All used series must belong to one patient and one study.
2. **Reference** (:data:`~mrimaster.imaging.series_choice.REFERENCE_ORDER`): T1-Gd when
   present, else FLAIR (the issue's rule: the post-contrast T1 is usually the study's finest
   3D series). A study without FLAIR is refused: every model the project trains takes FLAIR.
   Each chosen sequence then has its coil bias field divided out on its own grid
   (:mod:`mrimaster.imaging.bias`, N4 with a coarse field; ``bias="none"`` turns it off).
3. **Working grid** (:func:`working_grid`): the reference's orientation and field of view at
   the model's spacing along any axis whose spacing differs from it by more than 5 % (a 4 mm
   FLAIR becomes 1 mm slices; a 1 mm T1-Gd is kept as it is), so sequences finer than the
   reference keep their detail. The mask is brought back onto the reference's own grid at the
   end (nearest neighbour), which is the grid the doctor's viewer shows.
4. **Registration** (:func:`align`): every other sequence is registered rigidly onto the
   reference by Mattes mutual information (:func:`mrimaster.imaging.register.register`,
   6 degrees of freedom) and resampled onto the working grid through the found transform. A
   sequence already on the reference's grid is not moved, but its agreement is measured the
   same way (normalised mutual information, overlap) and refused by the same rule. A
   sequence the rule refuses is never used: a refused FLAIR (every model needs it) stops the
   study with its reason; any other is left out, and the outputs say which and why.
5. **Skull stripping** (:func:`~mrimaster.imaging.skullstrip.strip_study`): decided on the
   T1 (the contrast deepbet was trained on) when there is one, else on the reference; if it
   is not stripped, deepbet strips that volume. An already stripped study's brain is the
   reference's non-background on its own grid, brought onto the working grid
   nearest-neighbour (:func:`~mrimaster.imaging.skullstrip.stripped_region`). Every volume
   is set to 0 outside the brain mask (not with ``strip="never"``).

Everything is written into ``work``: ``case/<role>.nii`` (float32, working grid),
``brain_mask.nii`` (uint8, working grid), ``prepare.json`` (the report); DICOM input also
``import/`` (``series.json`` and one NIfTI per series). The working files are uncompressed:
they are scratch that the next step reads three times (the sequence checks, the network's
inputs, the pictures), and gzip costs more than the disk (about 0.6 s a study, measured on 2
cores; the results a doctor keeps are compressed).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mrimaster.imaging.bias import correct_bias
from mrimaster.imaging.inputs import ROLE_NAMES, Sequence, gather, load3d
from mrimaster.imaging.register import (
    RegistrationError,
    from_sitk,
    register,
    sitk_affine,
    to_sitk,
)
from mrimaster.imaging.registration_quality import MIN_NMI, measure
from mrimaster.imaging.series_choice import choose_reference, vet_sequences
from mrimaster.imaging.skullstrip import strip_study
from mrimaster.segmentation.cases import MODALITIES, Case
from mrimaster.segmentation.geometry import same_grid, voxel_sizes, warn_if_unusual

log = logging.getLogger(__name__)

SPACING_TOLERANCE = 0.05
"""Relative spacing difference under which a reference axis keeps its spacing."""


@dataclass
class PrepareConfig:
    """Settings of the imaging stage.

    Attributes:
        spacing_mm: The model's training spacing (mm); the working grid's spacing along the
            reference's axes whose spacing differs from it.
        strip: ``auto`` (strip when the reference is not already stripped), ``always`` or
            ``never``.
        overrides: Role corrections: ``{series: role or None}``, the series named by its
            ``nifti`` file name in ``series.json`` or its series number (DICOM input only).
        max_translation_mm: Largest accepted displacement between sequences (``None``: no
            limit, for files whose world coordinates were lost).
        bias: ``n4`` (every sequence's coil bias field removed on its own grid, before the
            registration: :mod:`mrimaster.imaging.bias`) or ``none``.
    """

    spacing_mm: float = 1.0
    strip: Literal["auto", "always", "never"] = "auto"
    overrides: dict[str, str | None] = field(default_factory=dict)
    max_translation_mm: float | None = 40.0
    bias: Literal["n4", "none"] = "n4"


@dataclass
class PreparedStudy:
    """What :func:`prepare_study` made.

    Attributes:
        case: The prepared volumes (working grid), named by role.
        reference: The reference sequence.
        reference_image: The reference on its own grid (the output mask's grid).
        brain_mask: ``brain_mask.nii`` on the working grid.
        report: ``prepare.json``'s content: ``series``, ``reference``, ``working_grid``,
            ``sequences`` (per role: registration figures), ``skull_strip``, ``timings_s``.
        source_files: The reference series' DICOM files (DICOM input), else ``None``.
    """

    case: Case
    reference: Sequence
    reference_image: nib.Nifti1Image
    brain_mask: Path
    report: dict[str, Any]
    source_files: list[Path] | None = None


# ---------------------------------------------------------------- geometry

def working_grid(reference: nib.Nifti1Image, spacing_mm: float) -> tuple[tuple[int, int, int],
                                                                         np.ndarray]:
    """The working grid: ``reference``'s axes and field of view, at ``spacing_mm`` along each
    axis whose spacing differs from it by more than :data:`SPACING_TOLERANCE`.

    Returns:
        ``(shape, affine)``: voxel counts and the RAS+ ``(4, 4)`` affine. Voxel edges of the
        two grids coincide at the field of view's borders.
    """
    aff = np.asarray(reference.affine, np.float64)
    zooms = voxel_sizes(reference)
    shape = np.asarray(reference.shape[:3])
    keep = np.abs(zooms - spacing_mm) <= SPACING_TOLERANCE * spacing_mm
    new_shape = np.where(keep, shape, np.maximum(np.round(shape * zooms / spacing_mm), 1))
    new_zooms = zooms * shape / new_shape
    axes = aff[:3, :3] / zooms
    new = np.eye(4)
    new[:3, :3] = axes * new_zooms
    # the centre of the first voxel moves so that the grid's outer edge stays in place
    new[:3, 3] = aff[:3, 3] + axes @ ((new_zooms - zooms) / 2)
    sizes = tuple(int(v) for v in new_shape)
    return (sizes[0], sizes[1], sizes[2]), new


def _grid_image(shape: tuple[int, int, int], affine: np.ndarray) -> sitk.Image:
    return to_sitk(nib.Nifti1Image(np.zeros(shape, np.uint8), affine), np.uint8)


def _onto(image: nib.Nifti1Image, grid: sitk.Image, transform: sitk.Transform | None = None
          ) -> nib.Nifti1Image:
    """``image`` resampled linearly onto ``grid`` (0 outside its field of view).

    A cubic B-spline (nnU-Net's choice for images) was measured here too, on all 14 simulated
    brats-mini studies with the stripped background kept constant: neutral on average (mean
    whole-tumour Dice -0.002 against linear; +0.026 on one case, -0.077 on another), so the
    simpler and faster linear stays. An image already exactly on ``grid`` (no transform) is
    not resampled, only labelled with the grid's affine: the linear resampling would return
    its voxels unchanged."""
    if transform is None and tuple(grid.GetSize()) == tuple(image.shape[:3]) and \
            np.allclose(sitk_affine(grid), image.affine, rtol=0, atol=1e-4):
        out = nib.Nifti1Image(np.asarray(image.dataobj, np.float32), sitk_affine(grid))
        out.set_qform(out.affine, code=1)
        out.set_sform(out.affine, code=1)
        return out
    moved = sitk.Resample(to_sitk(image), grid, transform or sitk.Transform(), sitk.sitkLinear,
                          0.0, sitk.sitkFloat32)
    return from_sitk(moved)


def align(reference: nib.Nifti1Image, seq: Sequence, image: nib.Nifti1Image, grid: sitk.Image,
          config: PrepareConfig, reference_name: str = "the reference"
          ) -> tuple[nib.Nifti1Image, dict[str, Any]]:
    """``image`` (the sequence ``seq``) on the working grid, and its registration figures.

    Raises:
        RegistrationError: the registration failed or the rule refuses it (message names the
            sequence and the reference).
    """
    label = f"{ROLE_NAMES[seq.role]} {seq.name}"
    if same_grid(image, reference):
        ones = np.ones(image.shape[:3], bool)
        nmi, corr, overlap = measure(reference, image, ones)
        info: dict[str, Any] = {"method": "already on the reference's grid (not moved)",
                                "nmi": nmi, "correlation": corr, "overlap": overlap,
                                "seconds": 0.0}
        if not nmi >= MIN_NMI:
            raise RegistrationError(f"{label}: on the reference's grid but unlike it "
                                    f"(normalised mutual information {nmi:.3f}, below "
                                    f"{MIN_NMI:g}): not the same head, or not aligned",
                                    "check that this sequence belongs to the study")
        return _onto(image, grid), info
    try:
        result = register(reference, image, label, max_translation_mm=config.max_translation_mm)
    except RegistrationError as exc:
        raise RegistrationError(f"{exc.message} (the reference: {reference_name})",
                                exc.hint) from exc
    q = result.quality
    info = {"method": "rigid, Mattes mutual information (SimpleITK)", "nmi": q.nmi,
            "correlation": q.correlation, "overlap": q.overlap,
            "rotation_deg": q.rotation_deg, "translation_mm": q.translation_mm,
            "iterations": q.iterations, "seconds": q.seconds}
    return _onto(image, grid, result.transform), info


# ---------------------------------------------------------------- the stage

Progress = Callable[[float, str], None]
"""Called with the fraction done (0-1) and what runs now, at each step's start."""


def _silent(_done: float, _what: str) -> None:
    return None


def prepare_study(source: Path | dict[str, Path], work: Path,
                  config: PrepareConfig | None = None,
                  accept: Callable[[list[str]], None] | None = None,
                  progress: Progress = _silent,
                  vet: Callable[[str, nib.Nifti1Image], dict[str, Any]] | None = None
                  ) -> PreparedStudy:
    """Run the imaging stage (see the module docstring) into ``work``.

    Args:
        source: A DICOM folder or zip, a NIfTI case folder, or ``{role: NIfTI path}``.
        work: The stage's folder.
        config: Its settings.
        accept: Checks the roles found before any registration (the model's needs: raises
            :class:`DataError`); a study without FLAIR is refused before it.
        progress: Told each step as it starts (fractions of the imaging stage, 0-1).
        vet: Judges each chosen sequence as loaded, before the reference is chosen and before
            any processing (called with how messages name it, e.g. "the FLAIR (AX FLAIR,
            series 3)", and its image): raises :class:`DataError` to refuse it (the FLAIR: the
            study is refused; another: it is left out,
            :func:`~mrimaster.imaging.series_choice.vet_sequences`); what it returns is
            recorded with the sequence (``brain_mri_check``).

    Raises:
        DataError: unreadable input, no FLAIR, a 4D volume given as a sequence, sequences of
            several patients or studies (the message names the series).
        RegistrationError: a sequence that cannot be registered onto the reference.
    """
    config = config or PrepareConfig()
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    progress(0.0, "importing the series")
    chosen, listing = gather(source, work, config.overrides)
    timings["import"] = time.perf_counter() - start
    choose_reference(chosen, listing, accept)  # no FLAIR, a missing series: before reading
    images = {role: load3d(seq) for role, seq in chosen.items()}
    start = time.perf_counter()
    vetted, left_out = vet_sequences(chosen, images, listing, vet)
    if vet is not None:
        timings["brain_mri_check"] = time.perf_counter() - start
    reference = choose_reference(chosen, listing, accept)
    start = time.perf_counter()
    progress(0.05, "correcting the intensity bias")
    bias: dict[str, dict[str, Any]] = {}
    for role in list(images):
        if config.bias == "n4":
            images[role], bias[role] = correct_bias(images[role])
        else:
            bias[role] = {"method": "none", "reason": "bias correction off (bias=none)"}
    timings["bias_correction"] = time.perf_counter() - start
    ref_img = images[reference.role]
    notes = warn_if_unusual(voxel_sizes(nib.as_closest_canonical(ref_img)), ref_img.shape,
                            np.full(3, config.spacing_mm), _source_name(source))
    shape, affine = working_grid(ref_img, config.spacing_mm)
    grid = _grid_image(shape, affine)

    start = time.perf_counter()
    on_grid: dict[str, nib.Nifti1Image] = {}
    sequences: dict[str, Any] = {}
    for role in MODALITIES:
        if role not in chosen:
            continue
        seq = chosen[role]
        progress(0.1 + 0.6 * len(sequences) / len(chosen),
                 f"registering the {ROLE_NAMES[role]} onto the {ROLE_NAMES[reference.role]}")
        if role == reference.role:
            same = same_grid(nib.Nifti1Image(np.zeros(shape, np.uint8), affine), ref_img)
            on_grid[role] = ref_img if same else _onto(ref_img, grid)
            sequences[role] = {"series": seq.name, "method": "reference"}
            continue
        try:
            on_grid[role], info = align(ref_img, seq, images[role], grid, config,
                                        f"{ROLE_NAMES[reference.role]} {reference.name}")
        except RegistrationError as exc:
            if role == "flair":  # every model needs it: the study cannot be segmented
                raise
            sequences[role] = {"series": seq.name, "refused": exc.message}
            notes.append(f"{ROLE_NAMES[role]} {seq.name} is not used: {exc.message}")
            for entry in listing:
                if entry.get("used_as") == role:
                    del entry["used_as"]
                    entry["not_used"] = f"registration refused: {exc.message}"
            continue
        sequences[role] = {"series": seq.name, **info}
    for role, info in bias.items():
        sequences[role]["bias_correction"] = info
    for role, info in vetted.items():
        sequences[role]["brain_mri_check"] = info
    for role, (name, why, figures) in left_out.items():
        sequences[role] = {"series": name, "refused": why}
        if figures is not None:  # the check's refusal (not unreadable values)
            sequences[role].update(left_out_by="brain-MRI check", brain_mri_check=figures)
        notes.append(f"{ROLE_NAMES[role]} {name} is not used: {why}")
    timings["registration"] = time.perf_counter() - start

    start = time.perf_counter()
    progress(0.7, "skull stripping")
    mask, strip_info = strip_study(on_grid, reference.role, config.strip, ref_img)
    timings["skull_strip"] = time.perf_counter() - start

    folder = work / "case"
    folder.mkdir(parents=True, exist_ok=True)
    images_out: dict[str, Path] = {}
    for role, img in on_grid.items():
        out = nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine)
        out.set_qform(img.affine, code=1)
        out.set_sform(img.affine, code=1)
        images_out[role] = folder / f"{role}.nii"
        nib.save(out, str(images_out[role]))
    mask_path = work / "brain_mask.nii"
    nib.save(nib.Nifti1Image(np.asarray(mask.dataobj, np.uint8), mask.affine), str(mask_path))
    report = {
        "series": listing,
        "reference": {"role": reference.role, "series": reference.name,
                      "spacing_mm": [float(z) for z in voxel_sizes(ref_img)],
                      "shape": [int(v) for v in ref_img.shape[:3]]},
        "working_grid": {"shape": list(shape),
                         "spacing_mm": [float(z) for z in nib.affines.voxel_sizes(affine)],
                         "resampled": not same_grid(nib.Nifti1Image(
                             np.zeros(shape, np.uint8), affine), ref_img)},
        "warnings": notes,
        "sequences": sequences, "skull_strip": strip_info,
        "timings_s": {k: round(v, 2) for k, v in timings.items()}}
    (work / "prepare.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    source_files = list(reference.record.sources) if reference.record is not None else None
    return PreparedStudy(Case(_source_name(source), dict(images_out)), reference, ref_img,
                         mask_path, report, source_files)


def _source_name(source: Path | dict[str, Path]) -> str:
    if isinstance(source, dict):
        return "case"
    name = Path(source).name
    return name[:-4] if name.lower().endswith(".zip") else name
