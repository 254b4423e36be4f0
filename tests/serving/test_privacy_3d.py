"""The 3D counterpart of test_privacy's worst case: a DICOM study (a real BraTS case as a
clinical series set: localizer, DWI, FLAIR, T1-Gd) whose every slice carries the worst-case
identifying attributes, with identifying folder, entry and zip names, goes through the whole
app: upload, segmentation job, review, every page and API answer, every stored file, the PDF
report, the 3D export, the database, the audit log and the server log. No original string or
UID appears in any of them, and what is stored still works."""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from mrimaster.serving.context import AppContext
from mrimaster.serving.jobs import JobRunner
from tests.serving.test_privacy import LEAKY_NAME, database_text
from tests.serving.test_studies import CASE
from tests.storage.worst_case import GEOMETRY, Originals, worst_case

UID_ROOT = "1.2.826.0.1.3680043.10.779"
"""Per-slice SOP Instance and per-series Series Instance UIDs (identifying, like the rest)."""
SLICE_OWN = {*GEOMETRY, "SOPClassUID", "Modality", "SpecificCharacterSet", "SamplesPerPixel",
             "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit",
             "PixelRepresentation", "PixelData"}
"""What each slice keeps of its own among what the worst case sets: geometry and pixels."""
BROKEN = 9
"""The number of a three-slice series whose middle slice has no position: refused with a
reason quoting that file's name (its SOP Instance UID)."""
NOT_THE_QUESTION = ("BurnedInAnnotation", "RecognizableVisualFeatures")


def identified_slice(slice_path: Path, worst: bytes, series: int, index: int,
                     uids: set[str]) -> bytes:
    """The slice at ``slice_path`` carrying every value of the worst case (``worst``: its file),
    with its own geometry, pixels and acquisition attributes, SOP Instance UID
    ``UID_ROOT.<series>.<index>`` and Series Instance UID ``UID_ROOT.<series>`` (both added to
    ``uids``); Study Instance and Frame of Reference UIDs are the worst case's."""
    own = pydicom.dcmread(slice_path)
    ds = pydicom.dcmread(io.BytesIO(worst))
    for element in own:
        if element.tag not in ds or element.keyword in SLICE_OWN:
            ds[element.tag] = element
    for keyword in NOT_THE_QUESTION:
        if keyword in ds:
            delattr(ds, keyword)
    # a classic (single-frame) image: the worst case's per-frame functional group would make
    # it an enhanced multi-frame one; its nested values go into the shared group instead
    frame = ds.PerFrameFunctionalGroupsSequence[0]
    ds.SharedFunctionalGroupsSequence[0].FrameContentSequence = frame.FrameContentSequence
    del ds.PerFrameFunctionalGroupsSequence
    ds.SeriesInstanceUID = f"{UID_ROOT}.{series}"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{UID_ROOT}.{series}.{index}"
    uids.update({ds.SeriesInstanceUID, ds.SOPInstanceUID})
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def identified_study(data_root: Path, tmp_path: Path, noise_t1ce: bool = False
                     ) -> tuple[str, bytes, Originals]:
    """``(zip file name, zip bytes, originals)``: the study, every slice identified
    (:func:`identified_slice`), and a broken series (:data:`BROKEN`), under folders and entry
    names made of identifying values (the patient's name and ID, the accession number, the
    series description, the SOP Instance UID), with a non-DICOM note beside;
    ``originals.uids`` holds the added UIDs too. ``noise_t1ce``: the T1-Gd series holds noise
    on the T1-Gd's grid (not a brain MRI: the brain-MRI check leaves it out)."""
    from mrimaster.imaging.simulate import build_study

    worst_path, originals = worst_case(tmp_path / "worst.dcm")
    worst = pydicom.dcmread(worst_path)
    folder = data_root / CASE
    t1ce: Path | nib.Nifti1Image = next(folder.glob("T1c*"))
    if noise_t1ce:
        grid = nib.load(str(t1ce))
        t1ce = nib.Nifti1Image(np.random.default_rng(3).uniform(0, 1000, grid.shape).astype(
            np.float32), grid.affine)
    build_study({"flair": next(folder.glob("Flair*")), "t1ce": t1ce}, tmp_path / "dicom")
    patient = f"{worst.PatientName}_{worst.PatientID}"
    top = f"{LEAKY_NAME}/{patient}/{worst.AccessionNumber}"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for series_dir in sorted(p for p in (tmp_path / "dicom").iterdir() if p.is_dir()):
            number = int(series_dir.name.split("_")[0])
            for index, path in enumerate(sorted(series_dir.glob("*.dcm")), start=1):
                blob = identified_slice(path, worst_path.read_bytes(), number, index,
                                        originals.uids)
                zf.writestr(f"{top}/{worst.SeriesDescription}_{number}/"
                            f"{UID_ROOT}.{number}.{index}.dcm", blob)
        for index, path in enumerate(sorted((tmp_path / "dicom" / "3_flair").glob("*.dcm"))[:3],
                                     start=1):  # a series refused for a slice of no position
            ds = pydicom.dcmread(io.BytesIO(identified_slice(
                path, worst_path.read_bytes(), BROKEN, index, originals.uids)))
            if index == 2:
                del ds.ImagePositionPatient
            blob = io.BytesIO()
            ds.save_as(blob, enforce_file_format=True)
            zf.writestr(f"{top}/{worst.SeriesDescription}_{BROKEN}/{ds.SOPInstanceUID}.dcm",
                        blob.getvalue())
        zf.writestr(f"{top}/{worst.PatientID}_notes.txt", f"{worst.PatientName} {patient}")
    return f"{LEAKY_NAME}_{patient}.zip", buf.getvalue(), originals


