"""The study importer: real scanner series against dcm2niix, zip limits, compressed pixels."""

from __future__ import annotations

import itertools
import json
import subprocess
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from mrimaster.cli.main import main
from mrimaster.errors import DataError, MRIMasterError
from mrimaster.imaging.dicom_import import import_study
from mrimaster.imaging.volumes import affine, frames_of, layout, voxels

STRUCTURAL_ROLES = {"flair", "t1", "t1ce", "t2"}


def dcm2niix_bin() -> str:
    dcm2niix = pytest.importorskip("dcm2niix")
    return str(dcm2niix.bin)


def run_dcm2niix(folder: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([dcm2niix_bin(), "-z", "n", "-b", "n", "-f", "%s", "-o", str(out),
                    str(folder)], check=True, capture_output=True, timeout=60)
    return sorted(out.glob("*.nii"))


def corners(img: nib.Nifti1Image) -> np.ndarray:
    """The world (RAS) positions of the 8 corners of the voxel grid, in a fixed order: each
    corner named by its RAS side so that grids of different axis order compare."""
    shape = np.asarray(img.shape[:3]) - 1
    pts = np.asarray([[a * shape[0], b * shape[1], c * shape[2]]
                      for a, b, c in itertools.product((0, 1), repeat=3)], float)
    world = nib.affines.apply_affine(img.affine, pts)
    return world[np.lexsort(world.T[::-1].round(1))]


def assert_same_volume(ours: nib.Nifti1Image, ref: nib.Nifti1Image, atol: float = 1e-3
                       ) -> None:
    assert np.abs(corners(ours) - corners(ref)).max() < 0.5
    a = nib.as_closest_canonical(ours)
    b = nib.as_closest_canonical(ref)
    assert a.shape == b.shape[:3]
    np.testing.assert_allclose(a.get_fdata(), b.get_fdata(), rtol=1e-5, atol=atol)
    np.testing.assert_allclose(a.affine, b.affine, atol=0.01)


# --- real scanner series ----------------------------------------------------------------


@pytest.fixture(scope="module")
def scanners(data_root: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("scanners")
    import_study(data_root / "dicom-scanners", out)
    return out, json.loads((out / "series.json").read_text())


@pytest.mark.realdata
def test_every_scanner_series_is_listed_and_4d_ones_are_refused(
        scanners: tuple[Path, list[dict]]) -> None:
    out, records = scanners
    assert len(records) == 33  # every series of every folder, one record each
    for r in records:
        assert set(r) >= {"series_number", "description", "role", "why", "kind", "nifti",
                          "reason"}
        assert (r["nifti"] is None) != (r["reason"] is None)
        if r["nifti"]:
            assert (out / r["nifti"]).is_file()
    converted = [r for r in records if r["nifti"]]
    assert [r["description"] for r in converted] == ["3D Ax T1 MP-RAGE_R22"]
    by_desc = {r["description"]: r for r in records}
    assert by_desc["Ax DWI TENSOR R2MB2"]["n_volumes"] == 7
    assert by_desc["B0 NS"]["n_volumes"] == 2  # Philips enhanced field map: read, not refused
    assert by_desc["REST1 w SMS PF7-8"]["n_volumes"] == 4  # Siemens XA10 enhanced fMRI
    assert "lacks its geometry" not in json.dumps(records)
    for r in records:
        if r["reason"]:  # each refusal names what the series is
            assert "4D" in r["reason"] or "mosaic" in r["reason"], r
            assert r["kind"] in r["reason"]


@pytest.mark.realdata
def test_no_epi_dwi_fmri_or_field_map_gets_a_structural_role(
        scanners: tuple[Path, list[dict]]) -> None:
    _, records = scanners
    for r in records:
        if r["description"] != "3D Ax T1 MP-RAGE_R22":
            assert r["role"] not in STRUCTURAL_ROLES, r
            assert r["kind"] != "structural", r


@pytest.mark.realdata
def test_3d_series_matches_dcm2niix(data_root: Path, scanners: tuple[Path, list[dict]],
                                    tmp_path: Path) -> None:
    out, records = scanners
    (ref,) = run_dcm2niix(data_root / "dicom-scanners" / "ge-3d-t1-phantom", tmp_path)
    (record,) = [r for r in records if r["nifti"]]
    assert_same_volume(nib.load(out / record["nifti"]), nib.load(ref))


@pytest.mark.realdata
def test_enhanced_multiframe_volumes_match_dcm2niix(data_root: Path, tmp_path: Path) -> None:
    """The Philips enhanced field map: 64 frames, 2 volumes of 32 slices (magnitude, then the
    field map in Hz), each on dcm2niix's grid. The field map's values match dcm2niix's; the
    magnitude's are proportional (dcm2niix applies Philips' private scale slope, we the
    standard rescale slope)."""
    folder = data_root / "dicom-scanners" / "enhanced-multiframe" / "Philips"
    (path,) = [p for p in folder.iterdir() if p.is_file()]
    frames = frames_of(path, pydicom.dcmread(path, stop_before_pixels=True), "B0 NS")
    arranged = layout(frames, "B0 NS")
    assert (arranged.n_volumes, arranged.n_positions) == (2, 32)
    magnitude_ref, fieldmap_ref = (nib.load(p) for p in run_dcm2niix(folder, tmp_path))
    magnitude, fieldmap = (nib.Nifti1Image(voxels(v, "B0 NS"), affine(v, "B0 NS"))
                           for v in arranged.volumes)
    assert_same_volume(fieldmap, fieldmap_ref, atol=0.01)  # dcm2niix: int16 x float32 slope
    assert np.abs(corners(magnitude) - corners(magnitude_ref)).max() < 0.5
    a = nib.as_closest_canonical(magnitude).get_fdata().ravel()
    b = nib.as_closest_canonical(magnitude_ref).get_fdata().ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.99999
    assert np.array_equal(a > 0, b > 0)


@pytest.mark.realdata
def test_an_enhanced_3d_series_imports_like_its_classic_files_and_dcm2niix(
        data_root: Path, scanners: tuple[Path, list[dict]], tmp_path: Path) -> None:
    """The shared scanner DICOM's enhanced multi-frame series are all 4D (fMRI, field maps):
    the GE 3D T1's 130 classic files made into one Legacy Converted Enhanced MR Image
    (highdicom, PS3.3 A.71) go through ``dicom import`` whole, and give the classic files'
    volume and dcm2niix's volume of the enhanced file."""
    import highdicom as hd

    classic_out, records = scanners
    (classic,) = [r for r in records if r["nifti"]]
    folder = data_root / "dicom-scanners" / "ge-3d-t1-phantom"
    slices = [pydicom.dcmread(p) for p in sorted(folder.rglob("*")) if p.is_file()]
    slices = [d for d in slices if d.SeriesDescription == classic["description"]]
    assert len(slices) == 130
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        slices[::-1], series_instance_uid=hd.UID(), series_number=99,
        sop_instance_uid=hd.UID(), instance_number=1)
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "t1.dcm")
    import_study(tmp_path / "enhanced", tmp_path / "out")
    (record,) = json.loads((tmp_path / "out" / "series.json").read_text())
    assert record["role"] == "t1" and record["kind"] == "structural", record
    assert record["files"] == 1 and record["n_volumes"] == 1
    ours = nib.load(tmp_path / "out" / record["nifti"])
    assert_same_volume(ours, nib.load(classic_out / classic["nifti"]))
    (ref,) = run_dcm2niix(tmp_path / "enhanced", tmp_path / "dcm2niix")
    assert_same_volume(ours, nib.load(ref))


