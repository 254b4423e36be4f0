"""``seg predict`` on studies as a hospital's scanner writes them (issue 21): every sequence on
its own oblique grid and field of view, with an intensity bias, patient motion between
sequences, written as a DICOM study with a localizer and a DWI beside it; and bad studies.

The studies are simulated from real BraTS cases (:mod:`mrimaster.imaging.simulate`). The
reference is the same case given pre-aligned (BraTS' own grid): the study's whole-tumour Dice
against the BraTS label must be within 0.05 of the pre-aligned case's.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mrimaster.cli.main import main
from mrimaster.imaging.dicom_seg import read_dicom_seg
from mrimaster.imaging.scanner_grid import GridSpec, clinical_copy
from mrimaster.imaging.simulate import (
    ROLE_ATTRIBUTES,
    StudyInfo,
    build_study,
    write_dicom_series,
)
from mrimaster.segmentation.labels import to_regions
from mrimaster.segmentation.metrics import dice
from mrimaster.segmentation.study import onto_reference

PAT1 = "brats-mini/deepmedic-brats2015/test/brats_2013_pat0001_1"  # FLAIR + T1-Gd
CASE3 = "brats-mini/deepvoxnet2-brats2018/case_3"  # FLAIR + T1, whole-tumour labels


def _moved(img: nib.Nifti1Image, degrees: float, shift: tuple[float, float, float]
           ) -> nib.Nifti1Image:
    """The head moved in the scanner: a rotation about the z axis through the volume's centre
    and a shift (mm), applied to the world coordinates."""
    a = np.radians(degrees)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    centre = img.affine @ np.r_[(np.asarray(img.shape[:3]) - 1) / 2, 1]
    to, back = np.eye(4), np.eye(4)
    to[:3, 3], back[:3, 3] = -centre[:3], centre[:3] + np.asarray(shift)
    return nib.Nifti1Image(np.asarray(img.dataobj, np.float32), back @ rot @ to @ img.affine)


def _wt_dice(seg_path: Path, truth: nib.Nifti1Image, convention: str) -> float:
    """Whole-tumour Dice of a written mask against the BraTS label, on the label's grid."""
    labels = onto_reference(nib.load(str(seg_path)), truth)
    pred = np.asarray(labels.dataobj) > 0
    return dice(pred, to_regions(np.asarray(truth.dataobj).round(), convention)[0][0])


def _predict(out: Path, *args: str) -> dict:
    assert main(["seg", "predict", *args, "--out", str(out)]) == 0
    return json.loads((out / "volumes.json").read_text())


