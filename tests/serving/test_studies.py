"""3D studies: upload real BraTS modalities, the background job segments them; geometry and
archive problems are refused with nothing stored."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient

from mrimaster.serving.context import AppContext
from mrimaster.serving.jobs import JobRunner
from tests.serving.test_uploads import state

CASE = "brats-mini/deepmedic-brats2015/test/brats_2013_pat0001_1"


def case_files(data_root: Path) -> dict[str, Path]:
    folder = data_root / CASE
    return {"flair": next(folder.glob("Flair*")), "t1ce": next(folder.glob("T1c*"))}


def test_study_is_segmented_in_the_background(client: TestClient, ctx: AppContext,
                                              doctor: dict[str, str], data_root: Path) -> None:
    files = case_files(data_root)
    r = client.post("/api/cases/3d", headers=doctor, data={"patient": "Case 1"},
                    files={m: (p.name, p.read_bytes()) for m, p in files.items()})
    assert r.status_code == 200, r.text
    case = r.json()
    assert case["kind"] == "3d" and case["status"] == "new"
    job = client.get(f"/api/cases/{case['id']}/job", headers=doctor).json()
    assert job["state"] == "queued"
    assert JobRunner(ctx).run_pending() == 1
    job = client.get(f"/api/cases/{case['id']}/job", headers=doctor).json()
    assert job["state"] == "done" and job["progress"] == 1.0, job
    done = client.get(f"/api/cases/{case['id']}", headers=doctor).json()
    assert done["status"] in ("ai-read", "referred")
    vols = done["result"]["volumes_ml"]
    assert set(vols) == {"WT", "TC", "ET"} and vols["WT"] > 1 and vols["ET"] is not None
    assert done["model"].startswith("seg-default@")
    mask_bytes = client.get(done["files"]["mask.nii.gz"], headers=doctor).content
    mask = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(mask_bytes))
    flair = nib.load(files["flair"])
    assert mask.shape == flair.shape and np.allclose(mask.affine, flair.affine, atol=1e-4)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 4}
    # it segmented the stored volumes, rewritten from voxels and affine: identical to the upload
    for m, path in files.items():
        stored = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(
            client.get(done["files"][f"{m}.nii.gz"], headers=doctor).content))
        original = nib.load(path)
        assert np.array_equal(np.asarray(stored.dataobj), np.asarray(original.dataobj))
        assert np.array_equal(stored.affine, original.affine)
        assert stored.get_data_dtype() == original.get_data_dtype()
    page = client.get(f"/cases/{case['id']}", headers=doctor).text
    assert done["files"]["mask.nii.gz"] in page and f"{vols['WT']:.1f} mL" in page
    pdf = client.get(f"/api/cases/{case['id']}/report.pdf", headers=doctor)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_whole_tumour_study_with_another_patients_sequence(client: TestClient,
                                                          ctx: AppContext,
                                                          doctor: dict[str, str],
                                                          data_root: Path) -> None:
    """One patient's FLAIR with another patient's T1: every sequence is checked, so the T1 is
    left out (its registration refused) and named on the case page, and the case referred.
    Without T1-Gd the mask is whole tumour only: stored with that convention in its header,
    offered for download as ``wt``, never as BraTS labels."""
    from mrimaster.segmentation.labels import MASK_DESCRIPTIONS

    cases = data_root / "brats-mini" / "deepvoxnet2-brats2018"
    r = client.post("/api/cases/3d", headers=doctor, files={
        "flair": ("flair.nii.gz", (cases / "case_6" / "FLAIR.nii.gz").read_bytes()),
        "t1": ("t1.nii.gz", (cases / "case_7" / "T1.nii.gz").read_bytes())})
    assert r.status_code == 200, r.text
    case_id = r.json()["id"]
    assert JobRunner(ctx).run_pending() == 1
    done = client.get(f"/api/cases/{case_id}", headers=doctor).json()
    result = done["result"]
    assert done["status"] == "referred", result.get("warnings")
    assert result["label_convention"] == "wt" and result["mask_file"] == "wt.nii.gz"
    assert [p.split(":")[0] for p in result["sequence_problems"]] == ["t1"]
    assert result["sequences"]["t1"]["used"] is False
    assert result["sequences"]["flair"]["grid"] == "reference"
    mask = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(
        client.get(done["files"]["mask.nii.gz"], headers=doctor).content))
    assert mask.header["descrip"].item().decode() == MASK_DESCRIPTIONS["wt"]
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    page = client.get(f"/cases/{case_id}", headers=doctor).text
    assert "Sequence check: t1: left out" in page
    assert f'download="case-{case_id}-wt.nii.gz"' in page and "not BraTS labels" in page


def test_modalities_on_different_grids_are_accepted(client: TestClient, ctx: AppContext,
                                                    doctor: dict[str, str], data_root: Path,
                                                    tmp_path: Path) -> None:
    """The job registers every sequence onto the reference: grids may differ; a file that is
    no 3D volume is still refused, with nothing stored."""
    files = case_files(data_root)
    img = nib.load(files["t1ce"])
    shifted = img.affine.copy()
    shifted[:3, 3] += 5.0
    moved = tmp_path / "t1ce_moved.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted), moved)
    cropped = tmp_path / "t1ce_cropped.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-10], img.affine), cropped)
    for other in (moved, cropped):
        r = client.post("/api/cases/3d", headers=doctor, files={
            "flair": ("flair.nii.gz", files["flair"].read_bytes()),
            "t1ce": (other.name, other.read_bytes())})
        assert r.status_code == 200, r.text
        assert {"flair.nii.gz", "t1ce.nii.gz", "series.json", "roles.json"} <= set(
            r.json()["files"])
    four_d = tmp_path / "t1ce_4d.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([np.asarray(img.dataobj)] * 2, -1), img.affine), four_d)
    before = state(ctx)
    r = client.post("/api/cases/3d", headers=doctor, files={
        "flair": ("flair.nii.gz", files["flair"].read_bytes()),
        "t1ce": (four_d.name, four_d.read_bytes())})
    assert r.status_code == 422 and "T1-Gd" in r.json()["error"] and "4D" in r.json()["error"]
    assert "/tmp" not in r.text and state(ctx) == before


def test_zip_escaping_its_folder_is_refused(client: TestClient, ctx: AppContext,
                                            doctor: dict[str, str]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("study/ok.dcm", b"x")
        zf.writestr("../../evil.sh", b"echo owned")
    r = client.post("/api/cases/3d", headers=doctor,
                    files={"dicom_zip": ("study.zip", buf.getvalue())})
    assert r.status_code == 400 and "outside its folder" in r.json()["error"]
    assert state(ctx) == (0, [], [])
    assert not (ctx.store.root.parent / "evil.sh").exists()


def test_a_job_whose_worker_died_is_taken_over_then_failed(client: TestClient,
                                                          ctx: AppContext,
                                                          doctor: dict[str, str],
                                                          data_root: Path) -> None:
    """A running job whose lease expired (its worker died) is claimed again; once it has had
    its attempts, it is marked failed with its case (no process start is needed for either)."""
    from datetime import timedelta

    from mrimaster.storage import repository as repo
    from mrimaster.storage.tables import Job, utcnow

    files = case_files(data_root)
    case = client.post("/api/cases/3d", headers=doctor, files={
        m: (p.name, p.read_bytes()) for m, p in files.items()}).json()
    review = {"agrees": True, "mask_ok": True}
    early = client.post(f"/api/cases/{case['id']}/review", headers=doctor, json=review)
    assert early.status_code == 409 and "not segmented yet" in early.json()["error"]
    with ctx.sessions() as db:
        job = repo.claim_job(db, "dead:1:a", 30, max_attempts=2)
        assert job is not None and job.case_id == case["id"]
        assert repo.claim_job(db, "other:2:b", 30, max_attempts=2) is None  # leased
        later = utcnow() + timedelta(seconds=31)
        again = repo.claim_job(db, "other:2:b", 30, max_attempts=2, now=later)
        assert again is not None and again.id == job.id and again.attempts == 2
        much_later = later + timedelta(seconds=31)
        assert repo.claim_job(db, "third:3:c", 30, max_attempts=2, now=much_later) is None
        assert repo.expire_jobs(db, 2, now=much_later) == 1
        assert db.get(Job, job.id) is not None
    assert client.get(f"/api/cases/{case['id']}/job", headers=doctor).json()["state"] == "failed"
    assert client.get(f"/api/cases/{case['id']}", headers=doctor).json()["status"] == "failed"
    # a failed case has nothing to review: "mask good" on no mask was accepted, the case then
    # listed as reviewed and its PDF said "confirmed, mask good"
    late = client.post(f"/api/cases/{case['id']}/review", headers=doctor, json=review)
    assert late.status_code == 409 and "no AI read to review" in late.json()["error"], late.text
    after = client.get(f"/api/cases/{case['id']}", headers=doctor).json()
    assert after["status"] == "failed" and after["reviews"] == []


def test_series_entries_quote_no_removed_header_value(tmp_path: Path) -> None:
    """A role decision or refusal quoting a value that de-identification removes (Contrast
    Bolus Agent, Protocol Name, the Series Instance UID) or a file's or folder's name stores
    ``(removed)`` instead."""
    import pydicom

    from mrimaster.serving.study_import import _without_header_text
    from tests.data.test_dicom_series import series_files, volume_and_affine

    _name, content = series_files(*volume_and_affine(), "AX T1 POST")[0]
    ds = pydicom.dcmread(io.BytesIO(content))
    ds.ContrastBolusAgent, ds.ProtocolName = "DOE JANE GAD", "JDOE_T1"
    ds.save_as(tmp_path / "slice.dcm")
    uid = str(ds.SeriesInstanceUID)
    entry = {"why": ["TI 900 ms, TE 3 ms: inversion-prepared T1; ContrastBolusAgent "
                     "'DOE JANE GAD' -> T1 post-contrast", "description 'JDOE_T1' names T1"],
             "reason": f"series '{uid}': slice.dcm lacks its geometry"}
    cleaned = _without_header_text(dict(entry), [tmp_path / "slice.dcm"])
    assert cleaned["why"] == ["TI 900 ms, TE 3 ms: inversion-prepared T1; ContrastBolusAgent "
                              "'(removed)' -> T1 post-contrast",
                              "description '(removed)' names T1"]
    assert cleaned["reason"] == "series '(removed)': (removed) lacks its geometry"
    entry["reason"] = f"series 'no-uid:{tmp_path}': its slices are not evenly spaced"
    assert _without_header_text(entry, [tmp_path / "slice.dcm"])["reason"] == \
        "series 'no-uid:(removed)': its slices are not evenly spaced"


def test_series_entries_name_no_description_and_read_as_sentences() -> None:
    """The series description (removed by de-identification) is replaced wherever a decision
    or refusal quotes it, and the sentence still reads: "localizer series: the series mixes
    slice orientations", not "series the series mixes"."""
    from mrimaster.serving.study_import import _without_description

    entry = _without_description({
        "description": "3-PLANE LOC", "why": ["description '3-PLANE LOC' names a localizer"],
        "reason": "localizer series: series '3-PLANE LOC' mixes slice orientations"})
    assert entry["description"] == ""
    assert entry["why"] == ["description the series names a localizer"]
    assert entry["reason"] == "localizer series: the series mixes slice orientations"