def pdf_text(pdf: bytes) -> bytes:
    """The literal strings of a PDF's (Flate-compressed) content streams, joined."""
    out = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            out.append(zlib.decompress(stream))
        except zlib.error:
            out.append(stream)
    return b"".join(re.findall(rb"\(((?:[^()\\]|\\.)*)\)", b"\n".join(out)))


def searchable(name: str, blob: bytes) -> bytes:
    """What to search in a downloaded file: its name and bytes (gzip and zip headers carry
    file names) and, unpacked, a NIfTI's header and extensions (its voxels hold no text) or a
    PDF's text. A gzip NIfTI's compressed body is noise: only its start (the gzip header) is
    kept."""
    parts = [name.encode(), blob]
    if blob[:2] == b"\x1f\x8b":
        raw = gzip.decompress(blob)
        header = nib.Nifti1Image.from_bytes(raw).header
        parts[1:] = [blob[:1024], raw[:int(header["vox_offset"])]]
    elif blob.startswith(b"%PDF"):
        parts.append(pdf_text(blob))
    return b"\n".join(parts)


def leaks(seen: dict[str, bytes], originals: Originals, zip_name: str) -> dict[str, list[str]]:
    """Every original string (6 or more characters), UID and leaky name found in ``seen``,
    with the places it was found."""
    secrets = [s for s in originals.strings if len(s) >= 6] + sorted(originals.uids)
    secrets += [LEAKY_NAME, zip_name]
    leaked = {s: [place for place, blob in seen.items() if s.encode() in blob]
              for s in secrets}
    return {s: places for s, places in leaked.items() if places}


