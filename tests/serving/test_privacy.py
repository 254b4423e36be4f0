"""No side doors for identity: file names, NIfTI text fields, burned-in annotation, oversized
DICOM headers and server paths never reach the database, the store or another user's screen;
refused uploads leave nothing behind."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import inspect, text

from mrimaster.errors import DataError
from mrimaster.serving import seg_jobs, studies
from mrimaster.serving.context import AppContext
from mrimaster.serving.jobs import JobRunner
from mrimaster.storage.tables import AuditEvent
from tests.data.test_dicom_series import series_files, volume_and_affine
from tests.serving.test_api import real_slice
from tests.serving.test_deid import identified_dicom
from tests.serving.test_studies import case_files
from tests.serving.test_uploads import state

LEAKY_NAME = "Doe_Jane_MRN123456_brain"
SECRETS = ("Doe_Jane", "MRN123456", "Doe^Jane")


def database_text(ctx: AppContext) -> str:
    """Every row of every table, as text."""
    out = []
    with ctx.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            out += [repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
    return "\n".join(out)


def slice_pixels(data_root: Path) -> np.ndarray:
    return np.asarray(Image.open(real_slice(data_root, "meningioma_tumor")).convert("L"))


def dicom_bytes(tmp_path: Path, data_root: Path, **tags: Any) -> bytes:
    """A real slice as an identified DICOM with extra ``tags`` set."""
    path = identified_dicom(tmp_path / "slice.dcm", slice_pixels(data_root))
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path)
    return path.read_bytes()


def test_the_file_name_is_never_stored_or_shown(client: TestClient, ctx: AppContext,
                                                doctor: dict[str, str], admin: dict[str, str],
                                                data_root: Path, tmp_path: Path) -> None:
    jpeg = real_slice(data_root).read_bytes()
    dcm = dicom_bytes(tmp_path, data_root)
    for name, data in ((f"{LEAKY_NAME}.jpg", jpeg), (f"{LEAKY_NAME}.dcm", dcm)):
        r = client.post("/api/cases/2d", files={"file": (name, data)}, headers=doctor)
        assert r.status_code == 200, r.text
        shown = [r.text, client.get(f"/api/cases/{r.json()['id']}", headers=admin).text,
                 client.get(f"/cases/{r.json()['id']}", headers=doctor).text,
                 client.get("/api/cases", headers=admin).text, client.get("/", headers=doctor).text,
                 client.get("/api/audit", headers=admin).text]
        for secret in SECRETS[:2]:
            assert not any(secret in s for s in shown), secret
    stored = database_text(ctx)
    assert "upload" in stored and not any(s in stored for s in SECRETS)


def dirty_nifti(src: Path, out: Path) -> nib.Nifti1Image:
    """``src`` with a name in every text field and a DICOM header in an extension."""
    img = nib.load(src)
    dirty = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
    dirty.header["descrip"] = b"Doe^Jane MRN123456"
    dirty.header["aux_file"] = b"MRN123456.txt"
    dirty.header["intent_name"] = b"Doe^Jane"
    dirty.header["db_name"] = b"MRN123456"
    dirty.header.extensions.append(nib.nifti1.Nifti1Extension(
        "comment", b"PatientName=Doe^Jane PatientID=MRN123456"))
    nib.save(dirty, out)
    return dirty


def stored_nifti(client: TestClient, case: dict[str, Any], role: str,
                 headers: dict[str, str]) -> tuple[bytes, nib.Nifti1Image]:
    raw = gzip.decompress(client.get(case["files"][role], headers=headers).content)
    return raw, nib.Nifti1Image.from_bytes(raw)


def test_nifti_uploads_are_rewritten_from_voxels_and_affine(
        client: TestClient, ctx: AppContext, doctor: dict[str, str], data_root: Path,
        tmp_path: Path) -> None:
    files = case_files(data_root)
    dirty = dirty_nifti(files["flair"], tmp_path / "flair.nii.gz")
    r = client.post("/api/cases/3d", headers=doctor, files={
        "flair": (f"{LEAKY_NAME}.nii.gz", (tmp_path / "flair.nii.gz").read_bytes()),
        "t1ce": ("t1ce.nii.gz", files["t1ce"].read_bytes())})
    assert r.status_code == 200, r.text
    raw, img = stored_nifti(client, r.json(), "flair.nii.gz", doctor)
    for secret in (b"Doe^Jane", b"MRN123456"):
        assert secret not in raw
    assert img.header["descrip"].item() == b"" and not img.header.extensions
    assert img.header["aux_file"].item() == b"" and img.header["intent_name"].item() == b""
    assert img.get_data_dtype() == dirty.get_data_dtype()
    assert np.array_equal(np.asarray(img.dataobj), np.asarray(dirty.dataobj))
    assert np.array_equal(img.affine, dirty.affine)
    for code in ("qform_code", "sform_code"):
        assert img.header[code] == dirty.header[code]
    assert not any(s in database_text(ctx) for s in SECRETS)


def dicom_zip(burned: bool = False, rows: int | None = None) -> bytes:
    data, affine = volume_and_affine()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in series_files(data, affine, "AX FLAIR", patient="MRN123456"):
            if burned or rows:
                ds = pydicom.dcmread(io.BytesIO(content))
                if burned:
                    ds.BurnedInAnnotation = "YES"
                if rows:
                    ds.Rows = ds.Columns = rows
                out = io.BytesIO()
                ds.save_as(out)
                content = out.getvalue()
            zf.writestr(name, content)
    return buf.getvalue()


def test_nifti_converted_from_dicom_holds_no_header_text(
        client: TestClient, ctx: AppContext, doctor: dict[str, str]) -> None:
    r = client.post("/api/cases/3d", headers=doctor,
                    files={"dicom_zip": (f"{LEAKY_NAME}.zip", dicom_zip())})
    assert r.status_code == 200, r.text
    raw, img = stored_nifti(client, r.json(), "flair.nii.gz", doctor)
    assert b"MRN123456" not in raw and b"Doe^Jane" not in raw and not img.header.extensions
    assert img.header["descrip"].item() == b""
    data, _ = volume_and_affine()
    assert np.array_equal(np.asarray(img.dataobj), data.astype(np.float32))
    assert not any(s in database_text(ctx) for s in SECRETS)


def test_burned_in_2d_dicom_needs_a_doctors_confirmation(
        client: TestClient, ctx: AppContext, doctor: dict[str, str], admin: dict[str, str],
        data_root: Path, tmp_path: Path) -> None:
    data = dicom_bytes(tmp_path, data_root, BurnedInAnnotation="YES")
    before = state(ctx)
    r = client.post("/api/cases/2d", files={"file": ("slice.dcm", data)}, headers=doctor)
    assert r.status_code == 409, r.text
    body = r.json()
    assert "burned-in" in body["error"] and "confirm_burned_in" in body["hint"]
    import base64

    preview = Image.open(io.BytesIO(base64.b64decode(body["preview_png"])))
    assert preview.size == slice_pixels(data_root).shape[::-1]
    assert state(ctx) == before == (0, [], [])
    r = client.post("/api/cases/2d", files={"file": ("slice.dcm", data)},
                    data={"confirm_burned_in": "true"}, headers=doctor)
    assert r.status_code == 200, r.text
    assert "confirmed by doctor" in r.json()["note"]
    events = client.get("/api/audit", headers=admin).json()
    upload = [e for e in events if e["action"] == "upload-2d"]
    assert upload and "burned-in" in upload[0]["detail"] and "doctor" in upload[0]["detail"]


def test_burned_in_preview_on_the_upload_page(client: TestClient, ctx: AppContext,
                                              data_root: Path, tmp_path: Path) -> None:
    from tests.serving.conftest import DOCTOR_PASSWORD

    def form_token(html: str) -> str:
        return html.split('name="csrf" value="')[1].split('"')[0]

    r = client.post("/login", data={"username": "doctor", "password": DOCTOR_PASSWORD,
                                    "csrf": form_token(client.get("/login").text)},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    csrf = form_token(client.get("/cases/new").text)
    data = dicom_bytes(tmp_path, data_root, SOPClassUID="1.2.840.10008.5.1.4.1.1.7")
    page = client.post("/cases/new", files={"file": ("slice.dcm", data)}, data={"csrf": csrf})
    assert page.status_code == 409  # the preview is decoded by a script: no data: URL (CSP)
    assert 'id="burned-in-preview" data-png="' in page.text and "confirm_burned_in" in page.text
    assert "/static/upload.js" in page.text and "data:image" not in page.text
    assert state(ctx) == (0, [], [])


def test_burned_in_dicom_series_is_refused_by_name(client: TestClient, ctx: AppContext,
                                                   doctor: dict[str, str]) -> None:
    r = client.post("/api/cases/3d", headers=doctor,
                    files={"dicom_zip": ("study.zip", dicom_zip(burned=True))})
    assert r.status_code == 409 and "AX FLAIR" in r.json()["error"], r.text
    assert state(ctx) == (0, [], [])
    r = client.post("/api/cases/3d", headers=doctor, data={"confirm_burned_in": "true"},
                    files={"dicom_zip": ("study.zip", dicom_zip(burned=True))})
    assert r.status_code == 200, r.text
    with ctx.sessions() as db:
        detail = db.query(AuditEvent).filter_by(action="upload-3d").one().detail
    assert "burned-in annotation" in detail and "confirmed by doctor" in detail


def test_oversized_or_unreadable_dicom_is_refused_before_decoding(
        client: TestClient, ctx: AppContext, doctor: dict[str, str], data_root: Path,
        tmp_path: Path) -> None:
    cases = {"huge.dcm": dicom_bytes(tmp_path, data_root, Rows=60000, Columns=60000),
             "frames.dcm": dicom_bytes(tmp_path, data_root, NumberOfFrames=5000),
             "bits.dcm": dicom_bytes(tmp_path, data_root, BitsAllocated=48),
             "cut.dcm": dicom_bytes(tmp_path, data_root)[:300]}
    for name, data in cases.items():
        r = client.post("/api/cases/2d", files={"file": (name, data)}, headers=doctor)
        assert 400 <= r.status_code < 500 and name in r.json()["error"], r.text
        assert "/tmp" not in r.text
        assert state(ctx) == (0, [], [])
    assert "too large" in client.post("/api/cases/2d", files={"file": (
        "huge.dcm", cases["huge.dcm"])}, headers=doctor).json()["error"]
    r = client.post("/api/cases/3d", headers=doctor,
                    files={"dicom_zip": ("study.zip", dicom_zip(rows=40000))})
    assert r.status_code == 422 and "voxels (at most" in r.json()["error"], r.text
    assert state(ctx) == (0, [], [])


@pytest.mark.parametrize("error", ["crash", "data"])
def test_a_failed_job_shows_no_server_path(client: TestClient, ctx: AppContext,
                                           doctor: dict[str, str], admin: dict[str, str],
                                           data_root: Path, monkeypatch: pytest.MonkeyPatch,
                                           error: str) -> None:
    secret_path = f"{ctx.store.root}/tmp/work-1234/case-1/flair.nii.gz"

    def fail(_ctx: AppContext, _job: Any) -> None:
        if error == "crash":
            raise RuntimeError(f"cannot map {secret_path}")
        raise DataError(f"{secret_path}: corrupt or truncated NIfTI file")

    files = case_files(data_root)
    case = client.post("/api/cases/3d", headers=doctor, files={
        m: (p.name, p.read_bytes()) for m, p in files.items()}).json()
    monkeypatch.setattr(seg_jobs, "_segment", fail)
    assert JobRunner(ctx).run_pending() == 1
    job = client.get(f"/api/cases/{case['id']}/job", headers=doctor).json()
    shown = client.get(f"/api/cases/{case['id']}", headers=doctor).json()
    page = client.get(f"/cases/{case['id']}", headers=doctor).text
    assert job["state"] == "failed" and shown["status"] == "failed"
    for text_ in (job["message"], shown["note"], page):
        assert str(ctx.config.app_dir) not in text_ and "work-1234" not in text_
    if error == "crash":
        assert job["message"] == studies.JOB_FAILED and "RuntimeError" not in page
    else:
        assert job["message"] == "flair.nii.gz: corrupt or truncated NIfTI file"
    with ctx.sessions() as db:  # in full for admins: the log and the audit log
        full = db.query(AuditEvent).filter_by(action="segment-failed").one().detail
    assert secret_path in full
    assert any(secret_path in e["detail"] for e in client.get("/api/audit", headers=admin).json())
    assert client.get("/api/audit", headers=doctor).status_code == 403


OUT_OF_RANGE = ("99999999999999999999999", "2147483648", "9223372036854775808", "0", "-1")


@pytest.mark.parametrize("case_id", OUT_OF_RANGE)
def test_out_of_range_ids_are_not_found(client: TestClient, doctor: dict[str, str],
                                        case_id: str) -> None:
    for url in (f"/api/cases/{case_id}", f"/api/cases/{case_id}/job",
                f"/api/cases/{case_id}/files/image", f"/api/cases/{case_id}/report.pdf",
                f"/cases/{case_id}"):
        r = client.get(url, headers=doctor)
        assert r.status_code == 404, (url, r.text)
    r = client.post(f"/api/cases/{case_id}/review", json={"agrees": True}, headers=doctor)
    assert r.status_code == 404, r.text


def modes(paths: list[Path]) -> set[int]:
    return {p.stat().st_mode & 0o777 for p in paths}


def test_database_and_store_are_private(tmp_path: Path) -> None:
    """SQLite only: PostgreSQL keeps its files itself."""
    import os

    from mrimaster.serving.app import create_app
    from tests.serving.conftest import bearer, make_ctx

    url = f"sqlite:///{tmp_path / 'app.db'}"
    ctx = make_ctx(tmp_path, url, None)
    client = TestClient(create_app(ctx))
    admin = bearer(client, "admin", "admin-password-1")  # a write: the -wal file exists
    assert client.get("/api/users", headers=admin).status_code == 200
    db_files = list(tmp_path.glob("app.db*"))
    assert len(db_files) >= 2 and modes(db_files) == {0o600}
    ctx.store.put_bytes(b"a stored object")
    store = ctx.store.root
    folders = [store, *(p for p in store.rglob("*") if p.is_dir())]
    objects = [p for p in (store / "objects").rglob("*") if p.is_file()]
    assert objects and modes(folders) == {0o700} and modes(objects) == {0o600}
    ctx.engine.dispose()
    # what an older version left open is tightened at start-up
    (tmp_path / "app.db-journal").write_bytes(b"")
    for p in [*tmp_path.glob("app.db*"), *objects]:
        os.chmod(p, 0o644)
    for p in folders:
        os.chmod(p, 0o755)
    from mrimaster.serving.config import load_serve_config
    from mrimaster.serving.context import build_context
    from mrimaster.storage.filestore import FileStore
    from tests.serving.conftest import serve_env

    FileStore(store)  # opening the store tightens it (a start never deletes anything)
    assert modes(folders) == {0o700} and modes(objects) == {0o600}
    reopened = build_context(load_serve_config(serve_env(tmp_path / "app", url)),
                             load_models=False)
    assert modes(list(tmp_path.glob("app.db*"))) == {0o600} and modes(folders) == {0o700}
    reopened.engine.dispose()


def test_refusals_never_show_the_servers_folders(tmp_path: Path) -> None:
    """The app-wide refusal handler names no app or temporary folder (an error raised deep in
    a reader may quote the server's own path)."""
    import tempfile

    from mrimaster.serving.cases import hide_folders

    app_dir = tmp_path / "app"
    text = (f"cannot read {app_dir}/store/ab/cdef: bad header; "
            f"{tempfile.gettempdir()}/upload-x.nii is empty; POST /api/auth/token")
    shown = hide_folders(text, app_dir, tempfile.gettempdir())
    assert str(app_dir) not in shown and tempfile.gettempdir() + "/" not in shown
    assert "store/ab/cdef" in shown and "upload-x.nii" in shown
    assert "/api/auth/token" in shown  # API paths in hints are kept


def test_a_file_full_of_identifying_values_leaks_nowhere(
        client: TestClient, ctx: AppContext, doctor: dict[str, str], admin: dict[str, str],
        data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The worst-case DICOM (every PS3.15 Table E.1-1 attribute filled with a unique value, at
    the top level and nested, private tags, overlays, curves, an identifying file meta), with
    a real slice's pixels and an identifying file name, goes through the whole app: upload,
    review, every page and API answer, the stored files, the PDF report, the export, the
    database, the audit log and the server log. No original string or UID appears in any of
    them (strings of 6 or more characters: the builder's unique tokens)."""
    from tests.storage.worst_case import worst_case

    path, originals = worst_case(tmp_path / "worst.dcm")
    ds = pydicom.dcmread(path)
    pixels = slice_pixels(data_root)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    for attr in ("BurnedInAnnotation", "RecognizableVisualFeatures"):  # not the question here
        if attr in ds:
            del ds[attr]
    ds.save_as(path)
    name = f"{LEAKY_NAME}_{sorted(originals.strings)[0]}.dcm"
    caplog.set_level("DEBUG")
    r = client.post("/api/cases/2d", files={"file": (name, path.read_bytes())}, headers=doctor)
    assert r.status_code == 200, r.text
    case = r.json()
    review = client.post(f"/api/cases/{case['id']}/review", json={
        "agrees": False, "label": "meningioma"}, headers=doctor)
    assert review.status_code == 200, review.text

    seen: list[bytes] = [r.content]
    for url in (f"/api/cases/{case['id']}", f"/cases/{case['id']}", "/api/cases", "/",
                f"/api/cases/{case['id']}/report.pdf", "/api/audit"):
        answer = client.get(url, headers=admin)
        assert answer.status_code == 200, url
        seen.append(answer.content)
    # every heatmap layer, those made on first request included (stored then)
    roles = {*case["files"], *(f"cam/{layer['name']}" for layer in case["result"]["layers"])}
    assert len(roles) > len(case["files"])
    for role in sorted(roles):
        answer = client.get(f"/api/cases/{case['id']}/files/{role}", headers=doctor)
        assert answer.status_code == 200, role
        seen.append(answer.content)
    export = client.get("/api/export/reviewed.zip", headers=doctor)
    assert export.status_code == 200
    with zipfile.ZipFile(io.BytesIO(export.content)) as zf:
        seen += [zf.read(n) for n in zf.namelist()] + ["\n".join(zf.namelist()).encode()]
    seen.append(database_text(ctx).encode())
    seen.append(caplog.text.encode())
    stored = pydicom.dcmread(io.BytesIO(client.get(
        f"/api/cases/{case['id']}/files/dicom", headers=doctor).content))
    assert stored.PatientIdentityRemoved == "YES" and stored.PatientID.startswith("P-")

    everything = b"\n".join(seen)
    assert everything.count(stored.PatientID.encode()) > 3  # the search sees what is shown
    secrets = [s for s in originals.strings if len(s) >= 6] + sorted(originals.uids)
    secrets += [LEAKY_NAME, "MRN123456"]
    leaked = [s for s in secrets if s.encode() in everything]
    assert not leaked, leaked[:10]
