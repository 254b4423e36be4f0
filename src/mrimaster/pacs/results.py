"""The results filed back into the source study: the DICOM SEG and a TID 1500 measurement report.

* The SEG is :func:`mrimaster.imaging.dicom_seg.write_dicom_seg`'s ``seg.dcm`` (series 9001):
  the label map of the reference series, one segment per label, referencing that series.
* The report is a Comprehensive 3D SR (PS3.3 A.35.13, series 9002) holding a TID 1500
  *Measurement Report* with one group per region of ``volumes.json``'s ``volumes_ml``: WT
  (whole tumour), TC (tumour core), ET (enhancing tumour), each a "Volume" (SCT 118565006) in
  ``ml`` (UCUM). A region that is exactly one segment of the SEG (ET = the enhancing segment;
  WT in the whole-tumour-only convention) is a TID 1411 *Volumetric ROI* group whose Referenced
  Segment names that SEG segment; a region that is a union of segments (WT = NCR/NET + ED + ET,
  TC = NCR/NET + ET under BraTS 2021 labels) cannot be one TID 1411 Referenced Segment, so it is
  a TID 1501 *Measurement Group* whose tracking identifier names the segments summed, with the
  SEG among the report's evidence. Regions that are not assessable (no T1-Gd: ``None``) are
  omitted.

Both objects carry the source study's StudyInstanceUID and patient module: highdicom copies them
from the first evidence dataset, a header of the source series.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mrimaster.errors import DataError

SR_SERIES_NUMBER = 9002
SEG_SERIES_NUMBER = 9001  # write_dicom_seg's default, the number seg.dcm carries
REGIONS = {"WT": "whole tumour", "TC": "tumour core", "ET": "enhancing tumour"}
REGION_LABELS: dict[str, dict[str, tuple[int, ...]]] = {
    "brats2021": {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}, "wt": {"WT": (1,)}}
"""Per label convention, the labels of ``seg.nii.gz`` each region sums."""


def _segment_numbers(convention: str, region: str) -> list[int]:
    from mrimaster.imaging.dicom_seg import SEGMENTS

    number = {s.label: n for n, s in enumerate(SEGMENTS[convention], start=1)}
    return [number[label] for label in REGION_LABELS[convention][region]]


def build_volume_report(seg: Any, source_headers: Sequence[Any], volumes_ml: dict[str, Any],
                        convention: str, *, model_version: str,
                        series_number: int = SR_SERIES_NUMBER) -> Any:
    """A Comprehensive 3D SR of the regions' volumes (see the module docstring).

    Args:
        seg: The SEG (``pydicom.Dataset``) the measurements refer to.
        source_headers: Headers of the SEG's source series (patient and study copied from the
            first).
        volumes_ml: ``{"WT": mL, "TC": mL | None, "ET": mL | None}`` as in ``volumes.json``.
        convention: ``"brats2021"`` or ``"wt"`` (``volumes.json``'s ``label_convention``).
        model_version: Recorded as the algorithm's version.
        series_number: The SR series' number.

    Returns:
        ``highdicom.sr.Comprehensive3DSR`` (a ``pydicom.Dataset``), not yet saved.

    Raises:
        DataError: an unknown convention, or no volume at all.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from mrimaster.imaging.dicom_seg import ALGORITHM_NAME, MANUFACTURER

    if convention not in REGION_LABELS:
        raise DataError(f"no measurement regions for label convention {convention!r}",
                        f"use one of: {', '.join(REGION_LABELS)}")
    ml = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=model_version,
                                              family=codes.cid7162.ArtificialIntelligence)
    finding = {"WT": codes.SCT.Neoplasm, "TC": codes.SCT.Neoplasm,
               "ET": codes.cid7168.EnhancingLesion}
    groups: list[Any] = []
    for region, label in REGIONS.items():
        value = volumes_ml.get(region)
        if value is None or region not in REGION_LABELS[convention]:
            continue
        segments = _segment_numbers(convention, region)
        tracking = hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=f"{region} {label} (SEG segments "
            f"{'+'.join(str(n) for n in segments)})")
        measurement = hd.sr.Measurement(name=codes.SCT.Volume, value=float(value), unit=ml,
                                        algorithm_id=algorithm)
        if len(segments) == 1:
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, finding_type=finding[region],
                referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, segments[0]),
                algorithm_id=algorithm, measurements=[measurement]))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, finding_type=finding[region],
                algorithm_id=algorithm, measurements=[measurement]))
    if not groups:
        raise DataError("no tumour volume to report", "check volumes.json's volumes_ml")
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=ALGORITHM_NAME, manufacturer_name=MANUFACTURER,
            model_name=ALGORITHM_NAME))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.BrainMRI, imaging_measurements=groups)
    quiet = logging.getLogger("highdicom")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*source_headers, seg], content=report,
            series_instance_uid=hd.UID(), series_number=series_number,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
            is_complete=True, is_final=False, is_verified=False)
    finally:
        quiet.setLevel(level)
    sr.SeriesDescription = "MRIMaster tumour volumes (not verified)"
    return sr


def write_results(out_dir: Path, source_files: Sequence[Path], *, model_version: str,
                  folder: Path | None = None) -> list[Path]:
    """The SEG and SR of a ``segment_study`` run folder, ready to send.

    Copies ``out_dir/seg.dcm`` and writes the SR beside it in ``folder`` (default
    ``out_dir/pacs``) as ``seg.dcm`` and ``sr.dcm``. They are written once: their SOP Instance
    UIDs then stay the same for every (re)send.

    Returns:
        ``[folder/seg.dcm, folder/sr.dcm]``.

    Raises:
        DataError: no ``seg.dcm`` (the run was not on DICOM input) or no ``volumes.json``.
    """
    import json
    import shutil

    import pydicom

    folder = folder or out_dir / "pacs"
    seg_file, info_file = out_dir / "seg.dcm", out_dir / "volumes.json"
    if not seg_file.is_file() or not info_file.is_file():
        raise DataError(f"{out_dir} has no seg.dcm or volumes.json",
                        "segment a DICOM study first (`mrimaster pacs segment`)")
    info = json.loads(info_file.read_text())
    seg = pydicom.dcmread(seg_file)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in source_files]
    sr = build_volume_report(seg, headers, info["volumes_ml"], info["label_convention"],
                             model_version=model_version)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(seg_file, folder / "seg.dcm")
    sr.save_as(folder / "sr.dcm", enforce_file_format=True)
    return [folder / "seg.dcm", folder / "sr.dcm"]


def read_volume_report(path: Path) -> dict[str, float]:
    """The region volumes (mL) of an SR written by :func:`build_volume_report`."""
    import highdicom as hd

    sr = hd.sr.srread(path)
    report = hd.sr.MeasurementReport.from_sequence([sr])  # the SR is the root item
    out: dict[str, float] = {}
    groups = [*report.get_volumetric_roi_measurement_groups(),
              *report.get_image_measurement_groups()]
    for group in groups:
        region = str(group.tracking_identifier).split()[0]
        for m in group.get_measurements():
            if m.name.value == "118565006" and m.unit.value == "ml":
                out[region] = float(m.value)
    return out