def upload_and_segment(client: TestClient, ctx: AppContext, doctor: dict[str, str],
                       zip_name: str, archive: bytes) -> tuple[int, dict[str, bytes]]:
    """Upload the zip as a doctor and run its job: ``(case id, {"upload answer": ...})``."""
    r = client.post("/api/cases/3d", headers=doctor, files={"dicom_zip": (zip_name, archive)})
    assert r.status_code == 200, r.text
    assert JobRunner(ctx).run_pending() == 1
    return r.json()["id"], {"upload answer": r.content}


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_study_full_of_identifying_values_leaks_nowhere(
        client: TestClient, ctx: AppContext, doctor: dict[str, str], admin: dict[str, str],
        data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Upload as a doctor, segment, save and mark the mask reviewed, review the case; then
    search the upload answer, every page and API answer about the case (as an admin), every
    case file, the mask version, the PDF report, the 3D export (entries and names), the
    database, the audit log and the server log for every original string (6 or more
    characters) and UID, the zip's, folders' and entries' names."""
    zip_name, archive, originals = identified_study(data_root, tmp_path)
    caplog.set_level("DEBUG")
    case_id, seen = upload_and_segment(client, ctx, doctor, zip_name, archive)
    job = client.get(f"/api/cases/{case_id}/job", headers=doctor).json()
    assert job["state"] == "done", job
    case = client.get(f"/api/cases/{case_id}", headers=doctor).json()
    assert case["status"] in ("ai-read", "referred") and case["result"]["volumes_ml"]["WT"] > 1
    # the job's result keeps the upload's shifted study date (the follow-up's order); that it
    # is not the original date is among the searches below
    assert len(str(case["result"].get("study_date"))) == 8, case["result"].get("study_date")
    series = client.get(f"/api/cases/{case_id}/series", headers=doctor).json()
    assert {s["assigned"] for s in series} >= {"flair", "t1ce"} and len(series) == 5, series
    assert any("(removed) lacks its geometry" in str(s["reason"]) for s in series), series
    assert any("ContrastBolusAgent '(removed)'" in w for s in series for w in s["why"]), series

    mask = client.get(case["files"]["mask.nii.gz"], headers=doctor).content
    r = client.post(f"/api/cases/{case_id}/masks?base=0", headers=doctor, content=mask)
    assert r.status_code == 200, r.text
    r = client.post(f"/api/cases/{case_id}/masks/1/reviewed", headers=doctor)
    assert r.status_code == 200, r.text
    r = client.post(f"/api/cases/{case_id}/review", headers=doctor,
                    json={"agrees": True, "mask_ok": True})
    assert r.status_code == 200, r.text

    case = client.get(f"/api/cases/{case_id}", headers=doctor).json()
    alias = case["pseudonym"]
    for url in (f"/api/cases/{case_id}", f"/cases/{case_id}", "/api/cases", "/",
                f"/api/cases/{case_id}/job", f"/api/cases/{case_id}/series",
                f"/api/cases/{case_id}/masks", f"/api/patients/{alias}/followup",
                f"/patients/{alias}", "/api/audit", "/admin/audit"):
        answer = client.get(url, headers=admin)
        assert answer.status_code == 200, url
        seen[url] = answer.content
    assert {"registration_flair", "brain_mask", "series.json", "roles.json",
            "registered/flair.nii.gz"} <= set(case["files"]), case["files"]
    downloads = {**case["files"], "mask version 1": f"/api/cases/{case_id}/masks/1",
                 "report.pdf": f"/api/cases/{case_id}/report.pdf"}
    for name, url in downloads.items():
        answer = client.get(url, headers=doctor)
        assert answer.status_code == 200 and answer.content, name
        seen[name] = searchable(name, answer.content)
    stored_flair = nib.Nifti1Image.from_bytes(gzip.decompress(client.get(
        case["files"]["flair.nii.gz"], headers=doctor).content))
    assert stored_flair.ndim == 3 and float(np.asarray(stored_flair.dataobj).std()) > 0
    export = client.get("/api/export/reviewed-3d.zip", headers=doctor)
    assert export.status_code == 200
    with zipfile.ZipFile(io.BytesIO(export.content)) as zf:
        names = zf.namelist()
        assert f"case-{case_id}/case-{case_id}_seg.nii.gz" in names, names
        for name in names:
            seen[f"export: {name}"] = searchable(name, zf.read(name))
    seen["export's directory"] = export.content[-4096:]
    seen["database"] = database_text(ctx).encode()
    seen["server log"] = caplog.text.encode()

    assert b"".join(seen.values()).count(alias.encode()) > 5  # the search sees what is shown
    assert alias.encode() in seen["report.pdf"]  # and what the PDF says
    assert not leaks(seen, originals, zip_name)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_follow_up_of_identified_studies_leaks_nowhere(
        client: TestClient, ctx: AppContext, doctor: dict[str, str], admin: dict[str, str],
        data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The identified study uploaded twice (one patient, two time points): the follow-up
    registers the pair and reads the later study again on the earlier one's scale
    (mrimaster.serving.followup_read). Its API answer, page, stored pair files (the cached
    JSON, the resampled image and mask), the database and the log hold no original."""
    zip_name, archive, originals = identified_study(data_root, tmp_path)
    caplog.set_level("DEBUG")
    ids = []
    for _ in range(2):
        r = client.post("/api/cases/3d", headers=doctor,
                        files={"dicom_zip": (zip_name, archive)})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    assert JobRunner(ctx).run_pending() == 2
    alias = client.get(f"/api/cases/{ids[0]}", headers=doctor).json()["pseudonym"]
    assert client.get(f"/api/cases/{ids[1]}", headers=doctor).json()["pseudonym"] == alias
    seen: dict[str, bytes] = {}
    answer = client.get(f"/api/patients/{alias}/followup", headers=admin)
    assert answer.status_code == 200, answer.text
    seen["follow-up answer"] = answer.content
    (pair,) = answer.json()["pairs"]
    assert pair["error"] is None and "volumes_ml" in pair["matched"], pair  # the read ran
    seen["patient page"] = client.get(f"/patients/{alias}", headers=admin).content
    later = client.get(f"/api/cases/{ids[1]}", headers=doctor).json()
    stored = {n: u for n, u in later["files"].items() if n.startswith("followup/")}
    assert len(stored) == 3, stored  # the pair's JSON, image and mask
    for name, url in stored.items():
        got = client.get(url, headers=doctor)
        assert got.status_code == 200 and got.content, name
        seen[name] = searchable(name, got.content)
    seen["database"] = database_text(ctx).encode()
    seen["server log"] = caplog.text.encode()
    assert not leaks(seen, originals, zip_name)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_series_the_brain_mri_check_leaves_out_leaks_nowhere(
        client: TestClient, ctx: AppContext, doctor: dict[str, str], admin: dict[str, str],
        data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The identified study with noise as its T1-Gd: the brain-MRI check leaves the T1-Gd out
    and the FLAIR is segmented. Its reason (which names the series) and the check's figures
    reach the job, the case, the series list, the page, the database and the log without any
    original string or UID."""
    zip_name, archive, originals = identified_study(data_root, tmp_path, noise_t1ce=True)
    caplog.set_level("DEBUG")
    case_id, seen = upload_and_segment(client, ctx, doctor, zip_name, archive)
    case = client.get(f"/api/cases/{case_id}", headers=doctor).json()
    assert case["status"] in ("ai-read", "referred"), case
    text = json.dumps(case)
    assert "does not look like a brain MRI" in text and "left out" in text, text[:2000]
    for url in (f"/api/cases/{case_id}", f"/cases/{case_id}", f"/api/cases/{case_id}/job",
                f"/api/cases/{case_id}/series", "/api/audit"):
        answer = client.get(url, headers=admin)
        assert answer.status_code == 200, url
        seen[url] = answer.content
    for name, url in case["files"].items():
        seen[name] = searchable(name, client.get(url, headers=doctor).content)
    seen["database"] = database_text(ctx).encode()
    seen["server log"] = caplog.text.encode()
    assert not leaks(seen, originals, zip_name)


def test_the_identified_slice_keeps_its_geometry_and_gets_every_value(tmp_path: Path) -> None:
    """The builder itself: a slice keeps its geometry and pixels, and holds the worst case's
    values (top level, nested, private, file meta) and the new UIDs."""
    from tests.data.test_dicom_series import series_files, volume_and_affine

    data, affine = volume_and_affine()
    name, content = series_files(data, affine, "AX FLAIR")[0]
    (tmp_path / "slice.dcm").write_bytes(content)
    worst_path, originals = worst_case(tmp_path / "worst.dcm")
    uids: set[str] = set()
    blob = identified_slice(tmp_path / "slice.dcm", worst_path.read_bytes(), 7, 3, uids)
    ds, own = pydicom.dcmread(io.BytesIO(blob)), pydicom.dcmread(io.BytesIO(content))
    assert uids == {f"{UID_ROOT}.7", f"{UID_ROOT}.7.3"}
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == f"{UID_ROOT}.7.3"
    assert np.array_equal(ds.pixel_array, own.pixel_array)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "InstanceNumber"):
        assert ds.get(keyword) == own.get(keyword), keyword
    assert ds.PatientID == originals.patient_id and "PerFrameFunctionalGroupsSequence" not in ds
    assert isinstance(ds.SharedFunctionalGroupsSequence[0].FrameContentSequence[0], Dataset)
    text = blob.decode("latin-1")
    assert sum(s in text for s in originals.strings) > 0.9 * len(originals.strings)
