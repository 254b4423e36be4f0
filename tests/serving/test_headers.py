"""The security headers of every answer (OWASP ASVS 4.0.3 V14.4, V8.2.1, V14.5) and the API docs
page that works with no internet: pages, API answers, case files and error answers (401, 403,
404, 413, 500) all carry them; patient data is never cached; HSTS behind TLS only.

The app runs on SQLite only here: the headers do not depend on the database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from mrimaster.serving.app import create_app
from mrimaster.serving.context import AppContext
from mrimaster.serving.models import ServedModels
from tests.serving.conftest import DOCTOR_PASSWORD, bearer, make_ctx

SERVING = Path(__file__).resolve().parents[2] / "src" / "mrimaster" / "serving"
CSP_REQUIRED = {"default-src": "'self'", "object-src": "'none'", "base-uri": "'self'",
                "form-action": "'self'", "frame-ancestors": "'none'"}


def open_ctx(tmp_path: Path, models: ServedModels | None, **env: str) -> AppContext:
    return make_ctx(tmp_path, f"sqlite:///{tmp_path / 'app.db'}", models, **env)


@pytest.fixture
def app_ctx(tmp_path: Path, served_models: ServedModels) -> Iterator[AppContext]:
    ctx = open_ctx(tmp_path, served_models)
    yield ctx
    ctx.engine.dispose()


@pytest.fixture
def client(app_ctx: AppContext) -> TestClient:
    app = create_app(app_ctx)

    @app.get("/api/crash-for-test")
    def crash() -> None:
        raise RuntimeError("a bug")

    return TestClient(app, follow_redirects=False, raise_server_exceptions=False)


def csp(response: httpx.Response) -> dict[str, str]:
    """The response's Content-Security-Policy as {directive: its sources}."""
    policies = response.headers.get_list("content-security-policy")
    assert len(policies) == 1, policies
    return {d.split()[0]: " ".join(d.split()[1:]) for d in policies[0].split(";") if d.strip()}


def assert_secure(response: httpx.Response, *, cached: bool = False) -> None:
    """Every security header of :func:`mrimaster.serving.app.security_headers`, once."""
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    policy = csp(response)
    for directive, sources in CSP_REQUIRED.items():
        assert policy.get(directive) == sources, (where, policy)
    # nothing loosens script or style: no inline code, no eval, no other host
    for directive in ("script-src", "style-src", "connect-src", "worker-src", "frame-src"):
        assert directive not in policy, (where, policy)
    assert policy.get("img-src") == "'self' data:", (where, policy)
    assert "unsafe" not in response.headers["content-security-policy"], where
    assert response.headers.get_list("x-frame-options") == ["DENY"], where
    assert response.headers.get_list("x-content-type-options") == ["nosniff"], where
    assert response.headers.get_list("referrer-policy") == ["same-origin"], where
    assert response.headers.get_list("cross-origin-opener-policy") == ["same-origin"], where
    permissions = response.headers["permissions-policy"]
    for feature in ("camera", "microphone", "geolocation", "payment", "usb"):
        assert f"{feature}=()" in permissions, (where, permissions)
    if cached:
        assert "no-store" not in response.headers.get("cache-control", ""), where
    else:
        assert response.headers.get_list("cache-control") == ["no-store"], where
    assert "strict-transport-security" not in response.headers, where


def submit_login(client: TestClient) -> httpx.Response:
    """The doctor logs in through the log-in form (its CSRF token included)."""
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    r = client.post("/login", data={"username": "doctor", "password": DOCTOR_PASSWORD,
                                    "csrf": csrf.group(1)})
    assert r.status_code == 303, r.text
    return r


def log_in_browser(client: TestClient) -> TestClient:
    submit_login(client)
    return client


