"""Clinical-looking test studies built from research volumes (BraTS) for the DICOM path.

Research volumes are skull-stripped or not, but always co-registered, resampled to one 1 mm
isotropic grid and stored as NIfTI. A hospital scanner writes nothing like that: each sequence
has its own slice plane (axial, sagittal, coronal) tilted a few degrees to the patient's head,
its own field of view, in-plane resolution (0.45-1 mm) and slice thickness (1-5 mm), a smooth
receive-coil intensity bias, and arrives as DICOM next to series the product must not use
(a 3-plane localizer, diffusion). This module makes such studies from real BraTS cases so the
importer, the role detector and the registration can be tested on what they will meet:

* :func:`~mrimaster.imaging.scanner_grid.clinical_copy` resamples one volume (linear
  interpolation, 0 outside the input) onto the oblique grid a
  :class:`~mrimaster.imaging.scanner_grid.GridSpec` describes and multiplies it by a smooth
  bias field. The input's background level (the most common value on its border: 0 for a
  scanner image, about -3.6 for the z-scored BraTS 2015 volumes) is subtracted first, so air
  is 0 as a scanner writes it.
* :func:`write_dicom_series`, :func:`write_localizer` and :func:`write_dwi` write classic
  single-frame MR Image Storage files (explicit VR little endian, int16 with rescale) with the
  acquisition attributes a scanner records (:data:`ROLE_ATTRIBUTES`).
* :func:`build_study` does it all for one case and returns the simulated images per role,
  which is what the DICOM encodes.

Everything is deterministic for a seed (UIDs included). World coordinates are nibabel's RAS+
millimetres; DICOM's are LPS+ (x and y negated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mrimaster.imaging.scanner_grid import (
    RAS_LPS,
    GridSpec,
    background,
    clinical_copy,
    content_centre,
    grid_affine,
    resample,
)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass
class StudyInfo:
    """The patient and study a simulated study is filed under (DICOM DA/TM strings)."""

    patient_id: str = "SIM0001"
    patient_name: str = "SIMULATED^PATIENT"
    birth_date: str = "19700101"
    sex: str = "O"
    study_date: str = "20240115"
    study_time: str = "093000"
    accession: str = "SIM0001A"
    description: str = "MRI BRAIN W/WO CONTRAST"
    uid_seed: int = 0  # StudyInstanceUID and FrameOfReferenceUID derive from it

    def uid(self, what: str) -> str:
        """A deterministic UID for ``what`` ("study", "frame") of this study."""
        from pydicom.uid import generate_uid

        return str(generate_uid(entropy_srcs=[self.patient_id, what, str(self.uid_seed)]))


# Attributes as scanners write them (Siemens/GE-like 3 T protocols; times in ms, angles in deg).
ROLE_ATTRIBUTES: dict[str, dict[str, Any]] = {
    "flair": {"SeriesDescription": "AX FLAIR", "ScanningSequence": ["SE", "IR"],
              "SequenceVariant": ["SK", "SP", "MP"], "ScanOptions": ["SP", "PFP"],
              "MRAcquisitionType": "2D", "RepetitionTime": 9000.0, "EchoTime": 120.0,
              "InversionTime": 2500.0, "FlipAngle": 150.0, "EchoTrainLength": 16,
              "SequenceName": "*tir2d1_16", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
    "t1": {"SeriesDescription": "AX T1 SE", "ScanningSequence": "SE",
           "SequenceVariant": ["SK", "SP", "OSP"], "ScanOptions": ["SP"],
           "MRAcquisitionType": "2D", "RepetitionTime": 550.0, "EchoTime": 9.5,
           "FlipAngle": 90.0, "EchoTrainLength": 1, "SequenceName": "*se2d1",
           "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
    "t1ce": {"SeriesDescription": "SAG 3D T1 MPRAGE POST GAD", "ScanningSequence": ["GR", "IR"],
             "SequenceVariant": ["SK", "SP", "MP"], "ScanOptions": ["PFP"],
             "MRAcquisitionType": "3D", "RepetitionTime": 2300.0, "EchoTime": 2.98,
             "InversionTime": 900.0, "FlipAngle": 9.0, "EchoTrainLength": 1,
             "SequenceName": "*tfl3d1_16ns", "ContrastBolusAgent": "GADOBUTROL",
             "ContrastBolusRoute": "IV", "ContrastBolusVolume": 7.5,
             "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
    "t2": {"SeriesDescription": "AX T2 FSE", "ScanningSequence": "SE",
           "SequenceVariant": ["SK", "SP", "OSP"], "ScanOptions": ["SP", "PFP"],
           "MRAcquisitionType": "2D", "RepetitionTime": 4500.0, "EchoTime": 100.0,
           "FlipAngle": 150.0, "EchoTrainLength": 18, "SequenceName": "*tse2d1_18",
           "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
}
LOCALIZER_ATTRIBUTES: dict[str, Any] = {
    "SeriesDescription": "3-PLANE LOC", "ScanningSequence": "GR", "SequenceVariant": "SP",
    "ScanOptions": "", "MRAcquisitionType": "2D", "RepetitionTime": 8.6, "EchoTime": 4.0,
    "FlipAngle": 20.0, "EchoTrainLength": 1, "SequenceName": "*fl2d1",
    "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}
DWI_ATTRIBUTES: dict[str, Any] = {
    "SeriesDescription": "AX DWI", "ScanningSequence": "EP", "SequenceVariant": ["SK", "SP"],
    "ScanOptions": ["FS", "PFP"], "MRAcquisitionType": "2D", "RepetitionTime": 6000.0,
    "EchoTime": 80.0, "FlipAngle": 90.0, "EchoTrainLength": 1, "SequenceName": "*ep_b0_1000",
    "ImageType": ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]}

DEFAULT_GRIDS: dict[str, GridSpec] = {
    "flair": GridSpec("axial", 0.9, 4.0, (6.0, 0.0, 0.0), (230, 207, 140), (2, -3, 1), 0.25),
    "t1": GridSpec("axial", 1.0, 3.0, (-3.0, 0.0, 2.0), (240, 240, 135), (-2, 1, 0), 0.15),
    "t1ce": GridSpec("sagittal", 0.9, 1.0, (0.0, 0.0, 4.0), (250, 250, 160), (0, 2, -2), 0.2),
    "t2": GridSpec("axial", 0.45, 5.0, (9.0, 3.0, 0.0), (210, 190, 130), (1, 0, 3), 0.3),
}
DWI_GRID = GridSpec("axial", 1.0, 5.0, (5.0, 0.0, 0.0), (230, 230, 120), (0, 0, 0), 0.1)
DWI_ADC = 0.0008  # mm²/s, a typical brain tissue ADC


# ------------------------------------------------------------------------------------------
# DICOM writing
# ------------------------------------------------------------------------------------------

@dataclass
class _Plane:
    pixels: np.ndarray  # (rows, columns) float
    iop: np.ndarray  # (6,) LPS row then column direction cosines
    ipp: np.ndarray  # (3,) LPS mm, centre of the first transmitted pixel
    spacing: tuple[float, float]  # (between rows, between columns) mm
    thickness: float
    extra: dict[str, Any] = field(default_factory=dict)


def _planes(image: nib.Nifti1Image, extra: dict[str, Any] | None = None) -> list[_Plane]:
    lps = RAS_LPS @ image.affine
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    iop = np.concatenate([lps[:3, 0] / zooms[0], lps[:3, 1] / zooms[1]])
    data = np.asanyarray(image.dataobj)
    return [_Plane(np.asarray(data[:, :, k]).T, iop, (lps @ [0, 0, k, 1])[:3],
                   (float(zooms[1]), float(zooms[0])), float(zooms[2]), dict(extra or {}))
            for k in range(data.shape[2])]


def _ds_value(v: float) -> str:
    return f"{v:.10g}"[:16]


def _write_planes(planes: list[_Plane], folder: Path, *, series_number: int, description: str,
                  attributes: dict[str, Any], study: StudyInfo, seed: int) -> list[Path]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    peak = max(float(np.abs(p.pixels).max()) for p in planes)
    slope = peak / 32000.0 if peak > 0 else 1.0  # 0 stays 0, quantisation step = slope
    series_uid = generate_uid(entropy_srcs=[study.uid("study"), "series", str(series_number),
                                            str(seed)])
    attrs = {k: v for k, v in attributes.items() if k not in ("SeriesDescription", "ImageType")}
    image_type = attributes.get("ImageType") or ["ORIGINAL", "PRIMARY", "M", "ND"]
    paths = []
    for n, plane in enumerate(planes, start=1):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = image_type
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(n)])
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.study_date
        ds.StudyTime = study.study_time
        ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = \
            f"{int(study.study_time[:2]) + 1:02d}{series_number % 60:02d}00"
        ds.AccessionNumber = study.accession
        ds.Modality = "MR"
        ds.Manufacturer = "MRIMaster simulation"
        ds.InstitutionName = "Simulated Hospital"
        ds.ReferringPhysicianName = ""
        ds.StationName = "SIMMR01"
        ds.StudyDescription = study.description
        ds.SeriesDescription = description
        ds.ManufacturerModelName = "Simulated 3T"
        ds.PatientName = study.patient_name
        ds.PatientID = study.patient_id
        ds.PatientBirthDate = study.birth_date
        ds.PatientSex = study.sex
        ds.BodyPartExamined = "HEAD"
        for key, value in attrs.items():
            setattr(ds, key, value)
        ds.SliceThickness = _ds_value(plane.thickness)
        ds.SpacingBetweenSlices = _ds_value(plane.extra.get("SpacingBetweenSlices",
                                                            plane.thickness))
        ds.MagneticFieldStrength = 3
        ds.ImagingFrequency = 123.2
        ds.ImagedNucleus = "1H"
        ds.EchoNumbers = 1
        ds.NumberOfAverages = 1
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study.uid("study")
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = n
        ds.ImagePositionPatient = [_ds_value(v) for v in plane.ipp]
        ds.ImageOrientationPatient = [_ds_value(v) for v in plane.iop]
        ds.FrameOfReferenceUID = study.uid("frame")
        ds.PositionReferenceIndicator = ""
        normal = np.cross(plane.iop[:3], plane.iop[3:])
        ds.SliceLocation = _ds_value(float(plane.ipp @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = plane.pixels.shape
        ds.PixelSpacing = [_ds_value(v) for v in plane.spacing]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        stored = np.clip(np.rint(plane.pixels / slope), -32768, 32767).astype("<i2")
        ds.SmallestImagePixelValue = int(stored.min())
        ds.LargestImagePixelValue = int(stored.max())
        ds.WindowCenter = _ds_value(peak / 2)
        ds.WindowWidth = _ds_value(peak)
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = _ds_value(slope)
        for key, value in plane.extra.items():
            if key != "SpacingBetweenSlices":
                setattr(ds, key, value)
        ds.PixelData = stored.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = UID(MR_IMAGE_STORAGE)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{n:05d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def write_dicom_series(image: nib.Nifti1Image, folder: Path, *, series_number: int,
                       description: str, attributes: dict[str, Any], study: StudyInfo,
                       seed: int) -> list[Path]:
    """Write a 3D volume (float, RAS affine) as one MR Image Storage file per slice.

    Slice k of the NIfTI (``data[:, :, k]``, columns x rows) becomes ``IM{k+1:05d}.dcm`` with
    ``pixel_array == data[:, :, k].T / RescaleSlope`` (int16; one slope per series).

    Returns:
        The files written, in slice order.
    """
    return _write_planes(_planes(image), folder, series_number=series_number,
                         description=description, attributes=attributes, study=study, seed=seed)


def write_localizer(image: nib.Nifti1Image, folder: Path, *, series_number: int,
                    study: StudyInfo, seed: int, per_plane: int = 3,
                    description: str = "3-PLANE LOC") -> list[Path]:
    """A 3-plane localizer: ``per_plane`` untilted 8 mm slices (10 mm apart, 1.1 mm pixels,
    256 x 256) in each of axial, sagittal and coronal through the content's centre."""
    planes: list[_Plane] = []
    data = np.asanyarray(image.dataobj).astype(np.float32)
    data = data - np.float32(background(data))
    centre = content_centre(image)
    for orient in ("sagittal", "coronal", "axial"):
        spec = GridSpec(orient, 1.1, 10.0, fov=(281.6, 281.6, 10.0 * per_plane))
        target = grid_affine(spec, centre)
        slab = nib.Nifti1Image(resample(data, image.affine, target, spec.shape()), target)
        planes += _planes(slab, {"SpacingBetweenSlices": 10.0})
    for p in planes:
        p.thickness = 8.0
    return _write_planes(planes, folder, series_number=series_number, description=description,
                         attributes=LOCALIZER_ATTRIBUTES, study=study, seed=seed)


