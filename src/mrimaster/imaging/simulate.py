"""Clinical-looking test studies built from research volumes (BraTS) for the DICOM path.

Research volumes are skull-stripped or not, but always co-registered, resampled to one 1 mm
isotropic grid and stored as NIfTI. A hospital scanner writes nothing like that: each sequence
has its own slice plane (axial, sagittal, coronal) tilted a few degrees to the patient's head,
its own field of view, in-plane resolution (0.45-1 mm) and slice thickness (1-5 mm), a smooth
receive-coil intensity bias, and arrives as DICOM next to series the product must not use
(a 3-plane localizer, diffusion). This module makes such studies from real BraTS cases so the
importer, the role detector and the registration can be tested on what they will meet:

* :func:`clinical_copy` resamples one volume (linear interpolation, 0 outside the input) onto
  the oblique grid a :class:`GridSpec` describes and multiplies it by a smooth bias field.
  The input's background level (the most common value on its border: 0 for a scanner image,
  about -3.6 for the z-scored BraTS 2015 volumes) is subtracted first, so air is 0 as a scanner
  writes it.
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
from scipy import ndimage

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse
# (row direction, column direction) in LPS for an untilted plane; the normal is their cross.
_PLANES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1, 0, 0), (0, 1, 0)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
}


@dataclass
class GridSpec:
    """One acquisition's grid.

    Attributes:
        plane: "axial", "sagittal" or "coronal": the untilted slice plane.
        pixel: In-plane spacing, mm (rows and columns).
        slice: Slice spacing, mm; the slice thickness is the same (no gap).
        tilt: Rotations (rx, ry, rz) in degrees about the LPS x, y, z axes, applied to the plane.
        fov: Field of view (in-plane along rows, in-plane down columns, slab), mm.
        shift: Offset (x, y, z) of the grid centre from the content's centre, RAS mm.
        bias: Bias amplitude (0..0.4): the field is exp(p) with p spanning [-bias, bias].
    """

    plane: str = "axial"
    pixel: float = 1.0
    slice: float = 1.0
    tilt: tuple[float, float, float] = (0.0, 0.0, 0.0)
    fov: tuple[float, float, float] = (240.0, 240.0, 150.0)
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bias: float = 0.0

    def __post_init__(self) -> None:
        if self.plane not in _PLANES or not 0 <= self.bias <= 0.4 or min(self.pixel,
                                                                           self.slice) <= 0:
            raise ValueError(f"GridSpec: plane {self.plane!r} (axial/sagittal/coronal), "
                             f"bias {self.bias} (0..0.4), spacing {self.pixel}/{self.slice} mm")

    def shape(self) -> tuple[int, int, int]:
        """Voxels (columns, rows, slices) covering :attr:`fov`."""
        return (max(1, round(self.fov[0] / self.pixel)), max(1, round(self.fov[1] / self.pixel)),
                max(1, round(self.fov[2] / self.slice)))


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


def _rotation(tilt: tuple[float, float, float]) -> np.ndarray:
    rx, ry, rz = (math.radians(t) for t in tilt)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), \
        math.cos(rz), math.sin(rz)
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return z @ y @ x


def background(data: np.ndarray) -> float:
    """The most common value on the faces of ``data`` (3D): the air level."""
    faces = np.concatenate([data[[0, -1]].ravel(), data[:, [0, -1]].ravel(),
                            data[:, :, [0, -1]].ravel()])
    values, counts = np.unique(faces, return_counts=True)
    return float(values[counts.argmax()])


def content_centre(image: nib.Nifti1Image) -> np.ndarray:
    """Centroid (RAS mm, shape (3,)) of the voxels that differ from the background."""
    data = np.asanyarray(image.dataobj)
    idx = np.argwhere(data != background(data))
    if len(idx) == 0:
        idx = np.argwhere(np.ones(data.shape[:3], bool))
    return np.asarray(nib.affines.apply_affine(image.affine, idx.mean(axis=0)))


def grid_affine(spec: GridSpec, centre: np.ndarray) -> np.ndarray:
    """The RAS affine (4, 4) of ``spec``'s grid centred at ``centre`` (RAS mm) plus its shift."""
    row, col = (np.asarray(v, float) for v in _PLANES[spec.plane])
    rot = _rotation(spec.tilt)
    axes = rot @ np.stack([row, col, np.cross(row, col)], axis=1)  # LPS columns
    lps = np.eye(4)
    lps[:3, :3] = axes * np.array([spec.pixel, spec.pixel, spec.slice])
    half = (np.asarray(spec.shape(), float) - 1) / 2
    centre_lps = (_RAS_LPS[:3, :3] @ (np.asarray(centre, float) + np.asarray(spec.shift)))
    lps[:3, 3] = centre_lps - lps[:3, :3] @ half
    return _RAS_LPS @ lps


def resample(data: np.ndarray, affine: np.ndarray, target: np.ndarray,
             shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """``data`` (3D, voxel-to-RAS ``affine``) sampled on the grid ``target`` of ``shape``;
    0 outside. Returns float32 of ``shape``."""
    to_in = np.linalg.inv(affine) @ target
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = to_in[:3, :3].astype(np.float32) @ ijk + to_in[:3, 3:4].astype(np.float32)
    out = ndimage.map_coordinates(np.asarray(data, np.float32), coords, order=order,
                                  mode="constant", cval=0.0, prefilter=False)
    return out.reshape(shape).astype(np.float32)


def bias_field(affine: np.ndarray, shape: tuple[int, int, int], amplitude: float,
               seed: int) -> np.ndarray:
    """A smooth multiplicative field exp(p), p a random quadratic in world mm scaled to span
    [-amplitude, amplitude] over the grid. Returns float32 of ``shape``."""
    rng = np.random.default_rng(seed)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:4]) / 100.0  # decimetres
    xyz -= xyz.mean(axis=1, keepdims=True)
    x, y, z = xyz
    terms = [x, y, z, x * y, x * z, y * z, x * x, y * y, z * z]
    p = sum(c * t for c, t in zip(rng.normal(size=len(terms)), terms, strict=True))
    p = np.asarray(p, np.float64)
    span = p.max() - p.min()
    p = (p - (p.max() + p.min()) / 2) * (2 * amplitude / span if span > 0 else 0.0)
    return np.exp(p).reshape(shape).astype(np.float32)


def clinical_copy(image: nib.Nifti1Image, spec: GridSpec, seed: int) -> nib.Nifti1Image:
    """``image`` as a scanner would have acquired it on ``spec``'s oblique grid.

    Args:
        image: A 3D volume (any dtype), RAS affine.
        spec: The target grid; centred on the image's content (voxels unlike the background)
            plus ``spec.shift``.
        seed: Seeds the bias field.

    Returns:
        float32 ``spec.shape()`` volume (columns, rows, slices) with the new grid's affine:
        (input - background) linearly resampled (0 outside the input) times the bias field.
    """
    data = np.asanyarray(image.dataobj).astype(np.float32)
    data = data - np.float32(background(data))
    target = grid_affine(spec, content_centre(image))
    shape = spec.shape()
    out = resample(data, image.affine, target, shape)
    if spec.bias > 0:
        out *= bias_field(target, shape, spec.bias, seed)
    result = nib.Nifti1Image(out, target)
    result.header.set_xyzt_units("mm")
    return result


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
    lps = _RAS_LPS @ image.affine
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
