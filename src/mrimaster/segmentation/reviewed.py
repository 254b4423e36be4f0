"""Reviewed 3D cases as a training set: the BraTS 2021 layout, de-identified, with a
``dataset.json`` in nnU-Net's manner.

Layout written by :func:`write_reviewed_dataset`::

    OUT/
      dataset.json
      <case>/<case>_flair.nii.gz   (each modality the case has: flair, t1, t1ce, t2)
      <case>/<case>_seg.nii.gz     uint8 labels

Labels: the BraTS 2017-2021 convention (0 background, 1 NCR/NET, 2 ED, 4 ET) for cases whose
reference defines the sub-regions; the whole-tumour convention (0 background, 1 tumour) for
cases whose reference is a whole-tumour mask only (typically studies without T1-Gd). Conventions
are converted through :mod:`mrimaster.segmentation.labels` only. ``dataset.json`` names each
case's convention, which :func:`read_reviewed_dataset` (and so ``mrimaster seg train``) reads
back: a ``_seg`` file alone would be taken as BraTS 2021.

De-identification: every volume is rewritten from its voxels and affine only
(:func:`mrimaster.data.dicom_series.write_clean_nifti`), so ``descrip``, ``aux_file``,
``intent_name``, ``db_name`` and header extensions are gone; file and folder names are the
case names given (which must be pseudonyms: letters, digits, ``_`` and ``-``); the only text is
what the caller passes as ``source``, ``name`` and ``licence``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.errors import DataError
from mrimaster.segmentation.cases import MODALITIES, Case, find_case
from mrimaster.segmentation.labels import get_convention, regions_to_brats2021, to_regions

log = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"
FORMAT = "mrimaster-reviewed-3d/1"
LABELS: dict[str, dict[str, int]] = {
    "brats2021": {"background": 0, "NCR/NET": 1, "ED": 2, "ET": 4},
    "wt": {"background": 0, "tumour": 1},
}
"""nnU-Net-style ``labels`` of the two conventions an export uses."""
CHANNEL_NAMES: dict[str, str] = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1-Gd", "t2": "T2"}
DEFAULT_LICENCE = ("Derived from clinical studies reviewed in MRIMaster. Use only under the "
                   "data-sharing terms of the institution that holds the studies; do not "
                   "redistribute without its approval.")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class ReviewedCase:
    """One reviewed case to export.

    Attributes:
        name: Pseudonymous case name (letters, digits, ``_``, ``-``): the folder and file
            prefix. Never a patient name or accession number.
        images: ``{modality: 3D NIfTI path}``, modalities from ``flair``, ``t1``, ``t1ce``,
            ``t2`` (those the case has); on the grid of ``seg``.
        seg: The reviewed label map (NIfTI).
        convention: Label convention of ``seg`` (a key of
            :data:`mrimaster.segmentation.labels.CONVENTIONS`).
        source: Where the case came from, without identifiers, e.g. ``"MRIMaster case 12, mask
            version 3 reviewed by user 7f3a"``.
    """

    name: str
    images: dict[str, Path]
    seg: Path
    convention: str
    source: str


def _check(case: ReviewedCase) -> None:
    if not _NAME.match(case.name):
        raise DataError(f"case name {case.name!r} is not a plain pseudonym",
                        "use letters, digits, '_' and '-' only (no patient identifiers)")
    bad = sorted(set(case.images) - set(MODALITIES))
    if bad or not case.images:
        raise DataError(f"case {case.name}: modalities {bad or 'none'} invalid",
                        f"give images for some of {', '.join(MODALITIES)}")
    get_convention(case.convention)


def _labels_out(labels: np.ndarray, convention: str) -> tuple[np.ndarray, str]:
    """``(D, H, W)`` labels in ``convention`` -> uint8 labels in the export's convention
    (``brats2021`` where the sub-regions are known, else ``wt``) and its name."""
    regions, known = to_regions(labels, convention)
    if known.all():
        return regions_to_brats2021(regions), "brats2021"
    if known[0] and not known[1:].any():
        return regions[0].astype(np.uint8), "wt"
    raise DataError(f"label convention {convention} defines regions the export cannot write",
                    "export whole-tumour or BraTS-style sub-region labels")


def _with_voxels(like: Any, data: np.ndarray) -> Any:
    """A NIfTI image of ``data`` with the qform/sform (matrices and codes) and units of
    ``like``; no other header field."""
    import nibabel as nib

    img = nib.Nifti1Image(data, like.affine)
    img.set_data_dtype(data.dtype)
    qform, qcode = like.get_qform(coded=True)
    sform, scode = like.get_sform(coded=True)
    img.set_qform(qform if qform is not None else like.affine, int(qcode))
    img.set_sform(sform if sform is not None else like.affine, int(scode))
    img.header.set_xyzt_units(*like.header.get_xyzt_units())
    return img


def _write_case(case: ReviewedCase, folder: Path) -> dict[str, Any]:
    from mrimaster.data.dicom_series import write_clean_nifti
    from mrimaster.segmentation.volumes import load_nifti

    folder.mkdir(parents=True)
    seg_img = load_nifti(case.seg)
    if len(seg_img.shape) != 3:
        raise DataError(f"case {case.name}: label map {case.seg.name} is not 3D")
    modalities = [m for m in MODALITIES if m in case.images]
    for m in modalities:
        img = load_nifti(case.images[m])
        if img.shape != seg_img.shape or not np.allclose(img.affine, seg_img.affine,
                                                          atol=1e-3):
            raise DataError(f"case {case.name}: {m} is not on the grid of the label map "
                            f"({img.shape} vs {seg_img.shape})",
                            "export images and mask on the same grid (the reference series)")
        write_clean_nifti(img, folder / f"{case.name}_{m}.nii.gz")
    labels, convention = _labels_out(np.asanyarray(seg_img.dataobj), case.convention)
    write_clean_nifti(_with_voxels(seg_img, labels), folder / f"{case.name}_seg.nii.gz")
    return {"case": case.name, "label_convention": convention, "modalities": modalities,
            "source": case.source, "input_convention": case.convention}


def write_reviewed_dataset(cases: Sequence[ReviewedCase], out: Path,
                           name: str = "MRIMaster reviewed 3D cases",
                           licence: str = DEFAULT_LICENCE) -> Path:
    """Write ``cases`` into ``out`` (see the module docstring) and return ``out``.

    Args:
        cases: The reviewed cases; names unique.
        out: A new or empty folder.
        name: Dataset name recorded in ``dataset.json``.
        licence: Licence note recorded in ``dataset.json``.

    Raises:
        DataError: ``out`` is not empty, a case name is not a plain pseudonym or repeats, a
            modality is unknown, labels do not fit the stated convention, or an image is not
            on the label map's grid.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty", "export into a new folder")
    if not cases:
        raise DataError("no reviewed cases to export")
    for case in cases:
        _check(case)
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise DataError(f"case names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    out.mkdir(parents=True, exist_ok=True)
    entries = [_write_case(c, out / c.name) for c in cases]
    conventions = sorted({e["label_convention"] for e in entries})
    main = "brats2021" if "brats2021" in conventions else "wt"
    dataset = {
        "format": FORMAT,
        "name": name,
        "description": "Reviewed tumour masks exported for training; labels per case as "
                       "label_convention says (BraTS 2017-2021, or whole tumour only).",
        "channel_names": {str(i): CHANNEL_NAMES[m] for i, m in enumerate(MODALITIES)},
        "modalities": {m: f"_{m}" for m in MODALITIES},
        "labels": LABELS[main],
        "label_conventions": {c: LABELS[c] for c in conventions},
        "regions": {"WT": "every tumour label", "TC": "NCR/NET + ET", "ET": "ET"},
        "numTraining": len(entries),
        "file_ending": ".nii.gz",
        "licence": licence,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "training": entries,
    }
    (out / DATASET_JSON).write_text(json.dumps(dataset, indent=2))
    log.info("exported %d reviewed cases to %s", len(entries), out)
    return out


def is_reviewed_dataset(folder: Path) -> bool:
    return (Path(folder) / DATASET_JSON).is_file()


def read_reviewed_dataset(folder: Path) -> list[Case]:
    """The cases of a folder written by :func:`write_reviewed_dataset`, each with the label
    convention ``dataset.json`` records.

    Raises:
        DataError: no ``dataset.json``, or a listed case folder is missing.
    """
    folder = Path(folder)
    path = folder / DATASET_JSON
    if not path.is_file():
        raise DataError(f"{folder} has no {DATASET_JSON}",
                        "pass a folder written by `mrimaster seg export-dataset` or the "
                        "reviewed-3d export")
    entries = json.loads(path.read_text())["training"]
    return [find_case(folder / e["case"], e["label_convention"]) for e in entries]


def reviewed_from_case(case: Case, source: str, name: str | None = None) -> ReviewedCase:
    """A :class:`ReviewedCase` from a recognised labelled case folder (its reference label map
    standing for the doctor's correction).

    Raises:
        DataError: the case has no label map or is a 4D (Decathlon) image.
    """
    if case.seg is None or case.convention is None:
        raise DataError(f"case {case.name} has no label map", "export labelled cases only")
    if case.image4d is not None:
        raise DataError(f"case {case.name} is one 4D image", "split it into one file per "
                        "modality first")
    return ReviewedCase(name or case.name, dict(case.images), case.seg, case.convention, source)