@pytest.mark.realdata
@pytest.mark.slow
def test_dicom_study_with_motion_and_distractors(data_root: Path, tmp_path: Path) -> None:
    src = data_root / PAT1
    truth = nib.load(str(src / "OTMultiClass.nii.gz"))
    aligned = _predict(tmp_path / "aligned", "--case", str(src))
    base = _wt_dice(tmp_path / "aligned" / "seg.nii.gz", truth, "brats2015")

    flair = _moved(nib.load(str(src / "Flair_subtrMeanDivStd.nii.gz")), 3.0, (4.0, -3.0, 2.0))
    build_study({"flair": flair, "t1ce": src / "T1c_subtrMeanDivStd.nii.gz"},
                tmp_path / "study", seed=3)
    out = tmp_path / "out"
    info = _predict(out, "--case", str(tmp_path / "study"))
    study = info["study"]
    # the distractors are listed with what they are, never used
    used = {s["description"]: s.get("used_as") for s in study["series"]}
    assert used == {"3-PLANE LOC": None, "AX DWI": None, "AX FLAIR": "flair",
                    "SAG 3D T1 MPRAGE POST GAD": "t1ce"}
    refused = {s["description"]: s["reason"] for s in study["series"] if s["nifti"] is None}
    assert "localizer" in refused["3-PLANE LOC"] and "diffusion" in refused["AX DWI"]
    # the reference is the T1-Gd; the FLAIR's motion is found (3 degrees, 5.4 mm)
    assert study["reference"]["role"] == "t1ce"
    motion = study["sequences"]["flair"]
    assert motion["rotation_deg"] == pytest.approx(3.0, abs=1.0)
    assert motion["translation_mm"] > 2.0
    assert info["modalities_used"] == ["flair", "t1ce"]
    # the mask is on the T1-Gd series' own grid, and as good as on the pre-aligned case
    written = nib.load(str(out / "seg.nii.gz"))
    assert written.shape == (278, 278, 160)
    # so is the uncertainty map, its values in [0, 1]
    uncertainty = nib.load(str(out / info["uncertainty_file"]))
    assert uncertainty.shape == written.shape and np.allclose(uncertainty.affine, written.affine)
    assert uncertainty.get_fdata().min() >= 0 and uncertainty.get_fdata().max() <= 1
    score = _wt_dice(out / "seg.nii.gz", truth, "brats2015")
    assert base > 0.8 and abs(score - base) <= 0.05, (score, base)
    assert aligned["volumes_ml"]["WT"] == pytest.approx(info["volumes_ml"]["WT"], rel=0.15)
    # seg.dcm read back gives the mask of seg.nii.gz on the source series' grid
    sources = sorted((tmp_path / "study" / "4_t1ce").iterdir())
    back = read_dicom_seg(out / "seg.dcm", written, sources)
    assert np.array_equal(back, np.asarray(written.dataobj))
    assert pydicom.dcmread(out / "seg.dcm").StudyInstanceUID == \
        pydicom.dcmread(sources[0]).StudyInstanceUID
    # what a doctor checks, and the time of each step
    for name in ("registration_flair.png", "brain_mask.png", "brain_mask.nii.gz",
                 "series.json"):
        assert (out / name).is_file(), name
    assert set(study["timings_s"]) >= {"import", "bias_correction", "registration",
                                       "skull_strip", "segmentation", "total"}
    # the scanner's images had a bias field: N4 found it; BraTS' z-scored files are left alone
    for role in ("flair", "t1ce"):
        low, high = study["sequences"][role]["bias_correction"]["field_range"]
        assert high / low > 1.05, (role, low, high)
    kept = aligned["study"]["sequences"]["flair"]["bias_correction"]
    assert kept["method"] == "none" and "negative intensities" in kept["reason"]
    assert study["skull_strip"]["method"] == "already stripped"


@pytest.mark.realdata
@pytest.mark.slow
def test_nifti_files_on_their_own_oblique_grids(data_root: Path, tmp_path: Path) -> None:
    """FLAIR and T1 of a BraTS 2018 patient as a 0.9 x 0.9 x 4 mm axial FLAIR tilted 6 degrees
    and a 1 x 1 x 3 mm T1, each with its own field of view and bias: no longer refused,
    registered, and the whole tumour as good as pre-aligned."""
    src = data_root / CASE3
    truth = nib.load(str(src / "GT_W.nii.gz"))
    _predict(tmp_path / "aligned", "--case", str(src))
    base = _wt_dice(tmp_path / "aligned" / "wt.nii.gz", truth, "wt")
    files = {}
    for role, name, spec in (
            ("flair", "FLAIR", GridSpec("axial", 0.9, 4.0, (6.0, 0, 0), (230, 207, 140),
                                        (2, -3, 1), 0.25)),
            ("t1", "T1", GridSpec("coronal", 1.0, 3.0, (0, 0, 8.0), (240, 240, 180),
                                  (-2, 1, 0), 0.15))):
        files[role] = tmp_path / f"{role}.nii.gz"
        nib.save(clinical_copy(nib.load(str(src / f"{name}.nii.gz")), spec, 5), files[role])
    info = _predict(tmp_path / "out", "--flair", str(files["flair"]), "--t1", str(files["t1"]))
    assert info["study"]["reference"]["role"] == "flair"
    assert info["study"]["sequences"]["t1"]["nmi"] > 1.035  # registered and checked
    assert "t1" in info["modalities_ignored"]  # the shipped model does not read T1
    assert info["input_grid"]["resampled_to_mm"] == pytest.approx([1.0, 1.0, 1.0], abs=0.01)
    score = _wt_dice(tmp_path / "out" / "wt.nii.gz", truth, "wt")
    # every sequence checked: the T1 registered (not read by the model), no problem
    assert info["sequences"]["t1"]["used"] is False and info["sequence_problems"] == []
    assert info["sequences"]["t1"]["grid"].startswith("registered onto the flair: moved")
    assert base > 0.7 and abs(score - base) <= 0.05, (score, base)


