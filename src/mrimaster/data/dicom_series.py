"""A zip of DICOM series -> one NIfTI volume per MRI modality, with its geometry.

Extraction refuses entries that escape the folder (``../``, absolute paths, links), too many
files and too many bytes in all. Files are grouped by ``SeriesInstanceUID``; slices are ordered by
their position along the slice normal (not by file name or instance number); the NIfTI affine
comes from ``ImagePositionPatient``, ``ImageOrientationPatient`` and ``PixelSpacing``
(DICOM PS3.3 C.7.6.2.1.1), turned from DICOM's LPS to NIfTI's RAS axes.

Every slice's declared size is checked before its pixels are decoded; a series that declares
burned-in annotation (or is a secondary capture) is refused unless the caller confirms it;
the NIfTI files written hold the voxels and the affine only (:func:`write_clean_nifti`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.data.dicom import declared_pixels
from mrimaster.errors import DataError, ImageLoadError

MAX_FILES = 20_000
MAX_VOXELS = 200_000_000
"""Largest volume converted (rows x columns x slices; a brain MRI has a few million)."""


def safe_extract(archive: Path, dest: Path, max_bytes: int) -> list[Path]:
    """Extract the regular files of ``archive`` into ``dest``
    (:func:`mrimaster.imaging.archive.extract_zip`: judged by the total it unpacks to and its
    entry count, never by one entry's compression ratio, since a mostly-air MRI slice
    compresses 300-400 times).

    Raises:
        DataError: not a zip, an entry whose path escapes ``dest`` or is a link, more than
            :data:`MAX_FILES` entries, more than ``max_bytes`` uncompressed, or an entry
            longer than it declares.
    """
    from mrimaster.imaging.archive import extract_zip

    return extract_zip(archive, dest, max_bytes, MAX_FILES)


def modality_of(description: str) -> str | None:
    """The modality a series description names (``flair``, ``t1ce``, ``t1``, ``t2``) or
    ``None``. T1-weighted FLAIR counts as T1; Siemens' dark-fluid (TIRM) T2 as FLAIR;
    "pre", "non" or "without" contrast as T1."""
    d = description.lower()
    t1 = re.search(r"t1", d) or "mprage" in d
    if t1 and "flair" in d:
        return "t1"
    if "flair" in d or "t2f" in d or "dark-fluid" in d or "dark_fluid" in d or "tirm" in d:
        return "flair"
    if re.search(r"t2", d):
        return "t2"
    if t1:
        if re.search(r"\bpre\b|\bnon|without|\bno\b", d):
            return "t1"
        if re.search(r"gd|gad|post|\+c|c\+|contrast|t1c|t1ce|ce\b", d):
            return "t1ce"
        return "t1"
    return None


MODALITY_LABELS = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1-Gd", "t2": "T2"}


class BurnedInSeries(DataError):
    """A series declares burned-in annotation (or is a secondary capture), not confirmed."""


@dataclass
class Series:
    """One DICOM series of a zip.

    Attributes:
        uid: ``SeriesInstanceUID``.
        description: ``SeriesDescription`` (or ``ProtocolName``): names the modality.
        files: Its files.
        burned_in: Why a file of it may carry text in its pixels, or ``None``.
    """

    uid: str
    description: str
    files: list[Path] = field(default_factory=list)
    burned_in: str | None = None


def write_clean_nifti(img: Any, out: Path) -> Path:
    """Write ``img`` (a nibabel NIfTI image) to ``out`` from its voxels and affine only.

    The voxels keep their values and on-disk type, the qform and sform keep their matrices and
    codes; ``descrip``, ``aux_file``, ``intent_name``, ``db_name`` and every header extension
    (where a name or a whole DICOM header may hide) are gone.
    """
    import nibabel as nib

    header = img.header
    data = np.asanyarray(img.dataobj)
    clean = nib.Nifti1Image(data, img.affine)
    clean.set_data_dtype(header.get_data_dtype())
    qform, qcode = img.get_qform(coded=True)
    sform, scode = img.get_sform(coded=True)
    clean.set_qform(qform if qform is not None else img.affine, int(qcode))
    clean.set_sform(sform if sform is not None else img.affine, int(scode))
    clean.header.set_xyzt_units(*header.get_xyzt_units())
    nib.save(clean, str(out))
    return out


def group_series(files: list[Path]) -> tuple[list[Series], Any]:
    """DICOM files by series (non-DICOM files skipped); returns ``(series, first dataset)``.
    Each series notes whether a file of it declares burned-in annotation."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from mrimaster.storage.deid import burned_in_reason

    groups: dict[str, Series] = {}
    first = None
    patients: set[str] = set()
    for path in sorted(files):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "unknown")
        desc = str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or "")
        series = groups.setdefault(uid, Series(uid, desc))
        series.files.append(path)
        series.burned_in = series.burned_in or burned_in_reason(ds)
        patients.add(str(ds.get("PatientID", "") or "").strip())
        first = first or ds
    if len(patients - {""}) > 1:
        raise DataError(f"the zip holds files of {len(patients - {''})} different patient IDs",
                        "upload one patient's study at a time")
    return list(groups.values()), first


