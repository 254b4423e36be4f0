"""Writing a NIfTI volume from its voxels and affine only.

DICOM series are converted by :mod:`mrimaster.imaging.dicom_import` (the project's one DICOM
converter: classic and enhanced files, roles from acquisition attributes); every NIfTI it and
the web app store is written by :func:`write_clean_nifti`, so that no text field or header
extension of an uploaded file survives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


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
