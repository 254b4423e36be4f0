"""A tumour label map (``seg.nii.gz``) as a DICOM Segmentation (``seg.dcm``) and back.

Standard: DICOM PS3.3 A.51 *Segmentation IOD* (Segmentation Storage, 1.2.840.10008.5.1.4.1.1.66.4),
written by highdicom as a BINARY segmentation: one 1-bit frame per segment per source frame,
empty frames omitted, each frame's Derivation Image / Source Image Sequence naming the source
frame it lies on; the Common Instance Reference module (ReferencedSeriesSequence) names the
source series, and StudyInstanceUID / FrameOfReferenceUID are the source's.

Codes (PS3.16; all from pydicom's code dictionary, ``pydicom.sr.codedict.codes``):

* category, every segment: SCT 49755003 "Morphologically Abnormal Structure" (CID 7150
  *Segmentation Property Categories*, ``codes.cid7150``);
* types from CID 7168 *Brain Lesion Segmentation Type With Necrosis* (``codes.cid7168``), the
  context group PS3.16 defines for glioma sub-regions: SCT 6574001 "Necrosis" for BraTS label
  1 (NCR/NET; the group has no combined necrotic + non-enhancing concept, and necrosis is what
  the BraTS 2021 label names first), SCT 79654002 "Edema" for label 2, NCIt C113842
  "Enhancing Lesion" for label 4 (pydicom's SNOMED CT dictionary has no enhancing-tumour
  concept; the standard's own group uses this NCIt code);
* "wt" (whole tumour only, no T1-Gd): SCT 108369006 "Neoplasm" (CID 7151), since the mask
  mixes edema, core and enhancing tumour.

Segments are numbered 1..n in :data:`SEGMENTS` order (label 4 is segment 3). Every segment of
the convention is described even when its mask is empty (e.g. no enhancing tumour); it then
has no frames. The algorithm is AUTOMATIC, identified as "MRIMaster 3D U-Net", family DCM
123110 "Artificial Intelligence" (CID 7162), with the model's version.

Geometry: each source frame's ImagePositionPatient (LPS) goes to RAS and through the NIfTI
affine's inverse to a voxel index; its row/column directions must run along the grid's axes.
Frames are matched by geometry only (never by file order or instance number).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.errors import DataError, MRIMasterError
from mrimaster.imaging.volumes import Frame, frames_of

TOLERANCE_VOXELS = 0.01
"""Largest distance (in voxels) between a source pixel's centre and a grid voxel's centre."""
ALGORITHM_NAME = "MRIMaster 3D U-Net"
MANUFACTURER = "MRIMaster"


@dataclass(frozen=True)
class SegmentSpec:
    """One segment: its label value in ``seg.nii.gz``, name and codes."""

    label: int
    name: str
    category: Any  # pydicom.sr.coding.Code
    type: Any  # pydicom.sr.coding.Code


def _segments() -> dict[str, list[SegmentSpec]]:
    from pydicom.sr.codedict import codes

    mas = codes.cid7150.MorphologicallyAbnormalStructure
    return {
        "brats2021": [SegmentSpec(1, "NCR/NET necrotic and non-enhancing tumour core", mas,
                                  codes.cid7168.Necrosis),
                      SegmentSpec(2, "ED peritumoral edema", mas, codes.cid7168.Edema),
                      SegmentSpec(4, "ET enhancing tumour", mas, codes.cid7168.EnhancingLesion)],
        "wt": [SegmentSpec(1, "WT whole tumour", mas, codes.SCT.Neoplasm)],
    }


SEGMENTS: dict[str, list[SegmentSpec]] = _segments()
"""Per label convention, its segments in segment-number order (see the module docstring)."""


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError as exc:
        raise MRIMasterError("DICOM SEG output needs highdicom, which is not installed",
                             "pip install 'highdicom>=0.23'") from exc
    return highdicom


def _specs(convention: str) -> list[SegmentSpec]:
    if convention not in SEGMENTS:
        raise DataError(f"no DICOM segment codes for label convention {convention!r}",
                        f"use one of: {', '.join(SEGMENTS)}")
    return SEGMENTS[convention]


def _read_sources(source_files: Sequence[Path]) -> tuple[list[Any], list[Frame]]:
    """Headers (no pixels) of one series' files and their frames, in the order given."""
    import pydicom

    if not source_files:
        raise DataError("no source DICOM files given", "pass the reference series' files")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in source_files]
    if len({str(ds.get("SeriesInstanceUID", "")) for ds in headers}) != 1:
        raise DataError("the source files are not one series",
                        "pass the files of the series the label map was computed on")
    if any("PerFrameFunctionalGroupsSequence" in ds for ds in headers) and len(headers) > 1:
        raise DataError("an enhanced multi-frame source must be one file",
                        "pass the one multi-frame file of the series")
    frames = [f for p, ds in zip(source_files, headers, strict=True)
              for f in frames_of(Path(p), ds, str(headers[0].get("SeriesDescription", "")))]
    return headers, frames