def test_a_phantom_uploaded_as_flair_is_refused_with_its_reason(client: TestClient,
                                                               ctx: AppContext,
                                                               doctor: dict[str, str],
                                                               data_root: Path,
                                                               tmp_path: Path) -> None:
    """A real scanner's QA phantom (3D T1) uploaded as the FLAIR: the job refuses it before
    segmenting (the 3D brain-MRI check, mrimaster.trust.volume_check); the case is failed with
    the reason, and no mask or volume is stored."""
    from mrimaster.imaging.inputs import gather

    chosen, _ = gather(data_root / "dicom-scanners/ge-3d-t1-phantom", tmp_path, {})
    (seq,) = chosen.values()
    r = client.post("/api/cases/3d", headers=doctor,
                    files={"flair": ("phantom.nii.gz", seq.path.read_bytes())})
    assert r.status_code == 200, r.text
    case_id = r.json()["id"]
    assert JobRunner(ctx).run_pending() == 1
    job = client.get(f"/api/cases/{case_id}/job", headers=doctor).json()
    assert job["state"] == "failed" and "does not look like a brain MRI" in job["message"], job
    case = client.get(f"/api/cases/{case_id}", headers=doctor).json()
    assert case["status"] == "failed" and "mask.nii.gz" not in case["files"], case
    assert not (case.get("result") or {}).get("volumes_ml"), case