# ---------------------------------------------------------------- bad studies

def _tiny(seed: int, shape: tuple[int, int, int] = (48, 48, 40)) -> nib.Nifti1Image:
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, np.float32)
    data[8:-8, 8:-8, 6:-6] = rng.gamma(4.0, 50.0, (shape[0] - 16, shape[1] - 16, shape[2] - 12))
    return nib.Nifti1Image(data, np.diag([3.0, 3.0, 4.0, 1.0]))


def _series(folder: Path, role: str, patient: str, seed: int, number: int) -> None:
    attrs = ROLE_ATTRIBUTES[role]
    write_dicom_series(_tiny(seed), folder / f"{number}_{role}", series_number=number,
                       description=attrs["SeriesDescription"], attributes=attrs,
                       study=StudyInfo(patient_id=patient, uid_seed=seed), seed=seed)


def _refused(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> str:
    assert main(["seg", "predict", *args, "--out", str(out)]) == 2
    assert not out.exists()  # nothing stored
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("series", "expected"), [
    ([("flair", "PAT-A", 1, 3), ("t1ce", "PAT-B", 2, 4)],
     ["2 different patients", "'AX FLAIR' (series 3)"]),
    ([("t1ce", "PAT-A", 1, 4), ("t2", "PAT-A", 1, 5)],
     ["no FLAIR series", "SAG 3D T1 MPRAGE POST GAD"])], ids=["two-patients", "no-flair"])
def test_bad_studies_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 series: list[tuple[str, str, int, int]],
                                 expected: list[str]) -> None:
    for role, patient, seed, number in series:
        _series(tmp_path / "study", role, patient, seed, number)
    err = _refused(capsys, tmp_path / "out", "--case", str(tmp_path / "study"))
    assert all(text in err for text in expected), err


