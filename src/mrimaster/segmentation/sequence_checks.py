"""Check every sequence of a case against the reference, used or not: one grid, one head.

A case's sequences are meant to show one head on one voxel grid. :func:`check_sequences` checks
each sequence the case has, whether the network is fed it or not, against the reference (the
first sequence used, whose grid the outputs are written on):

- **grid** (:func:`mrimaster.segmentation.geometry.same_grid`): the same shape and grid corners
  within :data:`mrimaster.segmentation.geometry.GRID_TOLERANCE` of a voxel; otherwise what
  differs, in words (:func:`mrimaster.segmentation.geometry.describe_difference`).
- **head** (:func:`head_figures`, :func:`head_problem`): the sequence, resampled onto the
  reference's grid through both files' world coordinates when its grid differs, must

  1. cover the same head: the Dice overlap of the two head masks (every voxel other than the
     background, :func:`mrimaster.imaging.registration_quality.foreground`, holes filled, at
     about 2 mm) inside the region both cover is at least :data:`MIN_HEAD_DICE`;
  2. not be a mirror image: the information it shares with the reference (normalised mutual
     information minus 1; Studholme's NMI, the registration's quality figure, computed
     :func:`mrimaster.imaging.registration_quality.measure`'s way) is not exceeded
     :data:`MIRROR_RATIO` times by that of the same sequence mirrored along a grid axis. A
     sequence as given agrees with the reference better than its mirror image does; a flipped
     one (a converter's or a header's mistake) agrees worse than its mirror image, which is
     the right one. Left-right flips keep a brain's outline, so the overlap alone does not see
     them.

Measured on the 14 real ``brats-mini`` cases (FLAIR as reference; the other sequence: T1-Gd
for the six BraTS 2015 cases, T1 for the eight BraTS 2018 ones; ``benchmarks/
sequence_checks.py``): head-mask Dice 0.998-1.000 for the case's own sequence; 0.74-0.94 for
another case's (BraTS volumes all lie in one atlas space, so foreign brains overlap that
much); 0.69-0.81 for the own sequence shifted 20 mm; left-right flipped 0.93-0.97, which
only the mirror test catches: its NMI 1.017-1.040 against 1.042-1.108 for its mirror image
(the own sequence), a ratio of shared information (NMI - 1) of 2.0-4.4, against 0.23-0.50
for the sequences as they are. The NMI itself is reported but is no rule here: the own
sequence's lowest (1.042) and another case's highest (1.034) are too close.

What is done with a problem is the caller's (:func:`mrimaster.segmentation.infer.segment_case`):
a used sequence that fails is refused with a :class:`DataError`; an unused one is reported by
name in ``volumes.json`` (``sequences`` and ``sequence_problems``) and in the warnings. The
Dice rule assumes sequences whose background is outside one head (skull-stripped together, as
BraTS, or masked by the imaging stage); studies registered by the imaging stage are judged by
its registration figures (:func:`from_registration`). Through that path
(``benchmarks/sequence_checks.py --study``) the 14 cases as they are have no problem; a T1
shifted 20 mm is registered back and reported as moved 19-20 mm (or, once, refused: the
registration stopped in a wrong optimum), a FLAIR shifted 20 mm likewise; flipped T1s and other
patients' T1s are refused by the registration's rule (NMI 1.010-1.017 < 1.035) and reported
as left out; a FLAIR flipped left-right passes that rule (NMI 1.043, pat0002) and is refused by
the mirror test (1.087 mirrored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

from mrimaster.errors import DataError
from mrimaster.segmentation.cases import MODALITIES, Case
from mrimaster.segmentation.geometry import describe_difference, same_grid

log = logging.getLogger(__name__)

MIN_HEAD_DICE = 0.95
"""Smallest Dice overlap of a sequence's head mask with the reference's (see the module
docstring: 0.998 or more for a case's own sequences, 0.94 or less for another case's)."""

MIRROR_RATIO = 1.5
"""A sequence is taken for flipped when a mirror image of it shares this many times more
information with the reference than it does as given (normalised mutual information minus 1,
0 for independent images). On the 14 real cases: 0.23-0.50 for the sequences as they are
(their mirror images share less), 2.0-4.4 for the same sequences flipped left-right. A head
symmetric along an axis gives about 1 (synthetic heads of 40 voxels: up to 1.05, the
estimate's noise), which is why the rule is a ratio well above 1 and not any gain."""

LARGE_MOTION_MM = 15.0
"""A registration that moves a sequence further than this (mm) is reported: patients move a few
mm between the sequences of one session (the simulated studies of the tests move 5 mm), and the
registration accepts up to 40 mm only so that a study is not refused for it."""

FIGURE_SPACING_MM = 2.0
"""The figures are computed at about this spacing (every n-th voxel, after smoothing)."""


@dataclass
class SequenceCheck:
    """One sequence's checks.

    Attributes:
        modality: Its name (``flair``, ``t1``, ``t1ce``, ``t2``).
        used: Whether the network is fed it.
        grid: ``reference``, ``same``, ``registered ...`` or ``differs: <what>``.
        head: ``reference``, ``same``, ``different: <why>`` or ``not checked: <why>``.
        figures: ``head_dice``, ``nmi``, ``nmi_mirrored``, ``mirrored_axis`` (or the
            registration's figures).
        problem: What is wrong, in words (``None`` when nothing is).
    """

    modality: str
    used: bool
    grid: str
    head: str
    figures: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"used": self.used, "grid": self.grid, "head": self.head,
                "figures": self.figures, "problem": self.problem}


