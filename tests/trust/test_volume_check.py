"""The 3D brain-MRI check: the 2D check on slices across a volume, before the segmenter reads it
(mrimaster.trust.volume_check, mrimaster.segmentation.brain_mri). Real brain MRI of every shared
source passes; a real scanner's QA phantom and generated non-MRI volumes are refused, through
the command and the web app, with nothing segmented."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrimaster.data import non_mri_volumes
from mrimaster.segmentation.cases import find_cases
from mrimaster.settings import SHIPPED_MODELS
from mrimaster.trust.brain_check import BrainCheck, load_brain_check
from mrimaster.trust.volume_check import (
    MIN_EXTENT_MM,
    PER_AXIS,
    VolumeVerdict,
    check_nifti,
    check_volume,
    isotropic,
    volume_slices,
)
from tests.conftest import constant_brain_check

PHANTOM = "dicom-scanners/ge-3d-t1-phantom"


@pytest.fixture(scope="module")
def check() -> BrainCheck:
    return load_brain_check(SHIPPED_MODELS)


# ---- units, synthetic --------------------------------------------------------------------

@pytest.mark.parametrize(("rejected", "slices", "refused"),
                         [(0, 30, False), (15, 30, False), (16, 30, True), (0, 0, True),
                          (0, 9, True), (0, 10, False)])
def test_a_volume_is_refused_when_more_than_half_its_slices_are(rejected: int, slices: int,
                                                                 refused: bool) -> None:
    verdict = VolumeVerdict(slices, rejected, 0.5)
    assert verdict.refused is refused
    assert verdict.as_dict()["refused"] is refused
    assert ("no plane" in verdict.describe()) is (slices == 0)
    assert ("too thin" in verdict.describe()) is (0 < slices < 10)


def test_nan_volumes_and_a_singleton_fourth_axis(check: BrainCheck) -> None:
    """A NaN volume is refused by name before the check (a study would otherwise carry NaN
    into N4); a 4D image with one volume is checked as the 3D volume it holds."""
    from mrimaster.errors import DataError
    from mrimaster.segmentation.brain_mri import check_image
    from mrimaster.segmentation.runtime import SegInfo

    seg = SegInfo(["flair"], (8, 8, 8), False)
    seg.brain_check = check
    volume, _ = non_mri_volumes.generate("spheres", seed=1)
    with_nan = volume.copy()
    with_nan[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="the FLAIR .x. holds NaN"):
        check_image(seg, "the FLAIR (x)", nib.Nifti1Image(with_nan, np.eye(4)))
    four = nib.Nifti1Image(volume[..., None], np.eye(4))
    assert check_nifti(check, four) == check_volume(check, volume, (1.0, 1.0, 1.0))


def test_isotropic_resampling_keeps_the_physical_size() -> None:
    vol = np.ones((40, 40, 8), np.float32)
    assert isotropic(vol, (1.0, 1.0, 5.0)).shape == (40, 40, 40)
    assert isotropic(vol, (1.0, 1.0, 1.0)) is vol


def test_a_slab_is_cut_only_in_its_own_plane() -> None:
    """Content 150 x 150 x 40 voxels: axial slices show 150 x 150; coronal and sagittal ones
    would be 40-voxel strips, so they are not cut."""
    vol = np.zeros((170, 170, 60), np.float32)
    vol[10:160, 10:160, 10:50] = np.random.default_rng(0).uniform(1, 2, (150, 150, 40))
    cuts = volume_slices(vol, per_axis=4, min_extent=MIN_EXTENT_MM)
    assert {c[0].split("/")[0] for c in cuts} == {"axial"} and len(cuts) == 4
    assert len(volume_slices(vol, per_axis=4)) == 12  # without the rule: all three planes


def test_the_verdict_follows_the_2d_check() -> None:
    vol = np.zeros((150, 150, 150), np.float32)
    vol[20:130, 20:130, 20:130] = np.random.default_rng(1).uniform(1, 2, (110, 110, 110))
    yes = check_volume(constant_brain_check(5.0), vol, (1.0, 1.0, 1.0))
    no = check_volume(constant_brain_check(-5.0), vol, (1.0, 1.0, 1.0))
    assert (yes.slices, yes.rejected, yes.refused) == (3 * PER_AXIS, 0, False)
    assert (no.slices, no.rejected, no.refused) == (3 * PER_AXIS, 3 * PER_AXIS, True)
    small = check_volume(constant_brain_check(5.0), vol[:60, :60, :60], (1.0, 1.0, 1.0))
    assert small.slices == 0 and small.refused  # too small to be a brain in any plane


# ---- the shipped check on real and generated volumes ---------------------------------------

@pytest.mark.realdata
def test_every_shared_brain_mri_volume_passes(check: BrainCheck, data_root: Path) -> None:
    """Every sequence of every brats-mini case as stored, and the same FLAIR with 5 mm slices
    along each axis in turn (a clinical 2D sequence): none refused."""
    seen = 0
    for case in find_cases(data_root / "brats-mini"):
        for modality, path in case.images.items():
            img = nib.as_closest_canonical(nib.load(str(path)))
            verdict = check_nifti(check, img)
            assert not verdict.refused and verdict.rejected <= 3, (case.name, modality, verdict)
            seen += 1
            if modality != "flair":
                continue
            data = np.asarray(img.dataobj, np.float32)
            for axis in range(3):
                n = data.shape[axis] // 5 * 5
                cut = np.take(data, np.arange(n), axis=axis)
                shape = list(cut.shape)
                shape[axis:axis + 1] = [n // 5, 5]
                affine = img.affine.copy()
                affine[:3, axis] *= 5
                thick = check_nifti(check, nib.Nifti1Image(cut.reshape(shape).mean(axis + 1),
                                                           affine))
                assert not thick.refused, (case.name, axis, thick)
    assert seen >= 28


@pytest.mark.realdata
def test_a_real_scanner_phantom_is_refused(check: BrainCheck, data_root: Path,
                                           tmp_path: Path) -> None:
    from mrimaster.imaging.inputs import gather, load3d

    chosen, _ = gather(data_root / PHANTOM, tmp_path, {})
    (seq,) = chosen.values()
    verdict = check_nifti(check, load3d(seq))
    assert verdict.refused and verdict.rejected > 0.9 * verdict.slices, verdict


@pytest.mark.parametrize("kind", list(non_mri_volumes.KINDS))
def test_generated_non_mri_volumes_are_refused(check: BrainCheck, kind: str) -> None:
    volume, spacing = non_mri_volumes.generate(kind, seed=7)
    assert volume.ndim == 3 and np.isfinite(volume).all()
    assert check_volume(check, volume, spacing).refused


# ---- through the command and the web app ---------------------------------------------------

@pytest.mark.realdata
def test_seg_predict_refuses_a_phantom_and_writes_nothing(data_root: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    from mrimaster.cli.main import main

    out = tmp_path / "out"
    assert main(["seg", "predict", "--case", str(data_root / PHANTOM), "--role",
                 "5=flair", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not look like a brain MRI" in err and "FLAIR" in err, err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.realdata
def test_a_real_case_records_the_check(data_root: Path, tmp_path: Path) -> None:
    from mrimaster.cli.main import main

    case = next(c for c in find_cases(data_root / "brats-mini") if "t1ce" in c.images)
    out = tmp_path / "out"
    assert main(["seg", "predict", "--flair", str(case.images["flair"]), "--t1ce",
                 str(case.images["t1ce"]), "--out", str(out), "--fast"]) == 0
    info = json.loads((out / "volumes.json").read_text())
    figures = {m: s["brain_mri_check"] for m, s in info["study"]["sequences"].items()}
    assert set(figures) == {"flair", "t1ce"}
    assert all(f["run"] and not f["refused"] and f["slices"] == 3 * PER_AXIS
               for f in figures.values()), figures


def test_the_setting_switches_the_check_and_results_say_so() -> None:
    from mrimaster.errors import ConfigError
    from mrimaster.segmentation.loading import load_segmenter_for_inference
    from mrimaster.settings import load_settings

    assert load_settings({}).check_brain_mri is True
    assert load_settings({"MRIMASTER_CHECK_BRAIN_MRI": "OFF"}).check_brain_mri is False
    with pytest.raises(ConfigError, match="MRIMASTER_CHECK_BRAIN_MRI"):
        load_settings({"MRIMASTER_CHECK_BRAIN_MRI": "maybe"})
    on = load_segmenter_for_inference("default", SHIPPED_MODELS, fast=True)
    off = load_segmenter_for_inference("default", SHIPPED_MODELS, fast=True,
                                       check_brain_mri=False)
    assert isinstance(on.brain_check, BrainCheck) and not on.notes
    assert off.brain_check is None
    assert any("switched off (MRIMASTER_CHECK_BRAIN_MRI=off)" in n for n in off.notes)


@pytest.mark.realdata
def test_the_api_checks_a_case_given_as_volumes(data_root: Path, tmp_path: Path) -> None:
    """A case folder segmented without the study path (``api.Segmenter``: no registration, no
    stripping) is checked on its channels as the network gets them: a real case passes with
    its figures recorded; the QA phantom as its FLAIR is refused, nothing written."""
    import shutil

    from mrimaster.api import Segmenter
    from mrimaster.errors import DataError
    from mrimaster.imaging.inputs import gather

    seg = Segmenter.load("default", fast=True)
    case = next(c for c in find_cases(data_root / "brats-mini") if "t1ce" in c.images)
    folder = Path(case.images["flair"]).parent
    seg.segment(folder, tmp_path / "real")
    info = json.loads((tmp_path / "real" / "volumes.json").read_text())
    check = info["brain_mri_check"]
    assert check["run"] and set(check["sequences"]) == set(info["modalities_used"])
    assert all(f["rejected"] <= 3 and f["slices"] == 3 * PER_AXIS
               for f in check["sequences"].values()), check
    chosen, _ = gather(data_root / PHANTOM, tmp_path / "import", {})
    (seq,) = chosen.values()
    (tmp_path / "phantom").mkdir()
    shutil.copyfile(seq.path, tmp_path / "phantom" / "flair.nii.gz")
    with pytest.raises(DataError, match="the flair volume does not look like a brain MRI"):
        seg.segment(tmp_path / "phantom", tmp_path / "out")
    assert not (tmp_path / "out").exists()