def write_dwi(image: nib.Nifti1Image, folder: Path, *, series_number: int, study: StudyInfo,
              seed: int, spec: GridSpec = DWI_GRID, b_value: float = 1000.0,
              description: str = "AX DWI") -> list[Path]:
    """A 2D EPI diffusion series: a b=0 and a b=``b_value`` volume at the same positions.

    b0 is ``image`` on ``spec``'s grid (background 0, negatives clipped); the diffusion-weighted
    volume is ``b0 * exp(-b * DWI_ADC)``. DiffusionBValue (0018,9087) is set on every image.
    """
    b0 = np.clip(np.asanyarray(clinical_copy(image, spec, seed).dataobj), 0, None)
    target = grid_affine(spec, content_centre(image))
    planes = []
    for b, data in ((0.0, b0), (b_value, b0 * math.exp(-b_value * DWI_ADC))):
        extra: dict[str, Any] = {"DiffusionBValue": b}
        if b > 0:
            extra["DiffusionDirectionality"] = "ISOTROPIC"
        planes += _planes(nib.Nifti1Image(data.astype(np.float32), target), extra)
    return _write_planes(planes, folder, series_number=series_number, description=description,
                         attributes=DWI_ATTRIBUTES, study=study, seed=seed)


def build_study(volumes: dict[str, nib.Nifti1Image | Path], out: Path,
                grids: dict[str, GridSpec] | None = None, *, study: StudyInfo | None = None,
                distractors: bool = True, seed: int = 0) -> dict[str, nib.Nifti1Image]:
    """Write a clinical-looking DICOM study of one case under ``out``.

    Args:
        volumes: Images (or NIfTI paths) per role ("flair", "t1", "t1ce", "t2").
        out: Study folder; each series goes to ``out/<series_number>_<name>/``.
        grids: Grid per role (default :data:`DEFAULT_GRIDS`).
        study: Patient and study attributes (default :class:`StudyInfo`).
        distractors: Also write a 3-plane localizer (series 1) and a DWI (series 2).
        seed: Seeds bias fields and UIDs.

    Returns:
        The simulated image per role (float32, its grid's affine): what its series encodes.
    """
    grids = {**DEFAULT_GRIDS, **(grids or {})}
    study = study or StudyInfo(uid_seed=seed)
    images: dict[str, nib.Nifti1Image] = {
        r: v if isinstance(v, nib.Nifti1Image) else nib.Nifti1Image.from_filename(str(v))
        for r, v in volumes.items()}
    first = next(iter(images.values()))
    if distractors:
        write_localizer(first, out / "1_localizer", series_number=1, study=study, seed=seed)
    result: dict[str, nib.Nifti1Image] = {}
    for n, (role, img) in enumerate(images.items(), start=3):
        sim = clinical_copy(img, grids[role], seed + n)
        attrs = ROLE_ATTRIBUTES[role]
        write_dicom_series(sim, out / f"{n}_{role}", series_number=n,
                           description=attrs["SeriesDescription"], attributes=attrs,
                           study=study, seed=seed)
        result[role] = sim
    if distractors:
        write_dwi(images.get("t2", first), out / "2_dwi", series_number=2, study=study,
                  seed=seed)
    return result