@pytest.mark.realdata
def test_real_jpeg_lossless_and_jpeg2000_decode(data_root: Path, tmp_path: Path) -> None:
    """Siemens mosaics stored JPEG Lossless (process 14 SV1) and JPEG 2000: every pixel of the
    first mosaic equals dcm2niix's first volume (the same values, tiled)."""
    for name in ("AxAsc36mb2a", "AxInt36mb"):
        folder = data_root / "dicom-scanners" / "siemens-mosaic-orientation" / "axmb" / name
        path = sorted(p for p in folder.iterdir() if p.is_file())[0]
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID.is_compressed
        pixels = ds.pixel_array
        assert pixels.shape == (ds.Rows, ds.Columns)
        (ref,) = run_dcm2niix(folder, tmp_path / name)
        first = np.asarray(nib.load(ref).dataobj)[..., 0]
        assert np.sort(pixels[pixels > 0], axis=None).tolist()[:1000] == \
            np.sort(first[first > 0], axis=None).tolist()[:1000]
        assert int(pixels.astype(np.int64).sum()) == int(first.astype(np.int64).sum())


# --- synthetic series -------------------------------------------------------------------


def write_series(folder: Path, n: int = 5, size: int = 64, blank: bool = False,
                 syntax: str = ExplicitVRLittleEndian, description: str = "AX T2") -> Path:
    """A classic single-frame MR series of ``n`` oblique-free axial slices, written in
    shuffled file order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    for k in rng.permutation(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = pydicom.uid.MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
        ds.PatientID = "TEST"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber, ds.InstanceNumber = 3, int(k) + 1
        ds.SeriesDescription = description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
        ds.ImagePositionPatient = [-100.0, -110.0, 20.0 + 3.0 * float(k)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.5, 0.5]
        ds.SliceThickness = 3.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        pixels = np.zeros((size, size), np.uint16)
        if blank:
            pixels[size // 2, size // 2] = 100 + int(k)  # mostly air: compresses > 300 times
        else:
            pixels[:] = (np.arange(size * size).reshape(size, size) * (k + 1)) % 4000
        ds.PixelData = pixels.tobytes()
        if syntax != ExplicitVRLittleEndian:
            ds.compress(syntax)
        ds.save_as(folder / f"IM{k:04d}", enforce_file_format=True)
    return folder


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder.parent).as_posix())
    return archive


def test_mostly_air_512_series_in_a_zip_is_accepted(tmp_path: Path) -> None:
    archive = zip_folder(write_series(tmp_path / "study" / "s3", n=4, size=512, blank=True),
                         tmp_path / "study.zip")
    with zipfile.ZipFile(archive) as zf:
        assert max(i.file_size / i.compress_size for i in zf.infolist()
                   if not i.is_dir()) > 300
    (record,) = import_study(archive, tmp_path / "out")
    assert record.nifti and record.reason is None
    img = nib.load(tmp_path / "out" / record.nifti)
    assert img.shape == (512, 512, 4)
    assert np.allclose(np.diag(img.affine)[:3], [-0.5, -0.5, 3.0])
    assert img.get_fdata()[256, 256].tolist() == [100, 101, 102, 103]  # sorted by position


def test_zip_over_the_total_size_or_entry_count_is_refused(tmp_path: Path) -> None:
    archive = zip_folder(write_series(tmp_path / "study" / "s3", n=4, size=512, blank=True),
                         tmp_path / "study.zip")
    with pytest.raises(DataError, match=r"unpacks to 2 MB \(at most 1 MB\)"):
        import_study(archive, tmp_path / "out", max_bytes=1_000_000)
    with pytest.raises(DataError, match=r"holds 4 entries \(at most 3\)"):
        import_study(archive, tmp_path / "out", max_entries=3)


def test_zip_entry_escaping_its_folder_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside.dcm", b"x")
    with pytest.raises(DataError, match="points outside its folder"):
        import_study(archive, tmp_path / "out")
    assert not (tmp_path / "outside.dcm").exists()


def test_rle_series_decodes_like_the_uncompressed_one(tmp_path: Path) -> None:
    plain = import_study(write_series(tmp_path / "plain"), tmp_path / "o1")[0]
    rle = import_study(write_series(tmp_path / "rle", syntax=RLELossless), tmp_path / "o2")[0]
    assert pydicom.dcmread(next((tmp_path / "rle").iterdir())).file_meta.TransferSyntaxUID \
        == RLELossless
    assert plain.nifti and rle.nifti
    a = nib.load(tmp_path / "o1" / plain.nifti)
    b = nib.load(tmp_path / "o2" / rle.nifti)
    assert np.array_equal(a.get_fdata(), b.get_fdata())
    assert np.allclose(a.affine, b.affine)


def test_pydicom_jpeg_ls_lossless_file_decodes_to_the_uncompressed_one() -> None:
    """JPEG-LS lossless through pylibjpeg-libjpeg (pydicom's bundled files, no download; the
    real JPEG Lossless process 14 file is in the realdata test above)."""
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files"
    compressed = pydicom.dcmread(folder / "MR_small_jpeg_ls_lossless.dcm")
    plain = pydicom.dcmread(folder / "MR_small.dcm")
    assert compressed.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
    assert np.array_equal(compressed.pixel_array, plain.pixel_array)


def test_cli_imports_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_series(tmp_path / "study" / "s3")
    (tmp_path / "study" / "notes.txt").write_text("not DICOM")
    assert main(["dicom", "import", str(tmp_path / "study"), "--out",
                 str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "AX T2" in text and "1 series: 1 converted, 0 not" in text
    assert json.loads((tmp_path / "out" / "series.json").read_text())[0]["nifti"]
    assert folder.is_dir()


@pytest.mark.parametrize("case", ["missing", "no-dicom", "bad-zip"])
def test_cli_errors(tmp_path: Path, case: str) -> None:
    if case == "missing":
        path, match = tmp_path / "nope", "no such file or folder"
    elif case == "no-dicom":
        path, match = tmp_path / "empty", "no DICOM image"
        path.mkdir()
        (path / "a.txt").write_text("hello")
    else:
        path, match = tmp_path / "broken.zip", "not a readable zip"
        path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(MRIMasterError, match=match) as info:
        import_study(path, tmp_path / "out")
    assert info.value.hint
    assert main(["dicom", "import", str(path), "--out", str(tmp_path / "out")]) != 0



def test_three_plane_localizer_is_refused_with_what_it_is(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "loc", n=3, description="3-Plane Loc")
    for path, orient in zip(sorted(folder.iterdir()), ([0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1]),
                            strict=False):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [float(v) for v in orient]
        ds.save_as(path)
    (record,) = import_study(folder, tmp_path / "out")
    assert record.nifti is None and record.role is None
    assert record.reason and "mixes slice orientations" in record.reason
    assert "localizer" in record.reason


def test_a_copied_instance_is_read_once_and_the_series_converts(tmp_path: Path) -> None:
    """The same instance (one SOP Instance UID) twice under two file names, as a copy or a
    re-send leaves it: read once; it used to make every position hold "1 to 2 images" and the
    whole series was refused."""
    folder = write_series(tmp_path / "s", n=4)
    first = sorted(folder.iterdir())[0]
    (folder / "copy-of-first").write_bytes(first.read_bytes())
    (record,) = import_study(folder, tmp_path / "out")
    assert record.reason is None and record.nifti, record.reason
    assert nib.load(tmp_path / "out" / record.nifti).shape == (64, 64, 4)
    # a second image at one position with its own UID is another acquisition: still refused
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(folder / "resent-first")
    (record,) = import_study(folder, tmp_path / "out2")
    assert record.nifti is None and "1 to 2 images" in str(record.reason)


def test_a_gantry_tilted_series_is_refused_with_its_angle(tmp_path: Path) -> None:
    """Slices stacked at 15 degrees to their plane (each position shifted along the columns):
    imported before as a sheared volume that the study path then refused with "the volume's
    affine has shear", naming no series."""
    folder = write_series(tmp_path / "tilt", n=4)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        z = float(ds.ImagePositionPatient[2]) - 20.0
        ds.ImagePositionPatient = [-100.0, -110.0 + z * float(np.tan(np.radians(15))), 20.0 + z]
        ds.save_as(path)
    (record,) = import_study(folder, tmp_path / "out")
    assert record.nifti is None and "15.0 degrees" in str(record.reason)
    assert "gantry-tilted" in str(record.reason)


