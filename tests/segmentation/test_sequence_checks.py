"""Every sequence given is checked against the reference, used or not: one grid, one head
(:mod:`mrimaster.segmentation.sequence_checks`), on synthetic heads and on real brats-mini
cases with a sequence shifted in its header, another patient's, or flipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrimaster.errors import DataError
from mrimaster.segmentation.cases import Case
from mrimaster.segmentation.labels import MASK_DESCRIPTIONS
from mrimaster.segmentation.outputs import result_mask
from mrimaster.segmentation.sequence_checks import (
    MIN_HEAD_DICE,
    check_sequences,
    from_registration,
    head_figures,
    head_problem,
    problems_of,
    refuse_used,
)

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _head(contrast: str, squash: float = 1.0, lesion: tuple[float, float, float] = (0.35, 0.1,
                                                                                    0.05),
          seed: int = 0, shape: tuple[int, int, int] = (64, 72, 56)) -> np.ndarray:
    """A synthetic skull-stripped head, float32 (0 outside the brain): an ellipsoid brain
    (its second semi-axis times ``squash``) with a ventricle-like dark band, a smooth
    texture and a lesion off the left-right midline (so its mirror image differs)."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    axes = np.array([0.8, 0.85 * squash, 0.75])[:, None, None, None]
    brain = ((g / axes) ** 2).sum(0) < 1
    centre = np.asarray(lesion)[:, None, None, None]
    in_lesion = ((g - centre) ** 2).sum(0) < 0.2 ** 2
    ventricle = (np.abs(g[0] - 0.05) < 0.08) & (np.abs(g[1]) < 0.3) & (np.abs(g[2]) < 0.2)
    tissue, lesion_value, csf = {"flair": (100, 190, 40), "t1": (90, 55, 30)}[contrast]
    img = tissue + 15 * np.sin(3 * g[0] + 1) * np.cos(2 * g[1]) + 10 * g[2]
    img = np.where(in_lesion, lesion_value, np.where(ventricle, csf, img))
    img = img + rng.normal(0, 3, shape)
    return np.where(brain, img, 0).astype(np.float32)


def _image(data: np.ndarray, shift_mm: float = 0.0) -> nib.Nifti1Image:
    affine = AFFINE.copy()
    affine[1, 3] += shift_mm
    return nib.Nifti1Image(data, affine)