def test_a_damaged_flair_is_named_with_its_reason(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A FLAIR series missing a slice in the middle: the message names the FLAIR and why it
    cannot be used, not "the study has no FLAIR series" with a hint to add one."""
    _series(tmp_path / "study", "flair", "PAT-A", 1, 3)
    _series(tmp_path / "study", "t1ce", "PAT-A", 1, 4)
    files = sorted((tmp_path / "study" / "3_flair").iterdir(),
                   key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    files[len(files) // 2].unlink()
    err = _refused(capsys, tmp_path / "out", "--case", str(tmp_path / "study"))
    assert "the FLAIR series 'AX FLAIR' (series 3) cannot be used" in err, err
    assert "not evenly spaced" in err and "export the FLAIR series again" in err
    assert "has no FLAIR series" not in err


def test_a_report_instead_of_images_is_refused(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "sr.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, \
        meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesDescription, ds.SeriesNumber = "SR", "RADIOLOGY REPORT", 99
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    (tmp_path / "study").mkdir()
    ds.save_as(tmp_path / "study" / "sr.dcm", enforce_file_format=True)
    err = _refused(capsys, tmp_path / "out", "--case", str(tmp_path / "study"))
    assert "no FLAIR series" in err and "RADIOLOGY REPORT" in err


def test_a_4d_volume_given_as_a_sequence_is_refused(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    flair = _tiny(1)
    nib.save(flair, tmp_path / "flair.nii.gz")
    four = np.stack([np.asarray(_tiny(2).dataobj)] * 3, axis=-1)
    nib.save(nib.Nifti1Image(four, flair.affine), tmp_path / "dwi.nii.gz")
    err = _refused(capsys, tmp_path / "out", "--flair", str(tmp_path / "flair.nii.gz"),
                   "--t1ce", str(tmp_path / "dwi.nii.gz"))
    assert "T1-Gd (dwi.nii.gz) holds a 4D image" in err


@pytest.mark.realdata
def test_an_unregistrable_pair_is_refused(data_root: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A T1-Gd that is noise on its own grid: the brain-MRI check leaves it out (before the
    reference is chosen), naming it, and the FLAIR alone is segmented; with the check off, the
    T1-Gd is the reference, the FLAIR cannot be registered onto it, and the message names
    both."""
    src = data_root / PAT1
    noise = _tiny(7, (80, 80, 50))
    noise = nib.Nifti1Image(np.asarray(noise.dataobj), np.diag([2.5, 2.5, 3.0, 1.0]) @
                            np.array([[1, 0, 0, -100], [0, 1, 0, -120], [0, 0, 1, -10],
                                      [0, 0, 0, 1.0]]))
    nib.save(noise, tmp_path / "t1ce.nii.gz")
    args = ("--flair", str(src / "Flair_subtrMeanDivStd.nii.gz"), "--t1ce",
            str(tmp_path / "t1ce.nii.gz"))
    info = _predict(tmp_path / "checked", *args)
    t1ce = info["study"]["sequences"]["t1ce"]
    assert t1ce["refused"].startswith("the T1-Gd (t1ce.nii.gz) does not look like a brain MRI")
    assert t1ce["brain_mri_check"]["refused"] and t1ce["left_out_by"] == "brain-MRI check"
    assert info["study"]["reference"]["role"] == "flair"
    assert info["modalities_used"] == ["flair"] and info["label_convention"] == "wt"
    assert info["sequences"]["t1ce"]["head"].startswith("not a brain MRI")
    assert not any("Nothing was segmented" in w for w in info["warnings"]), info["warnings"]
    # a series left out of the study refers the read (README: any sequence problem refers)
    assert info["status"] == "refer" and "t1ce left out" in info["reason"], info["reason"]
    monkeypatch.setenv("MRIMASTER_CHECK_BRAIN_MRI", "off")
    err = _refused(capsys, tmp_path / "out", *args)
    assert "FLAIR Flair_subtrMeanDivStd.nii.gz: registration" in err
    assert "(the reference: T1-Gd t1ce.nii.gz)" in err


@pytest.mark.realdata
def test_a_sequence_that_cannot_be_registered_is_left_out(data_root: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """A T1 that is noise on its own grid, beside a real FLAIR (the reference): the T1 is not
    used, the outputs say why, and the study is segmented from the FLAIR. The brain-MRI check
    leaves it out first; with the check off, the registration does."""
    src = data_root / CASE3
    noise = _tiny(9, (80, 80, 50))
    nib.save(nib.Nifti1Image(np.asarray(noise.dataobj), np.diag([2.5, 2.5, 3.0, 1.0]) @
                             np.array([[1, 0, 0, -100], [0, 1, 0, -120], [0, 0, 1, -10],
                                       [0, 0, 0, 1.0]])), tmp_path / "t1.nii.gz")
    args = ("--flair", str(src / "FLAIR.nii.gz"), "--t1", str(tmp_path / "t1.nii.gz"))
    info = _predict(tmp_path / "checked", *args)
    assert "does not look like a brain MRI" in info["study"]["sequences"]["t1"]["refused"]
    assert any(w.startswith("T1 t1.nii.gz is not used") for w in info["warnings"])
    assert info["modalities_used"] == ["flair"] and "t1" in info["modalities_missing"]
    assert info["study"]["sequences"]["flair"]["brain_mri_check"]["refused"] is False
    monkeypatch.setenv("MRIMASTER_CHECK_BRAIN_MRI", "off")
    assert info["status"] == "refer" and "t1 left out" in info["reason"], info["reason"]
    info = _predict(tmp_path / "out", *args)
    assert "T1 t1.nii.gz: registration" in info["study"]["sequences"]["t1"]["refused"]
    assert info["status"] == "refer" and "t1 left out" in info["reason"], info["reason"]
    assert any(w.startswith("T1 t1.nii.gz is not used") for w in info["warnings"])
    assert info["modalities_used"] == ["flair"] and "t1" in info["modalities_missing"]