def test_positions_rounded_off_their_normal_give_an_orthogonal_grid(tmp_path: Path) -> None:
    """A drift of under half a pixel across the stack (positions rounded, a 0.1 degree
    wobble) is taken as stacked along the normal: before, such a series imported with a
    sheared affine that the study path refused ("the volume's affine has shear")."""
    from mrimaster.imaging.register import to_sitk

    folder = write_series(tmp_path / "s", n=6)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        z = float(ds.ImagePositionPatient[2]) - 20.0
        ds.ImagePositionPatient = [-100.0, -110.0 + z * float(np.tan(np.radians(0.1))),
                                   20.0 + z]
        ds.save_as(path)
    (record,) = import_study(folder, tmp_path / "out")
    assert record.nifti and record.reason is None, record.reason
    img = nib.load(tmp_path / "out" / record.nifti)
    axes = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-9)
    to_sitk(img)  # no shear refusal


def test_a_slice_without_position_names_the_missing_tag(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "s", n=4)
    path = sorted(folder.iterdir())[1]
    ds = pydicom.dcmread(path)
    del ds.ImagePositionPatient
    ds.save_as(path)
    (record,) = import_study(folder, tmp_path / "out")
    assert record.nifti is None and "it has no ImagePositionPatient" in str(record.reason)
    assert "object has no attribute" not in str(record.reason)