def series_to_nifti(series: Series, out: Path) -> Path:
    """Write ``series`` as a NIfTI volume at ``out``.

    Raises:
        DataError: slices without geometry, of different sizes or orientations, missing
            pixel data, fewer than 3 slices, or a declared size over the caps (checked
            before any pixel is decoded).
    """
    import nibabel as nib
    import pydicom

    slices = [pydicom.dcmread(p) for p in series.files]
    name = series.description or series.uid
    if len(slices) < 3:
        raise DataError(f"series {name!r} has {len(slices)} slice(s): not a 3D volume",
                        "upload the whole series")
    try:
        pixels_per_slice = max(declared_pixels(s, f"series {name!r}") for s in slices)
    except ImageLoadError as exc:
        raise DataError(exc.message, exc.hint) from exc
    if pixels_per_slice * len(slices) > MAX_VOXELS:
        raise DataError(f"series {name!r} declares {pixels_per_slice * len(slices):,} voxels "
                        f"(at most {MAX_VOXELS:,})", "upload one brain MRI series per modality")
    try:
        orient = np.asarray(slices[0].ImageOrientationPatient, float)
        spacing = np.asarray(slices[0].PixelSpacing, float)
        positions = np.asarray([s.ImagePositionPatient for s in slices], float)
    except AttributeError as exc:
        raise DataError(f"series {name!r} lacks its geometry ({exc})",
                        "export the series with its position and orientation tags") from exc
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    order = np.argsort(positions @ normal)
    shape = {(int(s.Rows), int(s.Columns)) for s in slices}
    orients = {tuple(np.round(np.asarray(s.ImageOrientationPatient, float), 4)) for s in slices}
    if len(shape) != 1 or len(orients) != 1:
        raise DataError(f"series {name!r} mixes slice sizes or orientations",
                        "upload one acquisition per series")
    gaps = np.diff(positions[order] @ normal)
    if len(gaps) and (gaps.min() <= 1e-3 or gaps.max() - gaps.min() > 0.01 * gaps.max()):
        raise DataError(f"series {name!r}: its slices are not evenly spaced (gaps "
                        f"{gaps.min():.2f}-{gaps.max():.2f} mm; repeated or missing slices, or "
                        "several acquisitions in one series)", "export one acquisition, "
                        "complete, per series")
    volume = []
    for k in order:
        s = slices[k]
        if "PixelData" not in s:
            raise DataError(f"series {name!r}: a slice has no pixel data", "export it again")
        try:
            pixels = np.asarray(s.pixel_array, np.float32)
        except Exception as exc:  # pydicom raises several types for undecodable pixels
            raise DataError(f"series {name!r}: its pixel data cannot be decoded ({exc})",
                            "export it uncompressed (explicit VR little endian)") from exc
        pixels = pixels * float(s.get("RescaleSlope", 1) or 1)
        volume.append((pixels + float(s.get("RescaleIntercept", 0) or 0)).T)  # (cols, rows)
    data = np.stack(volume, axis=-1)
    p = positions[order]
    step = (p[-1] - p[0]) / (len(p) - 1)
    if np.linalg.norm(step) < 1e-3:
        raise DataError(f"series {name!r}: every slice has the same position",
                        "this is not a volume; upload a 3D series")
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]  # along a row: next column, column spacing
    lps[:3, 1] = col_dir * spacing[0]  # down a column: next row, row spacing
    lps[:3, 2] = step
    lps[:3, 3] = p[0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return write_clean_nifti(nib.Nifti1Image(data, ras), out)


def zip_to_modalities(archive: Path, work: Path, max_bytes: int,
                      confirm_burned_in: bool = False, confirmed: list[str] | None = None
                      ) -> tuple[dict[str, Path], Any]:
    """Convert a zip of DICOM series to ``{modality: NIfTI path}`` in ``work``; returns it and
    the first DICOM dataset (for the patient's pseudonym).

    Args:
        confirm_burned_in: A doctor confirms that series declaring burned-in annotation may
            be used (their pixels, converted to NIfTI, are stored).
        confirmed: If given, receives the burned-in reason of each series used on that
            confirmation (for the audit log).

    Raises:
        DataError: no DICOM series, a modality given twice, no series recognised.
        BurnedInSeries: a series used declares burned-in annotation, not confirmed.
    """
    files = safe_extract(archive, work / "unzipped", max_bytes)
    series, first = group_series(files)
    if not series:
        raise DataError("the zip holds no DICOM file", "zip the folder of the DICOM series")
    found: dict[str, Series] = {}
    for s in series:
        m = modality_of(s.description)
        if m is None:
            continue
        if m in found:
            raise DataError(f"two series look like {m}: {found[m].description!r} and "
                            f"{s.description!r}", "zip only the series to segment")
        found[m] = s
    if not found:
        names = ", ".join(repr(s.description) for s in series)
        raise DataError(f"no series is recognisable as FLAIR, T1, T1-Gd or T2 (found {names})",
                        "upload the volumes as NIfTI files, one field per modality")
    burned = [s for s in found.values() if s.burned_in]
    if burned and not confirm_burned_in:
        names = "; ".join(f"{s.description!r}: {s.burned_in}" for s in burned)
        raise BurnedInSeries(f"series with burned-in annotation ({names}): text in the pixels "
                             "is not removed by de-identification",
                             "check the series in your viewer: if no patient identifier is "
                             "burned in, upload again with 'confirm burned-in annotation' "
                             "(API: confirm_burned_in=true); else leave those series out")
    if confirmed is not None:
        confirmed += [f"{MODALITY_LABELS[m]}: {s.burned_in}" for m, s in found.items()
                      if s.burned_in]
    return {m: series_to_nifti(s, work / f"{m}.nii.gz") for m, s in found.items()}, first
