"""Mask versions: a doctor's corrected mask is saved as a new version beside the AI's, never
over it; compare gives Dice and volumes per region; bad masks and users without review rights
are refused with nothing stored; a server killed mid-save keeps the last version and leaves no
orphan object (a real ``mrimaster serve`` process and SIGKILL)."""

from __future__ import annotations

import gzip
import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from mrimaster.serving import label_maps, masks
from mrimaster.serving.app import create_app
from mrimaster.serving.config import load_serve_config
from mrimaster.serving.context import AppContext, build_context
from mrimaster.storage import repository as repo
from mrimaster.storage.mask_tables import MaskVersion
from mrimaster.storage.tables import AuditEvent
from tests.serving.conftest import (
    ADMIN_PASSWORD,
    DOCTOR_PASSWORD,
    bearer,
    make_ctx,
    serve_env,
)
from tests.serving.server import Server

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 mm3 voxels: 0.008 mL


def nifti(labels: np.ndarray, affine: np.ndarray = AFFINE, gz: bool = True) -> bytes:
    raw = nib.Nifti1Image(labels.astype(np.uint8), affine).to_bytes()
    return gzip.compress(raw) if gz else raw


def ai_labels() -> np.ndarray:
    """8x8x4: edema (2) in x 0-3, core (1) in x 4-5, enhancing (4) in x 6 of rows 0-1, z 0."""
    m = np.zeros((8, 8, 4), dtype=np.uint8)
    m[0:4, 0:2, 0] = 2   # 8 voxels
    m[4:6, 0:2, 0] = 1   # 4 voxels
    m[6, 0:2, 0] = 4     # 2 voxels
    return m


def add_3d_case(ctx: AppContext, labels: np.ndarray, affine: np.ndarray = AFFINE,
                convention: str = "brats2021", image: bytes | None = None,
                files: dict[str, bytes] | None = None,
                result: dict[str, Any] | None = None, status: str = "ai-read") -> int:
    """A 3D case whose segmentation is done: its mask (and image) written through the store
    and the repository, as the job would (no model run); ``files`` more case files (e.g.
    ``uncertainty.nii.gz``), ``result`` more keys of the result (e.g. the trust decision)."""
    with ctx.sessions() as db:
        admin = repo.get_user(db, "admin")
        assert admin is not None
        mask = ctx.store.put_bytes(nifti(labels, affine))
        flair = ctx.store.put_bytes(image if image is not None else nifti(labels * 10, affine))
        vols = label_maps.volumes_ml(labels, float(abs(np.linalg.det(affine[:3, :3]))) / 1000,
                                     convention)
        info = {"volumes_ml": vols, "label_convention": convention, "labels": convention,
                "modalities_used": ["flair"], "modalities_missing": [], "warnings": [],
                **(result or {})}
        stored = {"flair.nii.gz": flair, "mask.nii.gz": mask,
                  **{name: ctx.store.put_bytes(data) for name, data in (files or {}).items()}}
        case = repo.add_case(db, "3d", "p-test", admin, stored, info, status,
                             f"WT {vols['WT']} mL", "seg-test@1")
        db.commit()
        return case.id


@pytest.fixture
def sqlite_ctx(tmp_path: Path) -> Iterator[AppContext]:
    context = make_ctx(tmp_path, f"sqlite:///{tmp_path / 'app.db'}", None)
    yield context
    context.engine.dispose()


@pytest.fixture
def mctx(tmp_path: Path, db_url: str) -> Iterator[AppContext]:
    """The app's context on SQLite and on PostgreSQL (``db_url``; no models: the job is
    stubbed)."""
    context = make_ctx(tmp_path, db_url, None)
    yield context
    context.engine.dispose()


@pytest.fixture
def api(mctx: AppContext) -> TestClient:
    return TestClient(create_app(mctx))


def state(ctx: AppContext) -> tuple[int, list[str], int]:
    """(mask version rows, stored objects, mask-save audit events)."""
    with ctx.sessions() as db:
        n = int(db.scalar(select(func.count()).select_from(MaskVersion)) or 0)
        audits = int(db.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "mask-save")) or 0)
    return n, ctx.store.all_objects(), audits


