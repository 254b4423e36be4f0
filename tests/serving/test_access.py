"""The access model (docs/security.md): department-wide. Every radiologist of the installation
reads and reviews every case and exports every reviewed case; only admins see accounts and
the audit log; nobody reads anything without logging in; every read, download and list view
is audited (who and what, never the file's content)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mrimaster.serving.accounts import create_user
from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import AuditEvent
from tests.serving.conftest import bearer
from tests.serving.test_api import real_slice, upload

SECOND_PASSWORD = "second-doctor-password-1"


@pytest.fixture
def second_doctor(client: TestClient, ctx: AppContext) -> dict[str, str]:
    """A second radiologist of the same installation."""
    with ctx.sessions() as db:
        admin = repo.get_user(db, "admin")
        assert admin is not None
        create_user(db, admin, "doctor2", SECOND_PASSWORD, "radiologist")
    return bearer(client, "doctor2", SECOND_PASSWORD)


def events(ctx: AppContext, action: str) -> list[AuditEvent]:
    with ctx.sessions() as db:
        return db.query(AuditEvent).filter_by(action=action).order_by(AuditEvent.id).all()


def test_one_doctor_uploads_another_reads_reviews_and_exports(
        client: TestClient, ctx: AppContext, doctor: dict[str, str],
        second_doctor: dict[str, str], data_root: Path) -> None:
    case = upload(client, doctor, real_slice(data_root))
    listed = client.get("/api/cases", headers=second_doctor).json()
    assert [c["id"] for c in listed["cases"]] == [case["id"]]
    seen = client.get(f"/api/cases/{case['id']}", headers=second_doctor)
    assert seen.status_code == 200 and seen.json()["pseudonym"] == case["pseudonym"]
    image = client.get(case["files"]["image"], headers=second_doctor)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    label = ctx.models.classifier.classes[0]  # type: ignore[union-attr]
    rv = client.post(f"/api/cases/{case['id']}/review", headers=second_doctor,
                     json={"agrees": False, "label": label})
    assert rv.status_code == 200 and rv.json()["reviews"][0]["reviewer"] == "doctor2"
    export = client.get("/api/export/reviewed.zip", headers=second_doctor)
    assert f"{label}/case-{case['id']}.png" in zipfile.ZipFile(
        io.BytesIO(export.content)).namelist()
    # the uploader sees the other doctor's decision and exports it too
    mine = client.get("/api/export/reviewed.zip", headers=doctor)
    assert f"{label}/case-{case['id']}.png" in zipfile.ZipFile(
        io.BytesIO(mine.content)).namelist()
    # every read is audited under the reader's name
    who = {(e.username, e.action) for e in (events(ctx, "view") + events(ctx, "download")
                                            + events(ctx, "list-cases")
                                            + events(ctx, "export-reviewed"))}
    assert {("doctor2", "view"), ("doctor2", "download"), ("doctor2", "list-cases"),
            ("doctor2", "export-reviewed"), ("doctor", "export-reviewed")} <= who


def test_nothing_is_readable_without_logging_in(client: TestClient, doctor: dict[str, str],
                                                data_root: Path) -> None:
    case = upload(client, doctor, real_slice(data_root))
    anonymous = TestClient(client.app, follow_redirects=False)
    for url in ("/api/cases", f"/api/cases/{case['id']}", case["files"]["image"],
                f"/api/cases/{case['id']}/report.pdf", "/api/export/reviewed.zip",
                "/api/users", "/api/audit"):
        assert anonymous.get(url).status_code == 401, url
    for url in ("/", f"/cases/{case['id']}", "/admin/users", "/admin/audit"):
        r = anonymous.get(url)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), url
    r = anonymous.post(f"/api/cases/{case['id']}/review", json={"agrees": True})
    assert r.status_code == 401


def test_accounts_and_audit_log_are_for_admins(client: TestClient, doctor: dict[str, str],
                                               admin: dict[str, str]) -> None:
    for url in ("/api/users", "/api/audit", "/admin/users", "/admin/audit"):
        assert client.get(url, headers=doctor).status_code == 403, url
        assert client.get(url, headers=admin).status_code == 200, url


def test_downloads_and_list_views_are_audited(client: TestClient, ctx: AppContext,
                                              doctor: dict[str, str], admin: dict[str, str],
                                              data_root: Path) -> None:
    case = upload(client, doctor, real_slice(data_root))
    for url in (case["files"]["image"], f"/api/cases/{case['id']}/report.pdf",
                "/api/export/reviewed.zip", "/api/cases?q=Jane+Roe", "/?q=Jane+Roe"):
        assert client.get(url, headers=doctor).status_code == 200, url
    for url in ("/api/users", "/admin/users", "/api/audit", "/admin/audit"):
        assert client.get(url, headers=admin).status_code == 200, url
    download = events(ctx, "download")
    assert [(e.username, e.target, e.detail) for e in download] == [
        ("doctor", f"case {case['id']}", "file image")]
    assert [e.username for e in events(ctx, "report")] == ["doctor"]
    assert [e.username for e in events(ctx, "export-reviewed")] == ["doctor"]
    lists = events(ctx, "list-cases")
    assert [e.target for e in lists] == ["worklist API page 1", "worklist page 1"]
    assert all("Jane" not in e.detail + e.target for e in lists)  # a search is not kept
    assert [e.target for e in events(ctx, "list-users")] == ["users API", "users page"]
    assert [e.target for e in events(ctx, "view-audit")] == ["audit API", "audit page"]
    with ctx.sessions() as db:  # the audit log holds who and what, never a file's bytes
        longest = max(len(e.detail) for e in db.query(AuditEvent))
    assert longest < 500
