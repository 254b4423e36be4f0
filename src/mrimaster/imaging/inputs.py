"""Step 1 of the imaging stage: a study's sequences by role, and the list of every series found.

:func:`gather` takes a DICOM folder or zip (imported by
:func:`mrimaster.imaging.dicom_import.import_study`: one NIfTI per series, roles from
acquisition attributes), a folder of NIfTI volumes, or ``{role: NIfTI path}``; a doctor's role
corrections replace the detector's; of two series with one role the one with the smaller voxels
is used; all used series must be one patient's and one study's. :func:`load3d` reads a chosen
sequence as one 3D volume.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mrimaster.errors import DataError
from mrimaster.imaging.dicom_import import SeriesRecord, import_study
from mrimaster.segmentation.cases import MODALITIES, find_case
from mrimaster.segmentation.geometry import voxel_sizes

ROLE_NAMES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1-Gd", "t2": "T2"}


@dataclass
class Sequence:
    """One volume chosen for a role.

    Attributes:
        role: ``flair``, ``t1``, ``t1ce`` or ``t2``.
        name: What the user calls it: the series description and number, or the file name.
        path: Its NIfTI on its own grid.
        record: The import record (DICOM input), else ``None``.
    """

    role: str
    name: str
    path: Path
    record: SeriesRecord | None = None



def _is_dicom_source(path: Path) -> bool:
    if path.is_file():
        return zipfile.is_zipfile(path) or not path.name.lower().endswith((".nii", ".nii.gz"))
    return path.is_dir() and not any(p.name.lower().endswith((".nii", ".nii.gz"))
                                     for p in path.iterdir())


def _series_name(record: SeriesRecord) -> str:
    number = f" (series {record.series_number})" if record.series_number is not None else ""
    return f"{record.description or 'unnamed series'!r}{number}"


def _override(record: SeriesRecord, overrides: dict[str, str | None]) -> tuple[bool, str | None]:
    for key in (record.nifti or "", str(record.series_number)):
        if key and key in overrides:
            role = overrides[key]
            if role is not None and role not in MODALITIES:
                raise DataError(f"unknown role {role!r} for {_series_name(record)}",
                                f"choose one of {', '.join(MODALITIES)} or none")
            return True, role
    return False, None


def _voxel_volume(path: Path) -> float:
    from mrimaster.segmentation.volumes import load_nifti

    return float(np.prod(voxel_sizes(load_nifti(path))))


def smallest_voxels(candidates: dict[str, list[Path]]) -> dict[str, Path]:
    """Of several volumes given one role, the one with the smallest voxels (the finest
    acquisition), per role."""
    return {role: min(paths, key=_voxel_volume) for role, paths in candidates.items()}


def check_one_study(identities: dict[str, tuple[str, str]]) -> None:
    """Raise when the named series (``{name: (patient, StudyInstanceUID)}``) belong to several
    patients or studies.

    Raises:
        DataError: names the series and says what differs.
    """
    patients = {i[0] for i in identities.values()}
    studies = {i[1] for i in identities.values()}
    if len(patients) > 1 or len(studies) > 1:
        what = "patients" if len(patients) > 1 else "studies"
        count = len(patients) if what == "patients" else len(studies)
        raise DataError(f"the sequences come from {count} different {what} "
                        f"({'; '.join(identities)})",
                        "give the series of one study of one patient")


def _from_dicom(records: list[SeriesRecord], folder: Path, overrides: dict[str, str | None]
                ) -> tuple[dict[str, Sequence], list[dict[str, Any]]]:
    """Choose one series per role; the report lists every series with what became of it."""
    candidates: dict[str, list[SeriesRecord]] = {}
    listing: list[dict[str, Any]] = []
    for record in records:
        entry = record.to_json()
        changed, role = _override(record, overrides)
        if changed:
            entry["detected_role"], entry["role"] = record.role, role
            entry["why"] = [*record.why, f"role set by a doctor: {role or 'none'}"]
            if role is not None and record.nifti is None:
                raise DataError(f"{_series_name(record)} cannot be used as "
                                f"{ROLE_NAMES[role]}: {record.reason}",
                                "choose a series that was converted to a volume")
        else:
            role = record.role if record.nifti else None
        if role is not None:
            candidates.setdefault(role, []).append(record)
        listing.append(entry)
    best = smallest_voxels({role: [folder / str(r.nifti) for r in found]
                            for role, found in candidates.items()})
    chosen: dict[str, Sequence] = {}
    for role, found in candidates.items():
        record = next(r for r in found if folder / str(r.nifti) == best[role])
        chosen[role] = Sequence(role, _series_name(record), best[role], record)
        for entry in listing:
            if entry["nifti"] == record.nifti:
                entry["used_as"] = role
            elif any(entry["nifti"] == r.nifti for r in found if r is not record):
                entry["not_used"] = (f"another {ROLE_NAMES[role]} series, "
                                     f"{_series_name(record)}, has smaller voxels")
    check_one_study({f"{ROLE_NAMES[s.role]}: {s.name}": s.record.identity
                     for s in chosen.values() if s.record is not None})
    return chosen, listing


def gather(source: Path | dict[str, Path], work: Path, overrides: dict[str, str | None]
           ) -> tuple[dict[str, Sequence], list[dict[str, Any]]]:
    """The sequences of ``source`` by role, and the list of every series found.

    Args:
        source: A DICOM folder or zip, a NIfTI case folder, or ``{role: NIfTI path}``.
        work: Where DICOM is imported (``work/import``; a zip is extracted to
            ``work/dicom``).
        overrides: Role corrections: ``{series: role or None}`` (see
            :class:`mrimaster.imaging.prepare.PrepareConfig`).

    Raises:
        DataError: nothing readable, unknown roles, sequences of several patients or studies.
    """
    if isinstance(source, dict):
        bad = sorted(set(source) - set(MODALITIES))
        if bad:
            raise DataError(f"unknown role {bad}", f"choose from {', '.join(MODALITIES)}")
        chosen = {r: Sequence(r, Path(p).name, Path(p)) for r, p in source.items()}
        return chosen, [{"role": r, "file": s.name, "used_as": r} for r, s in chosen.items()]
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder", "give a DICOM folder or zip, or a "
                        "folder of NIfTI volumes")
    if _is_dicom_source(source):
        extract = work / "dicom"
        records = import_study(source, work / "import", extract_to=extract)
        return _from_dicom(records, work / "import", overrides)
    case = find_case(source)
    if case.image4d is not None:
        raise DataError(f"{case.image4d.name} is one 4D file holding all sequences",
                        "split it into one file per sequence (--flair, --t1ce, ...)")
    chosen = {r: Sequence(r, p.name, p) for r, p in case.images.items()}
    return chosen, [{"role": r, "file": s.name, "used_as": r} for r, s in chosen.items()]


def load3d(seq: Sequence) -> nib.Nifti1Image:
    from mrimaster.segmentation.volumes import load_nifti

    img = load_nifti(seq.path)
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine)
    elif len(shape) != 3:
        raise DataError(f"the {ROLE_NAMES[seq.role]} ({seq.name}) holds a {len(shape)}D image "
                        f"of shape {tuple(shape)}, not one 3D volume (a diffusion, fMRI or "
                        "perfusion series?)", "give one 3D volume per sequence")
    return img