VARIANTS = {
    # name: (the T1 given, whether its grid matches, what the problem must say or None)
    "same": (lambda: _image(_head("t1")), True, None),
    "shifted-20mm-in-header": (lambda: _image(_head("t1"), 20.0), False, "does not overlap"),
    "another-head": (lambda: _image(_head("t1", squash=0.82, lesion=(-0.3, -0.2, 0.1),
                                          seed=5)), True, "does not overlap"),
    "flipped-left-right": (lambda: _image(np.ascontiguousarray(_head("t1")[::-1])), True,
                           "flipped"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_head_figures_tell_each_broken_sequence(variant: str) -> None:
    make, same_grid, expected = VARIANTS[variant]
    reference = _image(_head("flair"))
    figures = head_figures(reference, make())
    problem = head_problem(figures, "flair")
    if expected is None:
        assert problem is None, figures
        assert figures["head_dice"] >= 0.99 and figures["nmi"] > 1.1
    else:
        assert problem is not None and expected in problem, (problem, figures)
    if variant == "flipped-left-right":  # the outline is symmetric: only the mirror test sees it
        assert figures["head_dice"] >= MIN_HEAD_DICE and figures["mirrored_axis"] == 0


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("t1_used", [False, True])
def test_every_sequence_is_checked_used_or_not(tmp_path: Path, variant: str,
                                               t1_used: bool) -> None:
    make, same_grid, expected = VARIANTS[variant]
    nib.save(_image(_head("flair")), str(tmp_path / "flair.nii.gz"))
    nib.save(make(), str(tmp_path / "t1.nii.gz"))
    case = Case("x", {"flair": tmp_path / "flair.nii.gz", "t1": tmp_path / "t1.nii.gz"})
    used = ["flair", "t1"] if t1_used else ["flair"]
    checks = check_sequences(case, used)
    assert checks["flair"].grid == "reference" and checks["flair"].problem is None
    t1 = checks["t1"]
    assert t1.used is t1_used
    assert (t1.grid == "same") is same_grid
    if not same_grid:
        assert t1.grid.startswith("differs: ") and "origin shifted by (0, 20, 0) mm" in t1.grid
    if expected is None:
        assert t1.problem is None and t1.head == "same" and problems_of(checks, "x") == []
        refuse_used(checks, "x")
        return
    assert expected in str(t1.problem) and t1.head.startswith("different: ")
    lines = problems_of(checks, "x")
    assert len(lines) == 1 and lines[0].startswith("case x: t1 ")
    assert lines[0].endswith("(used)" if t1_used else "(not used)")
    if t1_used:  # a used sequence is never read off the reference's grid or head
        with pytest.raises(DataError, match="t1"):
            refuse_used(checks, "x")
    else:
        refuse_used(checks, "x")
    entry = t1.as_json()
    assert set(entry) == {"used", "grid", "head", "figures", "problem"}
    json.dumps(entry)


def test_registered_study_checks_report_refused_and_far_moved_sequences() -> None:
    sequences = {"flair": {"series": "AX FLAIR", "method": "reference"},
                 "t1": {"series": "SAG T1", "refused": "NMI 1.01 below 1.035"},
                 "t1ce": {"series": "T1 GD", "nmi": 1.2, "translation_mm": 22.0,
                          "rotation_deg": 1.0},
                 "t2": {"series": "AX T2", "nmi": 1.1, "translation_mm": 4.0,
                        "rotation_deg": 2.0}}
    mirrored = {"head_dice": 1.0, "nmi": 1.03, "nmi_mirrored": 1.09, "mirrored_axis": 0}
    fine = {"head_dice": 1.0, "nmi": 1.09, "nmi_mirrored": 1.03, "mirrored_axis": 0}
    checks = from_registration(sequences, "flair", {"t1ce": fine, "t2": mirrored})
    assert checks["flair"].grid == "reference"
    assert "left out" in str(checks["t1"].problem) and "1.035" in str(checks["t1"].problem)
    assert "moved it 22.0 mm" in str(checks["t1ce"].problem) and checks["t1ce"].head == "same"
    assert "flipped" in str(checks["t2"].problem) and "moved 4.0 mm" in checks["t2"].grid


# ---------------------------------------------------------------- real cases

CASE6 = "brats-mini/deepvoxnet2-brats2018/case_6"  # FLAIR + T1 (T1 not read by the model)
CASE2 = "brats-mini/deepvoxnet2-brats2018/case_2"
CASE5 = "brats-mini/deepvoxnet2-brats2018/case_5"
PAT1 = "brats-mini/deepmedic-brats2015/test/brats_2013_pat0001_1"  # FLAIR + T1-Gd
PAT2 = "brats-mini/deepmedic-brats2015/test/brats_2013_pat0002_1"


@pytest.fixture(scope="module")
def segmenter() -> object:
    from mrimaster.api import Segmenter

    return Segmenter.load("default", runtime="auto")


def _shifted_t1(src: Path, out: Path) -> None:
    t1 = nib.load(str(src / "T1.nii.gz"))
    affine = np.array(t1.affine)
    affine[1, 3] += 20.0
    nib.save(nib.Nifti1Image(np.asarray(t1.dataobj, np.float32), affine), str(out))


@pytest.mark.realdata
@pytest.mark.parametrize("broken", ["t1-shifted-20mm", "t1-of-another-patient"])
def test_an_unused_broken_t1_is_reported_by_name(data_root: Path, tmp_path: Path,
                                                 segmenter: object, broken: str) -> None:
    """The shipped model does not read T1 (its cross-validation left it out): the T1 is still
    checked, reported by name in ``volumes.json`` and the warnings, and the FLAIR segmented;
    the whole-tumour-only mask is ``wt.nii.gz`` with its convention in the header."""
    src = data_root / (CASE6 if broken == "t1-shifted-20mm" else CASE2)
    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(src / "FLAIR.nii.gz", case / "FLAIR.nii.gz")
    if broken == "t1-shifted-20mm":
        _shifted_t1(src, case / "T1.nii.gz")
    else:
        shutil.copy(data_root / CASE5 / "T1.nii.gz", case / "T1.nii.gz")
    result = segmenter.segment(case, tmp_path / "out")  # type: ignore[attr-defined]
    info = json.loads((tmp_path / "out" / "volumes.json").read_text())
    t1 = info["sequences"]["t1"]
    assert t1["used"] is False and "t1" in info["modalities_ignored"]
    assert t1["problem"] and t1["head"].startswith("different: ")
    assert t1["figures"]["head_dice"] < MIN_HEAD_DICE
    if broken == "t1-shifted-20mm":
        assert t1["grid"].startswith("differs: ") and "origin shifted" in t1["grid"]
    else:
        assert t1["grid"] == "same"
    assert [p.split(":")[0] for p in info["sequence_problems"]] == ["t1"]
    assert any("t1" in w and "(not used)" in w for w in info["warnings"])
    assert info["sequences"]["flair"]["grid"] == "reference"
    # whole tumour only (no T1-Gd): wt.nii.gz, the convention in descrip and volumes.json
    assert result.seg_path.name == "wt.nii.gz" and info["mask_file"] == "wt.nii.gz"
    assert info["label_convention"] == "wt" and not (tmp_path / "out" / "seg.nii.gz").exists()
    mask = nib.load(str(result.seg_path))
    assert mask.header["descrip"].item().decode() == MASK_DESCRIPTIONS["wt"]
    assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1}
    assert result_mask(tmp_path / "out") == (result.seg_path, "wt")


@pytest.mark.realdata
def test_a_consistent_case_has_no_problem_and_keeps_brats_labels(
        data_root: Path, tmp_path: Path, segmenter: object) -> None:
    result = segmenter.segment(data_root / PAT1, tmp_path / "out")  # type: ignore[attr-defined]
    info = json.loads((tmp_path / "out" / "volumes.json").read_text())
    assert info["sequence_problems"] == []
    assert {m: (e["grid"], e["head"], e["used"]) for m, e in info["sequences"].items()} == {
        "flair": ("reference", "reference", True), "t1ce": ("same", "same", True)}
    assert info["sequences"]["t1ce"]["figures"]["head_dice"] >= 0.99
    assert result.seg_path.name == "seg.nii.gz" and info["mask_file"] == "seg.nii.gz"
    assert info["label_convention"] == "brats2021"
    descrip = nib.load(str(result.seg_path)).header["descrip"].item().decode()
    assert descrip == MASK_DESCRIPTIONS["brats2021"] and "BraTS 2021" in descrip


@pytest.mark.realdata
def test_a_used_sequence_of_another_patient_is_refused(data_root: Path, tmp_path: Path,
                                                       segmenter: object) -> None:
    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(data_root / PAT1 / "Flair_subtrMeanDivStd.nii.gz", case)
    shutil.copy(data_root / PAT2 / "T1c_subtrMeanDivStd.nii.gz", case)
    with pytest.raises(DataError, match="t1ce: its head does not overlap the flair's"):
        segmenter.segment(case, tmp_path / "out")  # type: ignore[attr-defined]
    assert not (tmp_path / "out").exists()


@pytest.mark.realdata
def test_study_path_refuses_a_used_flipped_sequence_its_registration_accepts(
        data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``seg predict`` registers the sequences: a FLAIR flipped left-right in its voxels still
    passes the registration's rule (normalised mutual information about 1.04, above 1.035),
    and a rigid registration cannot undo a flip; the mirror test on the working grid refuses
    it, naming it, and nothing is written."""
    from mrimaster.cli.main import main

    flair = nib.load(str(data_root / PAT2 / "Flair_subtrMeanDivStd.nii.gz"))
    flipped = tmp_path / "flair.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.asarray(flair.dataobj,
                                                             np.float32)[::-1]),
                             flair.affine), str(flipped))
    out = tmp_path / "out"
    assert main(["seg", "predict", "--flair", str(flipped), "--t1ce",
                 str(data_root / PAT2 / "T1c_subtrMeanDivStd.nii.gz"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "flair: it agrees with the t1ce better when mirrored along its first axis" in err
    assert "flipped" in err and not out.exists()