def test_save_list_compare_review(api: TestClient, mctx: AppContext) -> None:
    doctor = bearer(api, "doctor", DOCTOR_PASSWORD)
    ai = ai_labels()
    case_id = add_3d_case(mctx, ai)
    listed = api.get(f"/api/cases/{case_id}/masks", headers=doctor).json()
    assert [v["number"] for v in listed["versions"]] == [0] and listed["can_edit"]
    # the doctor: edema 2 voxels smaller, enhancing 2 voxels larger (outside the AI's WT)
    edit = ai.copy()
    edit[0, 0:2, 0] = 0
    edit[6, 2:4, 0] = 4
    r = api.post(f"/api/cases/{case_id}/masks?base=0", headers=doctor,
                 content=nifti(edit, gz=False))
    assert r.status_code == 200, r.text
    v1 = r.json()
    assert v1["number"] == 1 and v1["author"] == "doctor" and v1["base_version"] == 0
    # hand-computed: WT ai 14, v1 14, overlap 12 -> 24/28; TC ai 6, v1 8, overlap 6 -> 12/14;
    # ET ai 2, v1 4, overlap 2 -> 4/6
    expected = {"WT": round(24 / 28, 4), "TC": round(12 / 14, 4), "ET": round(4 / 6, 4)}
    assert v1["dice_vs_ai"] == expected
    assert v1["volumes_ml"] == {"WT": 14 * 0.008, "TC": 8 * 0.008, "ET": 4 * 0.008}
    # a second version from version 1: only edema, back to the AI's WT shape
    edit2 = np.where(ai > 0, 2, 0).astype(np.uint8)
    v2 = api.post(f"/api/cases/{case_id}/masks?base=1", headers=doctor,
                  content=nifti(edit2)).json()
    assert v2["number"] == 2 and v2["base_version"] == 1
    listed = api.get(f"/api/cases/{case_id}/masks", headers=doctor).json()
    assert [(v["number"], v["author"]) for v in listed["versions"]] == [
        (0, "AI (seg-test@1)"), (1, "doctor"), (2, "doctor")]
    # every version's file stays as saved; version 0 is the AI's mask, unchanged
    for n, labels in ((0, ai), (1, edit), (2, edit2)):
        got = api.get(f"/api/cases/{case_id}/masks/{n}", headers=doctor)
        assert got.status_code == 200
        img = nib.Nifti1Image.from_bytes(gzip.decompress(got.content))
        assert np.array_equal(np.asarray(img.dataobj), labels)
        assert np.allclose(img.affine, AFFINE) and img.get_data_dtype() == np.uint8
    # compare any two: 1 vs 2: WT 12 overlap of 14 + 14 -> 24/28; TC 0 of 8 + 0 -> 0
    c = api.get(f"/api/cases/{case_id}/masks/compare?a=1&b=2", headers=doctor).json()
    assert c["dice"] == {"WT": round(24 / 28, 4), "TC": 0.0, "ET": 0.0}
    assert c["volumes_ml"]["b"] == {"WT": 14 * 0.008, "TC": 0.0, "ET": 0.0}
    assert c["difference_ml"]["TC"] == pytest.approx(-8 * 0.008)
    c0 = api.get(f"/api/cases/{case_id}/masks/compare?a=0&b=1", headers=doctor).json()
    assert c0["dice"] == expected
    # the reviewed result: version 1; then version 2 takes the mark
    r = api.post(f"/api/cases/{case_id}/masks/1/reviewed", headers=doctor)
    assert r.status_code == 200 and r.json()["reviewed"]
    api.post(f"/api/cases/{case_id}/masks/2/reviewed", headers=doctor)
    listed = api.get(f"/api/cases/{case_id}/masks", headers=doctor).json()
    assert [v["number"] for v in listed["versions"] if v["reviewed"]] == [2]
    assert listed["reviewed"]["number"] == 2
    with mctx.sessions() as db:
        case = repo.get_case(db, case_id)
        assert case is not None
        row = db.scalar(select(MaskVersion).where(MaskVersion.number == 2))
        assert row is not None and masks.reviewed_digest(db, case) == row.digest
        events = [e.detail for e in repo.audit_events(db) if e.action == "mask-save"]
    assert events == ["version 2 by doctor, base 1", "version 1 by doctor, base 0"]
    # a new segmentation replacing the case's mask does not change version 0
    with mctx.sessions() as db:
        case = repo.get_case(db, case_id)
        assert case is not None
        case.files = {**case.files, "mask.nii.gz": mctx.store.put_bytes(nifti(edit2 * 0))}
        db.commit()
    got = api.get(f"/api/cases/{case_id}/masks/0", headers=doctor).content
    assert np.array_equal(np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(got))
                                     .dataobj), ai)


