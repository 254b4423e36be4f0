"""seg.nii.gz -> seg.dcm (DICOM Segmentation, highdicom) -> the same labels on the source grid."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from mrimaster.errors import DataError
from mrimaster.imaging.dicom_import import import_study
from mrimaster.imaging.dicom_seg import SEGMENTS, read_dicom_seg, write_dicom_seg

GE_FOLDER = "dicom-scanners/ge-3d-t1-phantom"


def _spheres(shape: tuple[int, ...], spheres: list[tuple[tuple[float, float, float], float, int]]
             ) -> np.ndarray:
    """``(X, Y, Z)`` uint8 labels: each ``(centre (voxels), radius (voxels), label)`` painted in
    turn (later ones over earlier ones)."""
    grid = np.indices(shape, dtype=np.float32)
    out = np.zeros(shape, np.uint8)
    for centre, radius, label in spheres:
        d2 = sum((grid[k] - centre[k]) ** 2 for k in range(3))
        out[d2 <= radius**2] = label
    return out


def _convert(folder: Path, out: Path) -> tuple[nib.Nifti1Image, list[Path]]:
    records = [r for r in import_study(folder, out) if r.nifti]
    assert len(records) == 1, [r.reason for r in import_study(folder, out)]
    img = nib.load(str(out / records[0].nifti))
    return img, sorted(records[0].sources)


@pytest.fixture(scope="module")
def ge(data_root: Path, tmp_path_factory: pytest.TempPathFactory
       ) -> tuple[nib.Nifti1Image, list[Path]]:
    """The GE 3D T1 phantom series (130 classic slices) converted: ``(NIfTI, source files)``."""
    img, files = _convert(data_root / GE_FOLDER, tmp_path_factory.mktemp("ge"))
    assert img.shape == (256, 256, 130) and len(files) == 130
    return img, files


@pytest.fixture(scope="module")
def ge_seg(ge: tuple[nib.Nifti1Image, list[Path]], tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Path, np.ndarray]:
    """A brats2021 SEG of the GE series (labels 1, 2, 4): ``(seg.dcm, label map)``."""
    img, files = ge
    labels = _spheres(img.shape, [((120, 140, 60), 30, 2), ((115, 135, 62), 14, 1),
                                  ((125, 138, 58), 7, 4), ((40, 60, 20), 5, 4)])
    out = write_dicom_seg(nib.Nifti1Image(labels, img.affine), files,
                          tmp_path_factory.mktemp("seg") / "seg.dcm", convention="brats2021",
                          algorithm_version="unet3d-test-1.0")
    return out, labels


def test_round_trip_brats2021(ge, ge_seg) -> None:
    img, files = ge
    path, labels = ge_seg
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 4}
    back = read_dicom_seg(path, img, files)
    assert back.dtype == np.uint8 and back.shape == labels.shape
    np.testing.assert_array_equal(back, labels)


def test_round_trip_without_enhancing_and_shuffled_files(ge, tmp_path: Path) -> None:
    img, files = ge
    labels = _spheres(img.shape, [((100, 100, 70), 20, 2), ((100, 104, 70), 8, 1)])
    shuffled = list(files)
    random.Random(7).shuffle(shuffled)
    out = write_dicom_seg(nib.Nifti1Image(labels, img.affine), shuffled, tmp_path / "seg.dcm",
                          convention="brats2021", algorithm_version="v2")
    assert len(pydicom.dcmread(out).SegmentSequence) == 3  # the empty ET segment is described
    random.Random(8).shuffle(shuffled)
    np.testing.assert_array_equal(read_dicom_seg(out, img, shuffled), labels)


def test_round_trip_wt(ge, tmp_path: Path) -> None:
    img, files = ge
    labels = _spheres(img.shape, [((130, 120, 64), 25, 1), ((30, 200, 5), 3, 1)])
    out = write_dicom_seg(nib.Nifti1Image(labels, img.affine), files, tmp_path / "seg.dcm",
                          convention="wt", algorithm_version="v1")
    ds = pydicom.dcmread(out)
    assert [str(s.SegmentedPropertyTypeCodeSequence[0].CodeValue)
            for s in ds.SegmentSequence] == ["108369006"]
    np.testing.assert_array_equal(read_dicom_seg(out, img, files), labels)


def test_whole_tumour_result_folder_is_exported_as_a_whole_tumour_segment(
        ge, tmp_path: Path) -> None:
    """A result folder's whole-tumour-only mask (``wt.nii.gz``, found through its
    ``volumes.json``) becomes one "Neoplasm" segment, never the BraTS "Necrosis" of label 1;
    a folder written before ``wt.nii.gz`` (``seg.nii.gz``, convention ``wt``) the same."""
    import json

    from mrimaster.segmentation.outputs import result_mask, save_mask

    img, files = ge
    labels = _spheres(img.shape, [((130, 120, 64), 25, 1)])
    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir()
    old.mkdir()
    save_mask(nib.Nifti1Image(labels, img.affine), new, "wt")
    (new / "volumes.json").write_text(json.dumps({"label_convention": "wt",
                                                  "mask_file": "wt.nii.gz"}))
    nib.save(nib.Nifti1Image(labels, img.affine), str(old / "seg.nii.gz"))
    (old / "volumes.json").write_text(json.dumps({"label_convention": "wt"}))
    for folder in (new, old):
        mask, convention = result_mask(folder)
        assert convention == "wt" and mask.name == ("wt.nii.gz" if folder == new else
                                                    "seg.nii.gz")
        out = write_dicom_seg(nib.load(str(mask)), files, folder / "seg.dcm",
                              convention=convention, algorithm_version="v1")
        ds = pydicom.dcmread(out)
        assert [(str(s.SegmentLabel), str(s.SegmentedPropertyTypeCodeSequence[0].CodeValue))
                for s in ds.SegmentSequence] == [("WT whole tumour", "108369006")]
        np.testing.assert_array_equal(read_dicom_seg(out, img, files), labels)


def _oblique_series(folder: Path, tilt_deg: float = 7.0) -> None:
    """A small classic MR series tilted by ``tilt_deg`` about the patient's left-right axis,
    12 slices of 24 rows x 32 columns, written with pydicom in reversed instance order."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    t = np.deg2rad(tilt_deg)
    row_dir = np.array([1.0, 0.0, 0.0])
    col_dir = np.array([0.0, np.cos(t), np.sin(t)])
    normal = np.cross(row_dir, col_dir)
    study, series, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(12):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"s{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_ref, ""
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "Oblique^Phantom", "OBL1"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20240101", "1200"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 3, 12 - k, "oblique T1"
        ds.Manufacturer = "synthetic"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = (
            "GR", "SP", "", "3D")
        ds.ImageOrientationPatient = [*row_dir.tolist(), *col_dir.tolist()]
        ds.ImagePositionPatient = (np.array([-15.0, -20.0, 10.0]) + 2.0 * k * normal).tolist()
        ds.PixelSpacing, ds.SliceThickness = [0.9, 1.1], 2.0
        ds.Rows, ds.Columns, ds.SamplesPerPixel = 24, 32, 1
        ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored = "MONOCHROME2", 16, 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.PixelData = rng.integers(0, 1000, (24, 32), dtype=np.uint16).tobytes()
        ds.save_as(folder / f"s{k}.dcm", enforce_file_format=True)


