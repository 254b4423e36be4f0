"""The mask file of a segmentation result folder, written and found by its convention.

A result folder (``seg predict``, the web app's job, ``pacs segment``) holds the mask in the
file :data:`mrimaster.segmentation.labels.MASK_FILES` names for its convention: BraTS 2021
labels in ``seg.nii.gz``, a whole-tumour-only mask in ``wt.nii.gz``; the convention is also in
the NIfTI header's ``descrip`` and in ``volumes.json`` (``label_convention``, ``mask_file``).
Folders written before ``wt.nii.gz`` existed hold ``seg.nii.gz`` whatever the convention, and
no ``mask_file``: :func:`result_mask` falls back to it, with the convention ``volumes.json``
states.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib

from mrimaster.errors import DataError
from mrimaster.segmentation.labels import MASK_DESCRIPTIONS, MASK_FILES, mask_file_name

VOLUMES_JSON = "volumes.json"
LEGACY_MASK = "seg.nii.gz"
"""The one mask file name of results written before ``wt.nii.gz`` (any convention)."""


def save_mask(labels: Any, folder: Path, convention: str) -> Path:
    """Write the label map ``labels`` (a NIfTI image) into ``folder`` under its convention's
    name with the convention in ``descrip``; the other convention's file, left there by an
    earlier run, is removed (a reader must not find a stale mask beside the new one).

    Returns:
        The written file.
    """
    path = Path(folder) / mask_file_name(convention)
    labels.header["descrip"] = MASK_DESCRIPTIONS[convention].encode()
    nib.save(labels, str(path))
    for name in MASK_FILES.values():
        stale = Path(folder) / name
        if name != path.name and stale.exists():
            stale.unlink()
    return path


UNCERTAINTY_FILE = "uncertainty.nii.gz"
UNCERTAINTY_SCALE = 250
"""The uncertainty map is stored as uint8 with slope ``1 / UNCERTAINTY_SCALE``: readers that
apply the NIfTI scaling (nibabel, ITK, viewers) get values in [0, 1]."""


def save_uncertainty(voxel_map: Any, volume: Any, folder: Path) -> Path:
    """Write the per-voxel uncertainty as ``uncertainty.nii.gz`` on the input grid.

    Args:
        voxel_map: ``(d, h, w)`` float in [0, 1] on the cropped working grid (mutual
            information in bits, :func:`mrimaster.segmentation.ensemble.mutual_information`).
        volume: The :class:`mrimaster.segmentation.volumes.Volume` it was computed on; the map
            goes back to its input grid as the mask does (nearest-neighbour, a display map).
        folder: Result folder.
    """
    import numpy as np

    from mrimaster.segmentation.volumes import restore_to_input_grid

    quantised = np.rint(np.clip(voxel_map, 0, 1) * UNCERTAINTY_SCALE).astype(np.uint8)
    image = restore_to_input_grid(quantised, volume)
    image.header.set_slope_inter(1.0 / UNCERTAINTY_SCALE, 0)
    image.header["descrip"] = b"MRIMaster uncertainty: WT mutual information, bits"
    path = Path(folder) / UNCERTAINTY_FILE
    nib.save(image, str(path))
    return path


def result_mask(folder: Path) -> tuple[Path, str]:
    """``(mask file, label convention)`` of a result folder, from its ``volumes.json``
    (``mask_file``; before it existed, ``seg.nii.gz``).

    Raises:
        DataError: no ``volumes.json``, or the mask file it names is missing.
    """
    folder = Path(folder)
    info_file = folder / VOLUMES_JSON
    if not info_file.is_file():
        raise DataError(f"{folder} has no {VOLUMES_JSON}: not a segmentation result folder",
                        "pass the --out folder of `mrimaster seg predict`")
    info: dict[str, Any] = json.loads(info_file.read_text())
    convention = str(info.get("label_convention") or "brats2021")
    path = folder / str(info.get("mask_file") or LEGACY_MASK)
    if not path.is_file():
        raise DataError(f"{folder}: the mask {path.name} named by {VOLUMES_JSON} is missing",
                        "segment the case again")
    return path, convention