def test_whole_tumour_convention(api: TestClient, mctx: AppContext) -> None:
    doctor = bearer(api, "doctor", DOCTOR_PASSWORD)
    ai = (ai_labels() > 0).astype(np.uint8)
    case_id = add_3d_case(mctx, ai, convention="wt")
    edit = ai.copy()
    edit[7, 0, 0] = 1
    v1 = api.post(f"/api/cases/{case_id}/masks", headers=doctor, content=nifti(edit)).json()
    assert v1["dice_vs_ai"] == {"WT": round(28 / 29, 4), "TC": None, "ET": None}
    before = state(mctx)
    r = api.post(f"/api/cases/{case_id}/masks", headers=doctor, content=nifti(edit * 2))
    assert r.status_code == 422 and "[2]" in r.json()["error"]
    assert state(mctx) == before


def test_bad_masks_are_refused_with_nothing_stored(api: TestClient, mctx: AppContext) -> None:
    doctor = bearer(api, "doctor", DOCTOR_PASSWORD)
    ai = ai_labels()
    case_id = add_3d_case(mctx, ai)
    shifted = AFFINE.copy()
    shifted[0, 3] = 1.0
    bad3 = ai.copy()
    bad3[0, 0, 0] = 3
    bad5 = ai.copy()
    bad5[0, 0, 0] = 5
    before = state(mctx)
    cases: list[tuple[bytes, int, str]] = [
        (nifti(np.zeros((8, 8, 5), np.uint8)), 422, "shape"),
        (nifti(ai, shifted), 422, "affine"),
        (nifti(bad3), 422, "labels [3]"),
        (nifti(bad5, gz=False), 422, "labels [5]"),
        (b"not a nifti at all", 422, "NIfTI"),
        (gzip.compress(b"\0" * 2_000_000), 413, "larger"),
    ]
    for body, status, words in cases:
        r = api.post(f"/api/cases/{case_id}/masks", headers=doctor, content=body)
        assert r.status_code == status, (words, r.text)
        assert words in r.json()["error"], r.json()
        assert r.json().get("hint")
    assert api.post(f"/api/cases/{case_id}/masks?base=7", headers=doctor,
                    content=nifti(ai)).status_code == 404
    assert api.post("/api/cases/999/masks", headers=doctor,
                    content=nifti(ai)).status_code == 404
    assert api.post(f"/api/cases/{case_id}/masks", content=nifti(ai)).status_code == 401
    assert state(mctx) == before


