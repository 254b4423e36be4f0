"""``seg predict``'s result folder keeps no identifying text of its inputs' NIfTI headers.

A NIfTI header has free-text fields (``descrip``, ``aux_file``, ``intent_name``, ``db_name``)
and extensions where converters and scripts put patient names, record numbers or whole DICOM
headers. The inputs here carry such values in every one of them; no written file (the masks,
the uncertainty map, the brain mask, ``volumes.json``, the pictures) may hold any, byte for
byte (gzip-compressed files are read decompressed).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrimaster.cli.main import main

PAT1 = "brats-mini/deepmedic-brats2015/test/brats_2013_pat0001_1"  # FLAIR + T1-Gd
SECRETS = (b"DOE^JOHN", b"MRN-4471902", b"JOHNDOE", b"SMITHJ", b"1951-03-07")


def _dirty_copy(src: Path, out: Path) -> None:
    """``src``'s voxels and affine with an identifying value in every free-text field."""
    img = nib.load(str(src))
    dirty = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
    dirty.header["descrip"] = b"DOE^JOHN 1951-03-07"
    dirty.header["aux_file"] = b"MRN-4471902"
    dirty.header["intent_name"] = b"JOHNDOE"
    dirty.header["db_name"] = b"SMITHJ"
    dirty.header.extensions.append(
        nib.nifti1.Nifti1Extension("comment", b"PatientName=DOE^JOHN PatientID=MRN-4471902"))
    nib.save(dirty, str(out))


def _leaks(folder: Path) -> dict[str, list[bytes]]:
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        hits = [s for s in SECRETS if s in raw]
        if hits:
            found[path.name] = hits
    return found


@pytest.mark.realdata
@pytest.mark.parametrize("given", ["case folder", "explicit files"])
def test_no_header_text_reaches_the_result_folder(data_root: Path, tmp_path: Path,
                                                  given: str) -> None:
    src = data_root / PAT1
    study = tmp_path / "study"
    study.mkdir()
    _dirty_copy(src / "Flair_subtrMeanDivStd.nii.gz", study / "flair.nii.gz")
    _dirty_copy(src / "T1c_subtrMeanDivStd.nii.gz", study / "t1ce.nii.gz")
    assert _leaks(study), "the inputs must carry the values the test looks for"
    out = tmp_path / "out"
    inputs = ["--case", str(study)] if given == "case folder" else \
        ["--flair", str(study / "flair.nii.gz"), "--t1ce", str(study / "t1ce.nii.gz")]
    assert main(["seg", "predict", *inputs, "--fast", "--out", str(out)]) == 0
    written = {p.name for p in out.iterdir()}
    assert {"seg.nii.gz", "uncertainty.nii.gz", "volumes.json"} <= written, written
    assert _leaks(out) == {}