# ---------------------------------------------------------------- figures

def _onto_reference(moving: nib.Nifti1Image, reference: nib.Nifti1Image
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``moving`` on ``reference``'s grid through both affines (linear; outside its field of
    view its background value) and the ``(X, Y, Z)`` bool mask of the voxels it covers."""
    from nibabel.processing import resample_from_to

    from mrimaster.imaging.skullstrip import background_value

    data = np.asarray(moving.dataobj, np.float32)
    plain = nib.Nifti1Image(data, moving.affine)
    moved = resample_from_to(plain, (reference.shape[:3], reference.affine), order=1,
                             cval=background_value(data))
    ones = nib.Nifti1Image(np.ones(data.shape, np.uint8), moving.affine)
    covered = resample_from_to(ones, (reference.shape[:3], reference.affine), order=0, cval=0)
    return np.asarray(moved.dataobj, np.float32), np.asarray(covered.dataobj) > 0


def _head_mask(data: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    from mrimaster.imaging.registration_quality import foreground

    return np.asarray(ndimage.binary_fill_holes(foreground(data)))


def head_figures(reference: nib.Nifti1Image, moving: nib.Nifti1Image) -> dict[str, Any]:
    """How well ``moving`` shows the head of ``reference`` where their files put it.

    Args:
        reference: The reference sequence (3D).
        moving: Another sequence (3D), on the reference's grid or not (then resampled onto it
            through both affines).

    Returns:
        ``{"head_dice", "nmi", "nmi_mirrored", "mirrored_axis"}``: the Dice overlap of the
        two head masks inside the region both cover, the normalised mutual information of the
        two images inside the reference's head there, and the largest such figure of
        ``moving`` mirrored along one grid axis (and which axis: 0, 1, 2). Figures are
        ``None`` when the two share too little to compute them.
    """
    from scipy import ndimage

    from mrimaster.imaging.registration_quality import normalised_mutual_information

    ref = np.asarray(reference.dataobj, np.float32)
    if same_grid(moving, reference):
        mov, covered = np.asarray(moving.dataobj, np.float32), np.ones(ref.shape, bool)
    else:
        mov, covered = _onto_reference(moving, reference)
    zooms = np.asarray(nib.affines.voxel_sizes(np.asarray(reference.affine, np.float64)))
    step = np.maximum(1, np.round(FIGURE_SPACING_MM / zooms)).astype(int)
    take = tuple(slice(None, None, int(n)) for n in step)
    sigma = np.where(step > 1, step / 2.355, 0.0)
    head_ref, head_mov = _head_mask(ref[take]), _head_mask(mov[take])
    cov = covered[take]
    a, b = head_ref & cov, head_mov & cov
    total = int(a.sum()) + int(b.sum())
    dice = 2.0 * int((a & b).sum()) / total if total else None
    out: dict[str, Any] = {"head_dice": None if dice is None else round(dice, 4),
                           "nmi": None, "nmi_mirrored": None, "mirrored_axis": None}
    inside = a
    if inside.sum() < 100:
        return out
    ref_s = ndimage.gaussian_filter(ref, sigma)[take][inside]
    mov_s = ndimage.gaussian_filter(mov, sigma)
    if ref_s.std() == 0 or mov_s[take][inside].std() == 0:
        return out
    out["nmi"] = round(normalised_mutual_information(ref_s, mov_s[take][inside]), 4)
    mirrored = [normalised_mutual_information(ref_s, np.flip(mov_s, axis)[take][inside])
                for axis in range(3)]
    best = int(np.argmax(mirrored))
    out["nmi_mirrored"], out["mirrored_axis"] = round(mirrored[best], 4), best
    return out


def head_problem(figures: dict[str, Any], reference: str) -> str | None:
    """Why the figures of :func:`head_figures` say the sequence does not show ``reference``'s
    head where it is, in words; ``None`` when they say it does."""
    dice = figures["head_dice"]
    if dice is None or dice < MIN_HEAD_DICE:
        shown = "no overlap" if dice is None else f"Dice {dice:.3f}"
        return (f"its head does not overlap the {reference}'s ({shown}, at least "
                f"{MIN_HEAD_DICE:g} expected): another patient's, or not aligned")
    return mirror_problem(figures, reference)


# ---------------------------------------------------------------- a case's sequences

def _images(case: Case) -> dict[str, nib.Nifti1Image]:
    """Every sequence of ``case`` as a 3D image (a 4D file: one image per channel)."""
    from mrimaster.segmentation.volumes import load_nifti

    if case.image4d is None:
        return {m: load_nifti(case.images[m]) for m in case.available()}
    img = load_nifti(case.image4d)
    if img.ndim != 4:
        raise DataError(f"{case.image4d}: expected a 4D volume (MSD layout)")
    return {m: nib.Nifti1Image(np.asarray(img.dataobj[..., i], np.float32), img.affine)
            for i, m in enumerate(MODALITIES)}


def check_sequences(case: Case, used: list[str]) -> dict[str, SequenceCheck]:
    """Check every sequence of ``case`` (see the module docstring) against the reference,
    the first of ``used``.

    Returns:
        ``{modality: SequenceCheck}`` in :data:`MODALITIES` order, the reference included.

    Raises:
        DataError: a file cannot be read (as :func:`mrimaster.segmentation.volumes.load_nifti`).
    """
    images = _images(case)
    ref_name = used[0]
    reference = images[ref_name]
    checks = {}
    for m, img in images.items():
        if m == ref_name:
            checks[m] = SequenceCheck(m, True, "reference", "reference")
            continue
        check = SequenceCheck(m, m in used, "same", "same")
        problems = []
        if img.ndim != 3:
            check.grid = check.head = f"not checked: shape {img.shape} is not 3D"
            checks[m] = check
            continue
        if not same_grid(img, reference):
            check.grid = f"differs: {describe_difference(img, reference)}"
            problems.append(f"not on the grid of {ref_name} ({check.grid[9:]})")
        check.figures = head_figures(reference, img)
        why = head_problem(check.figures, ref_name)
        if why is not None:
            check.head = f"different: {why}"
            problems.append(why)
        if problems:
            check.problem = "; ".join(problems)
        checks[m] = check
    return checks


def problems_of(checks: dict[str, SequenceCheck], case: str) -> list[str]:
    """One line per sequence with a problem, naming the sequence and whether it is used."""
    return [f"case {case}: {c.modality} {c.problem} ({'used' if c.used else 'not used'})"
            for c in checks.values() if c.problem]


def refuse_used(checks: dict[str, SequenceCheck], case: str) -> None:
    """Raise for a used sequence with a problem: the network must never read it.

    Raises:
        DataError: names the sequence and what is wrong.
    """
    for c in checks.values():
        if c.used and c.problem:
            raise DataError(f"case {case}: {c.modality} is {c.problem}" if
                            c.problem.startswith("not on") else
                            f"case {case}: {c.modality}: {c.problem}",
                            "check that every sequence belongs to this patient and study, "
                            "lies on one grid with the others (register and resample them, "
                            "for example onto the FLAIR) and is not flipped; or leave the "
                            "sequence out")


def mirror_problem(figures: dict[str, Any], reference: str) -> str | None:
    """The mirror part of :func:`head_problem` alone (for sequences whose overlap the
    registration judged)."""
    nmi, mirrored = figures.get("nmi"), figures.get("nmi_mirrored")
    if nmi is None or mirrored is None or mirrored - 1.0 <= MIRROR_RATIO * max(nmi - 1.0, 0.0):
        return None
    axis = ["first", "second", "third"][int(figures["mirrored_axis"])]
    return (f"it agrees with the {reference} better when mirrored along its {axis} axis "
            f"(normalised mutual information {mirrored:.3f} against {nmi:.3f} as given): "
            "flipped")


def from_registration(sequences: dict[str, Any], reference: str,
                      after: dict[str, dict[str, Any]] | None = None
                      ) -> dict[str, SequenceCheck]:
    """The checks of a study that the imaging stage registered
    (:func:`mrimaster.imaging.prepare.prepare_study`'s report ``sequences``).

    The grid is the registration's; the head its verdict (normalised mutual information,
    overlap, size of the transform: the rule of :mod:`mrimaster.imaging.register`), so a
    refused registration is the sequence's problem (it was left out). Two more problems are
    reported: a registration that moved the
    sequence more than :data:`LARGE_MOTION_MM` (accepted up to 40 mm, but more than a patient
    moves between the sequences of one session: the files may not be one study's), and, from
    ``after`` (:func:`head_figures` of each sequence against the reference on the working grid,
    after the registration), a sequence that agrees with the reference better mirrored (a rigid
    registration cannot undo a flip). The first leaves the sequence used (it was registered);
    the second is a head problem, which :func:`mrimaster.segmentation.infer.segment_case`
    refuses for a used sequence as for pre-aligned input.

    Args:
        sequences: The report's ``sequences``: per role ``method`` (``reference``), the
            registration's figures, or ``refused`` (why).
        reference: The reference's role.
        after: ``{role: head_figures}`` after registration, for the mirror test.

    Returns:
        ``{role: SequenceCheck}`` in :data:`MODALITIES` order (``used`` is set by the caller).
    """
    after = after or {}
    checks = {}
    for m in MODALITIES:
        info = sequences.get(m)
        if info is None:
            continue
        figures = {k: info[k] for k in ("series", "nmi", "correlation", "overlap",
                                        "rotation_deg", "translation_mm") if k in info}
        if info.get("method") == "reference" or m == reference:
            checks[m] = SequenceCheck(m, True, "reference", "reference", figures)
            continue
        if "refused" in info:
            grid = ("same (not moved)" if "on the reference's grid" in str(info["refused"])
                    else "not registered")
            head = ("not a brain MRI: the brain-MRI check refused it"
                    if info.get("left_out_by") == "brain-MRI check"
                    else "different: registration refused")
            checks[m] = SequenceCheck(m, False, grid, head, figures,
                                      f"left out: {info['refused']}")
            continue
        check = SequenceCheck(m, False, str(info.get("method", "registered")), "same", figures)
        problems = []
        if "translation_mm" in info:
            moved = float(info["translation_mm"])
            check.grid = (f"registered onto the {reference}: moved {moved:.1f} mm, rotated "
                          f"{float(info.get('rotation_deg', 0.0)):.1f} degrees")
            if moved > LARGE_MOTION_MM:
                problems.append(f"its registration moved it {moved:.1f} mm onto the "
                                f"{reference}, more than patients move between sequences "
                                f"({LARGE_MOTION_MM:g} mm): check that it belongs to this "
                                "study and the registration picture")
        if m in after:
            check.figures["after_registration"] = after[m]
            why = mirror_problem(after[m], reference)
            if why is not None:
                check.head = f"different: {why}"
                problems.append(why)
        check.problem = "; ".join(problems) or None
        checks[m] = check
    return checks