def test_users_without_review_rights_get_403(api: TestClient, mctx: AppContext,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    doctor = bearer(api, "doctor", DOCTOR_PASSWORD)
    admin = bearer(api, "admin", ADMIN_PASSWORD)
    case_id = add_3d_case(mctx, ai_labels())
    before = state(mctx)
    monkeypatch.setattr(masks, "REVIEW_ROLES", ("admin",))  # radiologists may not review
    r = api.post(f"/api/cases/{case_id}/masks", headers=doctor, content=nifti(ai_labels()))
    assert r.status_code == 403 and "role" in r.json()["error"]
    assert api.post(f"/api/cases/{case_id}/masks/0/reviewed", headers=doctor).status_code == 403
    assert not api.get(f"/api/cases/{case_id}/masks", headers=doctor).json()["can_edit"]
    assert state(mctx) == before
    assert api.post(f"/api/cases/{case_id}/masks", headers=admin,
                    content=nifti(ai_labels())).status_code == 200


def test_cookie_session_needs_csrf(sqlite_ctx: AppContext) -> None:
    client = TestClient(create_app(sqlite_ctx))
    case_id = add_3d_case(sqlite_ctx, ai_labels())
    page = client.get("/login")
    token = page.cookies.get("mrimaster_login_csrf")
    client.post("/login", data={"username": "doctor", "password": DOCTOR_PASSWORD,
                                "csrf": token or ""})
    before = state(sqlite_ctx)
    assert client.post(f"/api/cases/{case_id}/masks",
                       content=nifti(ai_labels())).status_code == 403
    assert state(sqlite_ctx) == before


def test_2d_box(sqlite_ctx: AppContext) -> None:
    from PIL import Image

    client = TestClient(create_app(sqlite_ctx))
    doctor = bearer(client, "doctor", DOCTOR_PASSWORD)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(buf, format="PNG")
    with sqlite_ctx.sessions() as db:
        admin = repo.get_user(db, "admin")
        assert admin is not None
        case = repo.add_case(db, "2d", "p", admin, {"image": sqlite_ctx.store.put_bytes(
            buf.getvalue())}, {"status": "ok"}, "ai-read", "glioma", "m@1")
        db.commit()
        case_id = case.id
    r = client.post(f"/api/cases/{case_id}/box", headers=doctor, json={"box": [10, 5, 40, 30]})
    assert r.status_code == 200, r.text
    assert r.json()["box"] == [10, 5, 40, 30] and r.json()["reviewed"]
    for bad in ([10, 5, 90, 30], [40, 5, 10, 30], [1, 2, 3]):
        assert client.post(f"/api/cases/{case_id}/box", headers=doctor,
                           json={"box": bad}).status_code == 422
    for bad_json in ('{"box": [NaN, 0, 5, 5]}', '{"box": [1, 1, Infinity, 5]}'):  # were 500
        r = client.post(f"/api/cases/{case_id}/box", content=bad_json,
                        headers={**doctor, "content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert "finite number" in r.json()["error"] and "input" not in r.text  # no echo
    listed = client.get(f"/api/cases/{case_id}/masks", headers=doctor).json()
    assert [v["box"] for v in listed["versions"]] == [[10, 5, 40, 30]]


# -- SIGKILL during a save, with a real server process ----------------------------------------

def context_beside(server: Server) -> AppContext:
    """A context on the server's database and store (the test writes the stubbed case)."""
    return build_context(load_serve_config(serve_env(server.app_dir, server.db_url)),
                         load_models=False)


def token_of(server: Server, user: str, password: str) -> dict[str, str]:
    r = httpx.post(f"{server.url}/api/auth/token", json={"username": user,
                                                         "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_sigkill_during_a_save_keeps_the_last_version(tmp_path: Path) -> None:
    server = Server(tmp_path / "app", f"sqlite:///{tmp_path / 'app.db'}").start()
    try:
        ctx = context_beside(server)
        big = np.zeros((240, 240, 155), np.uint8)
        big[100:140, 100:140, 60:90] = 2
        big[110:130, 110:130, 70:80] = 1
        case_id = add_3d_case(ctx, big, np.diag([1.0, 1.0, 1.0, 1.0]))
        auth = token_of(server, "admin", ADMIN_PASSWORD)
        edit = big.copy()
        edit[115:125, 115:125, 72:78] = 4
        v1 = httpx.post(f"{server.url}/api/cases/{case_id}/masks", headers=auth,
                        content=nifti(edit, np.eye(4)), timeout=60)
        assert v1.status_code == 200, v1.text
        objects_before = set(ctx.store.all_objects())
        # a large save (raw NIfTI, 8.9 MB) sent slowly; the server dies with it half received
        body = nifti(np.where(edit > 0, 2, 0), np.eye(4), gz=False)
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall((f"POST /api/cases/{case_id}/masks?base=1 HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: {auth['Authorization']}\r\n"
                      "Content-Type: application/octet-stream\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode())
        for k in range(0, len(body) // 2, 256 * 1024):
            sock.sendall(body[k:k + 256 * 1024])
            time.sleep(0.02)
        server.kill()
        sock.close()
        ctx.engine.dispose()
        server = Server(server.app_dir, server.db_url).start()
        ctx = context_beside(server)
        auth = token_of(server, "admin", ADMIN_PASSWORD)
        listed = httpx.get(f"{server.url}/api/cases/{case_id}/masks", headers=auth).json()
        assert [v["number"] for v in listed["versions"]] == [0, 1]
        got = httpx.get(f"{server.url}/api/cases/{case_id}/masks/1", headers=auth)
        assert np.array_equal(np.asarray(nib.Nifti1Image.from_bytes(
            gzip.decompress(got.content)).dataobj), edit)
        # no orphan: every object is one that existed before the killed save
        assert set(ctx.store.all_objects()) == objects_before
        with ctx.sessions() as db:
            referenced = repo.referenced_digests(db)
        assert set(ctx.store.all_objects()) <= referenced
        assert list((server.app_dir / "store" / "tmp").iterdir()) == []
        ctx.engine.dispose()
    finally:
        server.stop()