def _frame_indices(frames: Sequence[Frame], shape: tuple[int, ...],
                   grid: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Per source frame, the grid voxel of each of its pixels.

    Args:
        frames: The source frames (geometry in LPS mm).
        shape: The label map's ``(X, Y, Z)`` shape.
        grid: Its ``(4, 4)`` RAS affine.

    Returns:
        Per frame, three ``(Rows, Columns)`` int arrays (voxel indices along each grid axis).

    Raises:
        DataError: the frames do not lie on the grid's voxels, or do not cover each of its
            slices exactly once.
    """
    rows, cols = frames[0].shape
    if sorted(shape) != sorted((rows, cols, len(frames))):
        raise DataError(f"label map shape {tuple(shape)} does not match the source series' grid "
                        f"({cols} columns x {rows} rows x {len(frames)} frames)",
                        "write the label map on the grid of the NIfTI converted from this series")
    inv = np.linalg.inv(grid)
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    out: list[tuple[np.ndarray, ...]] = []
    slices: dict[tuple[int, int], int] = {}
    r, c = np.mgrid[0:rows, 0:cols]
    for n, f in enumerate(frames):
        origin = inv[:3, :3] @ (f.position * lps_to_ras) + inv[:3, 3]
        step_c = inv[:3, :3] @ (f.orientation[:3] * lps_to_ras * f.spacing[1])
        step_r = inv[:3, :3] @ (f.orientation[3:] * lps_to_ras * f.spacing[0])
        where = f"{f.path.name}" + (f" frame {f.index + 1}" if f.index is not None else "")
        axes = [int(np.argmax(np.abs(s))) for s in (step_c, step_r)]
        units = all(np.allclose(np.abs(s), np.eye(3)[a], atol=TOLERANCE_VOXELS)
                    for s, a in zip((step_c, step_r), axes, strict=True))
        if not units or axes[0] == axes[1]:
            raise DataError(f"source {where}: its orientation or pixel spacing does not run "
                            "along the label map's axes (the affine differs)",
                            "write the label map on the grid of the NIfTI converted from "
                            "this series")
        corners = [origin + a * step_r + b * step_c for a in (0, rows - 1) for b in (0, cols - 1)]
        near = all(np.abs(p - np.round(p)).max() <= TOLERANCE_VOXELS for p in corners)
        inside = all((np.round(p) >= 0).all() and (np.round(p) < shape).all() for p in corners)
        if not (near and inside):
            raise DataError(f"source {where} lands at voxel {np.round(origin, 3).tolist()}, not "
                            "on a slice of the label map (the affine differs)",
                            "write the label map on the grid of the NIfTI converted from "
                            "this series")
        idx = tuple(np.rint(origin[k] + r * step_r[k] + c * step_c[k]).astype(np.intp)
                    for k in range(3))
        normal = 3 - axes[0] - axes[1]
        key = (normal, int(idx[normal][0, 0]))
        if key in slices:
            raise DataError(f"source {where} and frame {slices[key] + 1} lie on the same slice",
                            "pass one 3D series (not a 4D one)")
        slices[key] = n
        out.append(idx)
    return out


def _labels_of(labels: Any, specs: Sequence[SegmentSpec], convention: str) -> np.ndarray:
    data = np.asanyarray(labels.dataobj)
    if data.ndim != 3:
        raise DataError(f"label map has {data.ndim} dimensions, not 3", "pass a 3D label map")
    values = np.unique(data)
    allowed = {0} | {s.label for s in specs}
    if not np.all(np.mod(values, 1) == 0) or set(values.astype(int).tolist()) - allowed:
        raise DataError(f"label map values {values.tolist()} are not those of the "
                        f"{convention!r} convention ({sorted(allowed)})",
                        "pass the convention the segmenter wrote")
    return data.astype(np.uint8)


def write_dicom_seg(labels: Any, source_files: Sequence[Path], out: Path, *, convention: str,
                    algorithm_version: str, series_number: int = 9001,
                    series_description: str = "MRIMaster tumour segmentation") -> Path:
    """Write ``labels`` as a binary DICOM Segmentation of the series ``source_files``.

    Args:
        labels: ``nibabel.Nifti1Image``, ``(X, Y, Z)`` integer labels (any dtype holding the
            convention's values) on the grid of the NIfTI converted from ``source_files``.
        source_files: The series' files: classic single-frame slices (any order) or one
            enhanced multi-frame file.
        out: Where the SEG is written (``seg.dcm``).
        convention: ``"brats2021"`` (labels 1, 2, 4) or ``"wt"`` (label 1).
        algorithm_version: The model's version, recorded in the algorithm identification.
        series_number: The SEG series' number.
        series_description: The SEG series' description.

    Returns:
        ``out``.

    Raises:
        DataError: an unknown convention, values outside it, or a label map not on the
            source series' grid (the message names the shape or the frame that differs).
    """
    specs = _specs(convention)
    data = _labels_of(labels, specs, convention)
    headers, frames = _read_sources(source_files)
    where = _frame_indices(frames, data.shape, np.asarray(labels.affine, float))
    if len(headers) > 1:  # scanners write one orientation with per-slice rounding (GE):
        first = [float(v) for v in headers[0].ImageOrientationPatient]  # highdicom wants
        for ds in headers:  # the same value; the geometry was checked above, per frame
            if not np.allclose([float(v) for v in ds.ImageOrientationPatient], first,
                               atol=1e-4):
                raise DataError("the source slices do not share one orientation",
                                "export the series again")
            ds.ImageOrientationPatient = headers[0].ImageOrientationPatient

    hd = _highdicom()
    from pydicom.sr.codedict import codes
    from pydicom.uid import ExplicitVRLittleEndian

    segment_of = np.zeros(256, np.uint8)
    for number, spec in enumerate(specs, start=1):
        segment_of[spec.label] = number
    rows, cols = frames[0].shape
    pixels = np.zeros((len(frames), rows, cols), np.uint8)  # segment numbers, source frame order
    for n, idx in enumerate(where):
        pixels[n] = segment_of[data[idx]]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, version=algorithm_version,
        family=codes.cid7162.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=spec.name,
        segmented_property_category=spec.category, segmented_property_type=spec.type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, tracking_uid=hd.UID(),
        tracking_id=f"{convention} label {spec.label}")
        for number, spec in enumerate(specs, start=1)]
    quiet = logging.getLogger("highdicom")  # it logs every module it copies, at INFO
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        seg = hd.seg.Segmentation(
            source_images=headers, pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(),
            series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer=MANUFACTURER, manufacturer_model_name=ALGORITHM_NAME,
            software_versions=algorithm_version, device_serial_number="none",
            content_description=f"tumour segmentation ({convention} labels)",
            content_creator_name="MRIMaster^Automatic", content_label="TUMOUR",
            transfer_syntax_uid=ExplicitVRLittleEndian, omit_empty_frames=True)
    finally:
        quiet.setLevel(level)
    seg.SeriesDescription = series_description
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out)
    return out


def read_dicom_seg(path: Path, reference: Any, source_files: Sequence[Path]) -> np.ndarray:
    """Read a SEG written by :func:`write_dicom_seg` back onto the reference grid.

    Args:
        path: The ``seg.dcm``.
        reference: ``nibabel.Nifti1Image`` whose grid (shape, affine) the labels go on: the
            NIfTI converted from ``source_files``.
        source_files: The source series' files (any order).

    Returns:
        ``(X, Y, Z)`` uint8 label map in the convention the SEG's segments were written in.

    Raises:
        DataError: segments this module does not know, or a reference not on the source grid.
    """
    seg = _highdicom().seg.segread(path)
    by_code = {(s.type.value, s.type.scheme_designator): s.label
               for specs in SEGMENTS.values() for s in specs}
    described = list(seg.SegmentSequence)
    to_label = np.zeros(len(described) + 1, np.uint8)
    for item in described:
        code = item.SegmentedPropertyTypeCodeSequence[0]
        key = (str(code.CodeValue), str(code.CodingSchemeDesignator))
        if key not in by_code:
            raise DataError(f"{path.name}: segment {item.SegmentNumber} ({code.CodeMeaning}) is "
                            "not one of MRIMaster's tumour segments", "read it with highdicom")
        to_label[int(item.SegmentNumber)] = by_code[key]
    headers, frames = _read_sources(source_files)
    shape = tuple(int(n) for n in reference.shape[:3])
    where = _frame_indices(frames, shape, np.asarray(reference.affine, float))
    if frames[0].index is None:
        uids = [str(ds.SOPInstanceUID) for ds in headers]
        planes = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, combine_segments=True,
            assert_missing_frames_are_empty=True)
    else:
        planes = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=str(headers[0].SOPInstanceUID),
            source_frame_numbers=[f.index + 1 for f in frames if f.index is not None],
            combine_segments=True, assert_missing_frames_are_empty=True)
    out = np.zeros(shape, np.uint8)
    for n, idx in enumerate(where):
        out[idx] = to_label[np.asarray(planes[n], np.intp)]
    return out