def test_round_trip_oblique_synthetic_series(tmp_path: Path) -> None:
    _oblique_series(tmp_path / "dicom")
    img, files = _convert(tmp_path / "dicom", tmp_path / "nifti")
    assert img.shape == (32, 24, 12)
    assert abs(np.degrees(np.arccos(abs(img.affine[2, 2]) / 2.0)) - 7.0) < 0.01  # tilted
    labels = _spheres(img.shape, [((16, 12, 6), 6, 2), ((15, 11, 6), 3, 1), ((17, 12, 7), 1.5, 4)])
    labels[0, 0, 0] = 4  # a corner voxel: the row/column/slice directions must all be right
    out = write_dicom_seg(nib.Nifti1Image(labels, img.affine), files[::-1],
                          tmp_path / "seg.dcm", convention="brats2021", algorithm_version="v1")
    np.testing.assert_array_equal(read_dicom_seg(out, img, files), labels)


def test_seg_references_source_series_and_codes(ge, ge_seg) -> None:
    _, files = ge
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    ds = pydicom.dcmread(ge_seg[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.Modality == "SEG"
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert ds.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert ds.SeriesNumber == 9001 and ds.SeriesDescription == "MRIMaster tumour segmentation"
    assert ds.SegmentationType == "BINARY" and ds.ContentCreatorName and ds.Manufacturer
    (ref,) = ds.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in sources}
    framed = {fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
              for fg in ds.PerFrameFunctionalGroupsSequence}
    assert framed <= {s.SOPInstanceUID for s in sources}
    for item, spec in zip(ds.SegmentSequence, SEGMENTS["brats2021"], strict=True):
        for seq, code in ((item.SegmentedPropertyCategoryCodeSequence[0], spec.category),
                          (item.SegmentedPropertyTypeCodeSequence[0], spec.type)):
            assert (seq.CodeValue, seq.CodingSchemeDesignator) == (code.value,
                                                                   code.scheme_designator)
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == "MRIMaster 3D U-Net"
        algo = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmVersion == "unet3d-test-1.0"
        assert algo.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"


def test_dciodvfy_finds_no_error(ge_seg) -> None:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.fail("dciodvfy (dicom3tools) is not installed: apt-get install dicom3tools")
    run = subprocess.run([tool, str(ge_seg[0])], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, "\n".join(errors)


def test_label_map_off_the_source_grid_is_refused(ge, tmp_path: Path) -> None:
    img, files = ge
    labels = np.zeros(img.shape, np.uint8)
    labels[100:110, 100:110, 60:70] = 2
    with pytest.raises(DataError, match="shape"):
        write_dicom_seg(nib.Nifti1Image(labels[:, :, :-1], img.affine), files,
                        tmp_path / "a.dcm", convention="brats2021", algorithm_version="v1")
    shifted = img.affine.copy()
    shifted[:3, 3] += shifted[:3, 2] * 0.5  # half a slice along the normal
    with pytest.raises(DataError, match="affine"):
        write_dicom_seg(nib.Nifti1Image(labels, shifted), files, tmp_path / "b.dcm",
                        convention="brats2021", algorithm_version="v1")
    with pytest.raises(DataError, match="convention"):
        write_dicom_seg(nib.Nifti1Image(labels + 3, img.affine), files, tmp_path / "c.dcm",
                        convention="brats2021", algorithm_version="v1")
