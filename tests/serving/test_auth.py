"""Nothing about a case without logging in; admin routes for admins; CSRF; the log-in limit."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mrimaster.serving.accounts import ensure_admin
from mrimaster.serving.app import create_app
from mrimaster.serving.config import load_serve_config
from mrimaster.serving.context import AppContext, build_context
from mrimaster.storage.tables import LoginSession, utcnow
from tests.serving.conftest import DOCTOR_PASSWORD, serve_env

PUBLIC = {("/login", "get"), ("/login", "post"), ("/api/auth/token", "post")}
"""The only routes an anonymous caller may use: the log-in forms and the token endpoint."""


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def routes(client: TestClient) -> list[tuple[str, str]]:
    schema = client.get("/api/openapi.json", headers=client.headers).json()
    return [(path, method) for path, item in schema["paths"].items() for method in item]


def test_every_route_refuses_an_anonymous_caller(client: TestClient,
                                                 admin: dict[str, str]) -> None:
    anonymous = TestClient(client.app, follow_redirects=False)
    all_routes = routes(TestClient(client.app, headers=admin))
    assert len(all_routes) >= 20 and set(all_routes) >= PUBLIC
    for path, method in all_routes:
        if (path, method) in PUBLIC:
            continue
        r = anonymous.request(method.upper(), concrete(path))
        redirected = r.status_code in (302, 303, 307) and r.headers["location"].startswith(
            "/login")
        assert r.status_code in (401, 403) or redirected, (method, path, r.status_code)
    # the schema itself is open, but names no case data; the docs page too
    assert anonymous.get("/api/cases").status_code == 401


def test_a_radiologist_cannot_use_admin_routes(client: TestClient, doctor: dict[str, str],
                                               admin: dict[str, str]) -> None:
    admin_routes = [(p, m) for p, m in routes(TestClient(client.app, headers=admin))
                    if p.startswith(("/admin", "/api/users", "/api/audit"))]
    assert len(admin_routes) >= 6
    for path, method in admin_routes:
        r = client.request(method.upper(), path, headers=doctor,
                           json={"username": "mallory", "password": "x" * 12, "role": "admin"},
                           data=None)
        assert r.status_code == 403, (method, path, r.status_code)
    assert client.get("/api/users", headers=admin).status_code == 200
    made = client.post("/api/users", headers=admin, json={
        "username": "newdoc", "password": "long-enough-1", "role": "radiologist"})
    assert made.status_code == 200 and made.json()["role"] == "radiologist"


def login_page(client: TestClient, user: str, password: str) -> TestClient:
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    client.post("/login", data={"username": user, "password": password,
                                "csrf": csrf.group(1)}, follow_redirects=False)
    return client


def test_cookie_changes_need_the_csrf_token(client: TestClient) -> None:
    browser = login_page(TestClient(client.app, follow_redirects=False), "doctor",
                         DOCTOR_PASSWORD)
    assert browser.get("/").status_code == 200
    page = browser.get("/cases/new").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    forged = browser.post("/api/cases/1/review", json={"agrees": True})
    assert forged.status_code == 403 and "CSRF" in forged.json()["error"]
    assert browser.post("/logout", data={"csrf": "wrong"}).status_code == 403
    assert browser.post("/logout", data={"csrf": token.group(1)}).status_code == 303
    assert browser.get("/").status_code == 303  # logged out: back to the log-in page


def test_login_attempts_are_limited(client: TestClient) -> None:
    for _ in range(5):
        r = client.post("/api/auth/token", json={"username": "doctor", "password": "nope"})
        assert r.status_code == 401
    r = client.post("/api/auth/token", json={"username": "doctor", "password": DOCTOR_PASSWORD})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_one_address_is_limited_whatever_the_names(client: TestClient) -> None:
    for i in range(20):
        r = client.post("/api/auth/token", json={"username": f"user{i}", "password": "nope"})
        assert r.status_code == 401
    r = client.post("/api/auth/token", json={"username": "doctor", "password": DOCTOR_PASSWORD})
    assert r.status_code == 429


@pytest.mark.parametrize("kind", ["api"])
def test_sessions_expire(client: TestClient, ctx: AppContext, kind: str,
                         doctor: dict[str, str]) -> None:
    assert client.get("/api/me", headers=doctor).status_code == 200
    with ctx.sessions() as db:
        for row in db.query(LoginSession).filter_by(kind=kind):
            row.expires_at = utcnow() - timedelta(seconds=1)
        db.commit()
    assert client.get("/api/me", headers=doctor).status_code == 401


def test_first_start_creates_the_admin_with_a_one_time_password(
        tmp_path: Path, db_url: str) -> None:
    env = {k: v for k, v in serve_env(tmp_path / "app", db_url).items()
           if k != "MRIMASTER_ADMIN_PASSWORD"}
    ctx = build_context(load_serve_config(env), load_models=False)
    password = ensure_admin(ctx)
    assert password and len(password) >= 12
    assert ensure_admin(ctx) is None  # only the first start
    client = TestClient(create_app(ctx))
    r = client.post("/api/auth/token", json={"username": "admin", "password": password})
    assert r.status_code == 200
    # one-time: nothing but a password change until it is changed (test_accounts.py)
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    r = client.get("/api/cases", headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "change your password first"
    ctx.engine.dispose()