def upload_slice(client: TestClient, headers: dict[str, str], data_root: Path) -> dict:
    image = sorted((data_root / "sartaj-training" / "glioma_tumor").iterdir())[0]
    r = client.post("/api/cases/2d", files={"file": (image.name, image.read_bytes(),
                                                     "image/jpeg")}, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_headers_on_pages_api_files_and_errors(client: TestClient, data_root: Path) -> None:
    doctor = bearer(client, "doctor", DOCTOR_PASSWORD)
    case = upload_slice(client, doctor, data_root)
    answers = [client.get("/login"), client.get("/"),  # a page and the log-in redirect
               client.get("/api/cases", headers=doctor),
               client.get(f"/api/cases/{case['id']}", headers=doctor),
               client.get(f"/api/cases/{case['id']}/report.pdf", headers=doctor),
               client.get("/api/docs"), client.get("/api/openapi.json"),
               client.get("/api/cases"),  # 401
               client.post("/api/cases/2d", content=b"x"),  # 401 from the upload guard
               client.get("/admin/users", headers=doctor),  # 403
               client.get("/api/cases/999999", headers=doctor),  # 404
               client.get("/no-such-page"),  # 404 of the router
               client.get("/api/crash-for-test")]  # 500 from Starlette's outermost handler
    assert [r.status_code for r in answers] == [200, 303, 200, 200, 200, 200, 200, 401, 401,
                                                403, 404, 404, 500]
    for r in answers:
        assert_secure(r)
    # downloads are attachments, never rendered in the app's origin (ASVS V14.4.2)
    assert answers[4].headers["content-disposition"].startswith("attachment;")
    # logged-in pages: the worklist and the 2D case page
    browser = log_in_browser(client)
    for path in ("/", f"/cases/{case['id']}", "/cases/new"):
        r = browser.get(path)
        assert r.status_code == 200, (path, r.status_code)
        assert_secure(r)


def test_case_files_are_not_cached(client: TestClient, data_root: Path) -> None:
    """A case file must not stay in a shared workstation's browser cache after log-out
    (ASVS V8.2.1): the file route's own ``private, max-age=3600`` is replaced by no-store."""
    doctor = bearer(client, "doctor", DOCTOR_PASSWORD)
    case = upload_slice(client, doctor, data_root)
    assert case["files"], case
    for url in case["files"].values():
        r = client.get(url, headers=doctor)
        assert r.status_code == 200, url
        assert r.headers.get_list("cache-control") == ["no-store"], (url, r.headers)
        assert_secure(r)


def test_over_the_limit_answer_has_the_headers(tmp_path: Path) -> None:
    ctx = open_ctx(tmp_path, None, MRIMASTER_MAX_UPLOAD_MB="0.01")
    try:
        client = TestClient(create_app(ctx))
        doctor = bearer(client, "doctor", DOCTOR_PASSWORD)
        r = client.post("/api/cases/2d", files={"file": ("big.png", b"\0" * 2_000_000)},
                        headers=doctor)
        assert r.status_code == 413
        assert_secure(r)
    finally:
        ctx.engine.dispose()


def test_static_assets_and_health_check_may_be_cached(client: TestClient) -> None:
    """Static assets (no patient data) keep the browser's cache; they still get the rest."""
    for path in ("/static/app.css", "/static/case.js", "/healthz"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert_secure(r, cached=True)


def test_hsts_only_with_secure_cookies(tmp_path: Path) -> None:
    """HSTS (ASVS V14.4.5) when the app runs behind TLS, told by MRIMASTER_COOKIE_SECURE=1; not
    over plain HTTP, where a browser would ignore it anyway and a test set-up would break."""
    ctx = open_ctx(tmp_path, None, MRIMASTER_COOKIE_SECURE="1")
    try:
        app = create_app(ctx)

        @app.get("/api/crash-for-test")
        def crash() -> None:
            raise RuntimeError("a bug")

        client = TestClient(app, base_url="https://testserver", follow_redirects=False,
                            raise_server_exceptions=False)
        answers = [client.get("/login"), client.get("/"), client.get("/api/cases"),
                   client.get("/static/app.css"), client.get("/no-such-page"),
                   client.get("/api/crash-for-test")]
        assert [r.status_code for r in answers] == [200, 303, 401, 200, 404, 500]
        for r in answers:
            assert r.headers.get_list("strict-transport-security") == [
                "max-age=31536000; includeSubDomains"], r.request.url
    finally:
        ctx.engine.dispose()
    assert "strict-transport-security" not in TestClient(create_app(open_ctx(
        tmp_path / "plain", None))).get("/login").headers


def test_api_docs_need_no_other_host(client: TestClient) -> None:
    """The docs page (ASVS V14.2.3 / V14.5: no third-party script on the patient-data origin;
    works offline) names no other host, runs no inline script, and every asset it references
    is served by the app."""
    r = client.get("/api/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    html = r.text
    assert not re.search(r"(?:https?:)?//", html), "the docs page names another host"
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all(re.search(r"\bsrc=", tag) for tag in scripts), scripts
    assert not re.search(r"\son[a-z]+\s*=|\sstyle\s*=", html)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {"/static/vendor/swagger-ui-bundle.js", "/static/vendor/swagger-ui.css",
            "/static/api-docs.js"} <= set(assets), assets
    for url in assets:
        assert not urlsplit(url).netloc, url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    openapi = re.search(r'data-openapi-url="([^"]+)"', html)
    assert openapi and client.get(openapi.group(1)).json()["info"]["title"] == "MRIMaster"
    # the docs stay open to anyone (they document the API; no patient data)
    assert "login" not in r.headers.get("location", "")


def test_pages_and_scripts_need_no_unsafe_inline() -> None:
    """What a strict CSP blocks is nowhere in the templates and the app's own scripts: inline
    <script>, style="..." attributes, on*= event handlers, javascript: URLs; nor does the
    JavaScript write HTML or style attributes (the browser tests run the pages for the rest)."""
    for template in sorted((SERVING / "templates").glob("*.html")):
        text = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag or 'type="application/json"' in tag, (template.name, tag)
        assert not re.search(r"<style\b", text), template.name
        assert not re.search(r"\sstyle\s*=", text), template.name
        assert not re.search(r"\son[a-z]+\s*=", text), template.name
        assert "javascript:" not in text, template.name
    for script in sorted((SERVING / "static").glob("*.js")):
        text = script.read_text()
        for pattern in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                        'setAttribute("style"', "eval(", "new Function", "cssText",
                        "localStorage", "sessionStorage", "indexedDB"):  # ASVS V8.2.2
            assert pattern not in text, (script.name, pattern)


def test_api_docs_without_the_vendored_viewer(client: TestClient, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``npm ci --prefix web`` the docs page says what to run (and still loads
    nothing from another host)."""
    monkeypatch.setattr("mrimaster.serving.app.STATIC", tmp_path / "no-static")
    r = client.get("/api/docs")
    assert r.status_code == 503 and "npm ci --prefix web" in r.text
    assert "<script" not in r.text and not re.search(r"(?:https?:)?//", r.text)
    assert_secure(r)


def test_session_cookie_attributes(client: TestClient) -> None:
    """The session cookie (ASVS V3.4.2, V3.4.3): HttpOnly and SameSite=Lax; over plain HTTP
    without Secure (MRIMASTER_COOKIE_SECURE=1 adds it behind TLS)."""
    r = submit_login(client)
    cookie = next(c for c in r.headers.get_list("set-cookie")
                  if c.startswith("mrimaster_session="))
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "max-age"} <= attributes, cookie
    assert "samesite=lax" in cookie.lower() and "secure" not in attributes, cookie
