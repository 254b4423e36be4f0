"""A DICOM study through the web app: every series listed with its role and why (refused ones
with their reason), the roles a doctor may change (audited, segmented again), the registration
and brain-mask checks on the case page."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from mrimaster.serving.context import AppContext
from mrimaster.serving.jobs import JobRunner
from mrimaster.storage.tables import AuditEvent, Job
from tests.serving.test_studies import CASE


def zip_study(folder: Path, archive: Path) -> bytes:
    """``folder``'s files zipped under its name (as a user zips an exported study)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder.parent).as_posix())
    return archive.read_bytes()


@pytest.fixture(scope="module")
def study_zip(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> bytes:
    """A clinical-looking DICOM study of a BraTS case: localizer, DWI, FLAIR, T1-Gd."""
    from mrimaster.imaging.simulate import build_study

    folder = data_root / CASE
    out = tmp_path_factory.mktemp("study")
    build_study({"flair": next(folder.glob("Flair*")), "t1ce": next(folder.glob("T1c*"))},
                out / "dicom")
    return zip_study(out / "dicom", out / "study.zip")


def upload(client: TestClient, headers: dict[str, str], data: bytes) -> dict[str, Any]:
    r = client.post("/api/cases/3d", headers=headers,
                    files={"dicom_zip": ("study.zip", data)})
    assert r.status_code == 200, r.text
    return dict(r.json())


def series_by_kind(client: TestClient, case_id: int, headers: dict[str, str]
                   ) -> dict[str, dict[str, Any]]:
    r = client.get(f"/api/cases/{case_id}/series", headers=headers)
    assert r.status_code == 200, r.text
    return {s["assigned"] or s["kind"]: s for s in r.json()}


def nifti(client: TestClient, url: str, headers: dict[str, str]) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(client.get(url, headers=headers).content))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_dicom_study_is_listed_registered_and_segmented(
        client: TestClient, ctx: AppContext, doctor: dict[str, str], study_zip: bytes) -> None:
    case = upload(client, doctor, study_zip)
    found = series_by_kind(client, case["id"], doctor)
    assert set(found) == {"flair", "t1ce", "localizer", "diffusion"}, found
    assert found["flair"]["detected"] == "flair" and found["flair"]["why"]
    assert found["t1ce"]["file"] and found["t1ce"]["series_number"] == 4
    for refused in ("localizer", "diffusion"):
        assert found[refused]["file"] is None and found[refused]["reason"]
    assert "4D diffusion" in found["diffusion"]["reason"]
    page = client.get(f"/cases/{case['id']}", headers=doctor).text
    assert 'id="series"' in page and 'name="role"' in page and "4D diffusion" in page

    assert JobRunner(ctx).run_pending() == 1
    job = client.get(f"/api/cases/{case['id']}/job", headers=doctor).json()
    assert job["state"] == "done", job
    done = client.get(f"/api/cases/{case['id']}", headers=doctor).json()
    study = done["result"]["study"]
    assert study["reference"]["role"] == "t1ce"
    assert study["sequences"]["flair"]["nmi"] > 0
    # the mask lies on the reference's own grid (the T1-Gd series as stored)
    mask = nifti(client, done["files"]["mask.nii.gz"], doctor)
    reference = nifti(client, done["files"]["t1ce.nii.gz"], doctor)
    assert mask.shape == reference.shape
    assert np.allclose(mask.affine, reference.affine, atol=1e-3)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 4}
    assert done["result"]["volumes_ml"]["WT"] > 1
    for picture in ("registration_flair", "brain_mask"):
        r = client.get(done["files"][picture], headers=doctor)
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG"), picture
    page = client.get(f"/cases/{case['id']}", headers=doctor).text
    assert 'id="registration"' in page and done["files"]["registration_flair"] in page
    assert 'id="brain-mask"' in page and done["files"]["brain_mask"] in page
    assert "NMI" in page and "mm" in page
    # de-identification removes Series Description (people type names into it): neither the
    # series list, the file names, the result nor the page quote it
    listed = client.get(f"/api/cases/{case['id']}/series", headers=doctor).text
    for shown in (listed, page, json.dumps(done)):
        assert "SAG 3D T1 MPRAGE" not in shown and "AX FLAIR" not in shown \
            and "AX_FLAIR" not in shown and "AX DWI" not in shown

    # a doctor's reviewed mask becomes training data: the BraTS layout, every sequence on the
    # mask's grid (registered), the reviewed labels, nothing identifying
    edited = np.asarray(mask.dataobj).copy()
    edited[edited == 4] = 1
    body = gzip.compress(nib.Nifti1Image(edited, mask.affine).to_bytes())
    r = client.post(f"/api/cases/{case['id']}/masks?base=0", headers=doctor, content=body)
    assert r.status_code == 200, r.text
    assert client.post(f"/api/cases/{case['id']}/masks/1/reviewed",
                       headers=doctor).status_code == 200
    r = client.get("/api/export/reviewed-3d.zip", headers=doctor)
    assert r.status_code == 200
    name = f"case-{case['id']}"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        listed = sorted(zf.namelist())
        assert listed == [f"{name}/{name}_flair.nii.gz", f"{name}/{name}_seg.nii.gz",
                          f"{name}/{name}_t1ce.nii.gz", "dataset.json"], listed
        dataset = json.loads(zf.read("dataset.json"))
        seg = nib.Nifti1Image.from_bytes(gzip.decompress(zf.read(f"{name}/{name}_seg.nii.gz")))
        flair = nib.Nifti1Image.from_bytes(gzip.decompress(
            zf.read(f"{name}/{name}_flair.nii.gz")))
        raw = b"".join(zf.read(n) for n in listed)
    assert dataset["numTraining"] == 1 and "version 1" in json.dumps(dataset)
    assert np.array_equal(np.asarray(seg.dataobj), edited)
    assert flair.shape == mask.shape and np.allclose(flair.affine, mask.affine, atol=1e-3)
    assert b"SIM0001" not in raw and b"SIMULATED" not in raw  # the study's patient


