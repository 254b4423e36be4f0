"""Simulated clinical studies from real BraTS volumes (issue 21): grids, bias, DICOM, import."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from mrimaster.imaging.dicom_import import import_study
from mrimaster.imaging.scanner_grid import GridSpec, background, clinical_copy, resample
from mrimaster.imaging.simulate import DEFAULT_GRIDS, build_study

CASE = "brats-mini/deepmedic-brats2015/test/brats_2013_pat0001_1"


@pytest.fixture(scope="module")
def case(data_root: Path) -> Path:
    return data_root / CASE


@pytest.fixture(scope="module")
def flair(case: Path) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_filename(str(case / "Flair_subtrMeanDivStd.nii.gz"))


def _com(image: nib.Nifti1Image) -> np.ndarray:
    data = np.asanyarray(image.dataobj).astype(np.float64)
    data = np.clip(data - background(data), 0, None)
    ijk = np.indices(data.shape).reshape(3, -1)
    centre = (ijk * data.ravel()).sum(axis=1) / data.sum()
    return np.asarray(nib.affines.apply_affine(image.affine, centre))


def _corners(image: nib.Nifti1Image) -> np.ndarray:
    canon = nib.as_closest_canonical(image)
    n = np.asarray(canon.shape[:3]) - 1
    idx = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    return np.asarray(nib.affines.apply_affine(canon.affine, idx))


def test_clinical_copy_grid_content_and_fidelity(flair: nib.Nifti1Image, case: Path) -> None:
    spec = GridSpec("axial", 1.0, 2.0, (6.0, 0.0, 0.0), (240, 240, 160), bias=0.0)
    sim = clinical_copy(flair, spec, seed=1)
    assert sim.get_data_dtype() == np.float32
    assert sim.shape == (240, 240, 80)
    zooms = np.linalg.norm(sim.affine[:3, :3], axis=0)
    np.testing.assert_allclose(zooms, [1.0, 1.0, 2.0], atol=1e-6)
    normal = sim.affine[:3, 2] / zooms[2]
    assert math.degrees(math.acos(abs(normal[2]))) == pytest.approx(6.0, abs=0.01)
    # content lands where the input's content is
    assert np.linalg.norm(_com(sim) - _com(flair)) < 2.0
    # back on the input grid, it correlates with the input inside the brain
    back = resample(np.asanyarray(sim.dataobj), sim.affine, flair.affine, flair.shape)
    mask = np.asanyarray(nib.load(str(case / "brainmask.nii.gz")).dataobj) > 0
    mask &= back != 0
    original = np.asanyarray(flair.dataobj)[mask]
    r = np.corrcoef(original, back[mask])[0, 1]
    assert r > 0.9, r
    # deterministic, and outside the input is 0
    again = clinical_copy(flair, spec, seed=1)
    assert np.array_equal(np.asanyarray(again.dataobj), np.asanyarray(sim.dataobj))
    assert float(np.asanyarray(sim.dataobj)[0, 0, 0]) == 0.0


def test_clinical_copy_sagittal_tilt_and_bias(flair: nib.Nifti1Image) -> None:
    base = GridSpec("sagittal", 0.9, 3.0, (0.0, 0.0, 4.0), (120, 100, 30), (3, -2, 1))
    biased = GridSpec(**{**base.__dict__, "bias": 0.3})
    plain = np.asanyarray(clinical_copy(flair, base, seed=5).dataobj)
    sim = clinical_copy(flair, biased, seed=5)
    zooms = np.linalg.norm(sim.affine[:3, :3], axis=0)
    np.testing.assert_allclose(zooms, [0.9, 0.9, 3.0], atol=1e-6)
    normal = sim.affine[:3, 2] / zooms[2]
    assert math.degrees(math.acos(abs(normal[0]))) == pytest.approx(4.0, abs=0.01)
    data = np.asanyarray(sim.dataobj)
    inside = plain > 0.5
    ratio = data[inside] / plain[inside]
    assert ratio.max() / ratio.min() > 1.2  # not a constant
    assert ratio.min() >= math.exp(-0.3) - 1e-4 and ratio.max() <= math.exp(0.3) + 1e-4
    assert np.all(data[plain == 0] == 0)  # 0 stays 0
    other = np.asanyarray(clinical_copy(flair, biased, seed=6).dataobj)
    assert not np.allclose(other, data)


def test_default_grids_span_the_issue_ranges() -> None:
    pixels = [g.pixel for g in DEFAULT_GRIDS.values()]
    slices = [g.slice for g in DEFAULT_GRIDS.values()]
    tilts = [max(abs(t) for t in g.tilt) for g in DEFAULT_GRIDS.values()]
    assert min(pixels) == 0.45 and max(pixels) == 1.0
    assert min(slices) <= 1.0 and max(slices) == 5.0
    assert all(3 <= t <= 10 for t in tilts)
    assert len({g.fov for g in DEFAULT_GRIDS.values()}) == len(DEFAULT_GRIDS)
    assert all(0 < g.bias <= 0.4 for g in DEFAULT_GRIDS.values())


@pytest.fixture(scope="module")
def study(case: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list]:
    root = tmp_path_factory.mktemp("simulated")
    sims = build_study({"flair": case / "Flair_subtrMeanDivStd.nii.gz",
                        "t1ce": case / "T1c_subtrMeanDivStd.nii.gz"}, root / "dicom", seed=3)
    records = import_study(root / "dicom", root / "imported")
    return root, sims, records


def test_build_study_imports_with_roles_and_geometry(study: tuple[Path, dict, list]) -> None:
    root, sims, records = study
    by_desc = {r.description: r for r in records}
    assert set(by_desc) == {"3-PLANE LOC", "AX DWI", "AX FLAIR", "SAG 3D T1 MPRAGE POST GAD"}
    for desc in ("3-PLANE LOC", "AX DWI"):
        assert by_desc[desc].role is None and by_desc[desc].nifti is None
        assert by_desc[desc].reason
    assert by_desc["3-PLANE LOC"].kind == "localizer"
    assert by_desc["AX DWI"].kind == "diffusion"
    for role, desc in (("flair", "AX FLAIR"), ("t1ce", "SAG 3D T1 MPRAGE POST GAD")):
        record = by_desc[desc]
        assert record.role == role, record.why
        imported = nib.Nifti1Image.from_filename(str(root / "imported" / record.nifti))
        sim = sims[role]
        np.testing.assert_allclose(_corners(imported), _corners(sim), atol=0.01)
        first = pydicom.dcmread(sorted((root / "dicom").glob(f"*_{role}/*.dcm"))[0])
        step = float(first.RescaleSlope)
        a = np.asanyarray(nib.as_closest_canonical(imported).dataobj)
        b = np.asanyarray(nib.as_closest_canonical(sim).dataobj)
        assert np.abs(a - b).max() <= step / 2 + 1e-6
        spec = DEFAULT_GRIDS[role]
        assert [float(v) for v in first.PixelSpacing] == pytest.approx([spec.pixel] * 2)
        assert float(first.SliceThickness) == pytest.approx(spec.slice)
        assert first.StudyInstanceUID == pydicom.dcmread(
            sorted((root / "dicom").glob("1_*/*.dcm"))[0]).StudyInstanceUID


def test_dciodvfy_reports_no_errors(study: tuple[Path, dict, list]) -> None:
    tool = shutil.which("dciodvfy")
    assert tool, "dciodvfy (dicom3tools: apt-get install dicom3tools) is not on PATH"
    root = study[0]
    folders = sorted(p for p in (root / "dicom").iterdir() if p.is_dir())
    assert len(folders) == 4
    for folder in folders:
        path = sorted(folder.glob("*.dcm"))[1]
        run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
        report = run.stdout + run.stderr
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert not errors, (folder.name, errors)