def form_token(html: str) -> str:
    return html.split('name="csrf" value="')[1].split('"')[0]


def test_roles_are_checked_audited_and_segmented_again(
        client: TestClient, ctx: AppContext, doctor: dict[str, str], study_zip: bytes) -> None:
    from tests.serving.conftest import DOCTOR_PASSWORD

    case = upload(client, doctor, study_zip)
    found = series_by_kind(client, case["id"], doctor)
    flair, t1ce = found["flair"]["file"], found["t1ce"]["file"]
    url = f"/api/cases/{case['id']}/roles"
    r = client.post(url, headers=doctor, json={"roles": {flair: None}})
    assert r.status_code == 422 and "FLAIR" in r.json()["error"], r.text
    r = client.post(url, headers=doctor, json={"roles": {t1ce: "flair"}})
    assert r.status_code == 422 and "two series" in r.json()["error"], r.text
    r = client.post(url, headers=doctor, json={"roles": {found["localizer"]["description"]:
                                                         "t1"}})
    assert r.status_code == 422, r.text
    with ctx.sessions() as db:
        assert db.query(Job).filter_by(case_id=case["id"]).count() == 1

    # the page's form: swap the two roles
    r = client.post("/login", data={"username": "doctor", "password": DOCTOR_PASSWORD,
                                    "csrf": form_token(client.get("/login").text)},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    page = client.get(f"/cases/{case['id']}").text
    r = client.post(f"/cases/{case['id']}/roles", data={
        "csrf": form_token(page), "role": [f"{flair}|none", f"{t1ce}|t1ce"]})
    assert r.status_code == 422 and 'id="roles-error"' in r.text and "FLAIR" in r.text
    r = client.post(f"/cases/{case['id']}/roles", data={
        "csrf": form_token(page), "role": [f"{flair}|t1ce", f"{t1ce}|flair"]},
        follow_redirects=False)
    assert r.status_code == 303, r.text
    now = series_by_kind(client, case["id"], doctor)
    assert now["flair"]["file"] == t1ce and now["t1ce"]["file"] == flair
    assert now["flair"]["detected"] == "t1ce"
    with ctx.sessions() as db:
        jobs = db.query(Job).filter_by(case_id=case["id"]).order_by(Job.id).all()
        detail = db.query(AuditEvent).filter_by(action="change-roles").one()
    # the segmentation queued with the detected roles never runs: only the new roles' does
    assert [j.state for j in jobs] == ["failed", "queued"]
    assert "superseded" in jobs[0].message and "roles" in jobs[0].message
    assert detail.username == "doctor" and "flair -> t1ce" in detail.detail
    assert "t1ce -> flair" in detail.detail
    shown = client.get(f"/api/cases/{case['id']}", headers=doctor).json()
    assert shown["files"]["flair.nii.gz"].endswith("/flair.nii.gz")
    r = client.get(shown["files"]["roles.json"], headers=doctor)
    assert r.json() == {"flair": t1ce, "t1ce": flair}
    assert JobRunner(ctx).run_pending() == 1
    with ctx.sessions() as db:
        assert [j.state for j in db.query(Job).filter_by(case_id=case["id"])
                .order_by(Job.id)] == ["failed", "done"]
    study = client.get(f"/api/cases/{case['id']}", headers=doctor).json()["result"]["study"]
    # the reference (T1-Gd role) is now the 4 mm axial series the detector had called FLAIR
    assert study["reference"]["role"] == "t1ce"
    assert max(study["reference"]["spacing_mm"]) > 3.5, study["reference"]


def test_a_role_change_refuses_the_result_of_a_segmentation_already_running(
        client: TestClient, ctx: AppContext, doctor: dict[str, str], study_zip: bytes) -> None:
    from mrimaster.storage import repository as repo

    case = upload(client, doctor, study_zip)
    found = series_by_kind(client, case["id"], doctor)
    with ctx.sessions() as db:  # a worker has claimed the first segmentation
        running = repo.claim_job(db, "stale-worker", 600, 3)
        assert running is not None and running.case_id == case["id"]
    r = client.post(f"/api/cases/{case['id']}/roles", headers=doctor,
                    json={"roles": {found["t1ce"]["file"]: None}})
    assert r.status_code == 200, r.text
    with ctx.sessions() as db:
        assert not repo.update_owned_job(db, running.id, "stale-worker", state="done")
        states = [j.state for j in db.query(Job).filter_by(case_id=case["id"]).order_by(Job.id)]
    assert states == ["failed", "queued"]


def test_a_study_without_flair_is_refused_at_upload(
        client: TestClient, ctx: AppContext, doctor: dict[str, str], data_root: Path,
        tmp_path: Path) -> None:
    from mrimaster.imaging.simulate import build_study
    from tests.serving.test_uploads import state

    folder = data_root / CASE
    build_study({"t1ce": next(folder.glob("T1c*"))}, tmp_path / "dicom", distractors=False)
    r = client.post("/api/cases/3d", headers=doctor, files={
        "dicom_zip": ("study.zip", zip_study(tmp_path / "dicom", tmp_path / "study.zip"))})
    assert r.status_code == 422 and "no FLAIR series" in r.json()["error"], r.text
    assert "t1ce" in r.json()["error"] and "/tmp" not in r.text
    assert state(ctx) == (0, [], [])


def test_a_damaged_flair_is_named_at_upload(client: TestClient, ctx: AppContext,
                                            doctor: dict[str, str], data_root: Path,
                                            tmp_path: Path) -> None:
    """A zip whose FLAIR misses a slice: the upload names the FLAIR (as the web app names a
    series, its description removed) and why, without internal file names."""
    import pydicom

    from mrimaster.imaging.simulate import build_study
    from tests.serving.test_uploads import state

    folder = data_root / CASE
    build_study({"flair": next(folder.glob("Flair*")), "t1ce": next(folder.glob("T1c*"))},
                tmp_path / "dicom", distractors=False)
    flair = next(p for p in (tmp_path / "dicom").iterdir() if "FLAIR" in p.name.upper())
    files = sorted(flair.iterdir(), key=lambda f: float(pydicom.dcmread(
        f, stop_before_pixels=True).InstanceNumber))
    files[len(files) // 2].unlink()
    r = client.post("/api/cases/3d", headers=doctor, files={
        "dicom_zip": ("study.zip", zip_study(tmp_path / "dicom", tmp_path / "study.zip"))})
    error = r.json()["error"]
    assert r.status_code == 422, r.text
    assert "the FLAIR series" in error and "cannot be used" in error, error
    assert "not evenly spaced" in error and "None" not in error and "series/" not in error
    assert "export the FLAIR series again" in r.json()["hint"]
    assert state(ctx) == (0, [], [])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_patients_studies_are_ordered_by_their_shifted_study_dates(
        client: TestClient, doctor: dict[str, str], data_root: Path, tmp_path: Path) -> None:
    """Two studies of one patient uploaded later one first: the follow-up orders them by
    study date (shifted by the patient's offset, the interval kept), not by upload time (it
    used to: nothing recorded the date, and "earlier" and "later" were swapped)."""
    from datetime import date

    from mrimaster.imaging.simulate import StudyInfo, build_study

    folder = data_root / CASE
    zips: dict[str, bytes] = {}
    for day in ("20240601", "20240115"):  # the later study is uploaded first
        out = tmp_path / day
        build_study({"flair": next(folder.glob("Flair*")), "t1ce": next(folder.glob("T1c*"))},
                    out / "dicom", study=StudyInfo(study_date=day, uid_seed=int(day)),
                    distractors=False)
        zips[day] = zip_study(out / "dicom", out / "study.zip")
    later = upload(client, doctor, zips["20240601"])
    earlier = upload(client, doctor, zips["20240115"])
    assert later["pseudonym"] == earlier["pseudonym"]
    r = client.get(f"/api/patients/{later['pseudonym']}/followup", headers=doctor)
    assert r.status_code == 200, r.text
    studies = r.json()["studies"]
    assert [s["case"] for s in studies] == [earlier["id"], later["id"]]
    assert all(s["date_source"] == "study date" for s in studies), studies
    first, second = (date.fromisoformat(s["date"]) for s in studies)
    assert (second - first).days == (date(2024, 6, 1) - date(2024, 1, 15)).days
    assert first != date(2024, 1, 15)  # shifted: the real date is not stored
    # not segmented yet (its result holds only the date): nothing to review
    r = client.post(f"/api/cases/{later['id']}/review", headers=doctor,
                    json={"agrees": True, "mask_ok": True})
    assert r.status_code == 409 and "not segmented yet" in r.json()["error"], r.text
