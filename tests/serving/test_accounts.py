"""Accounts (issue 20 part 4): one-time passwords, password changes and resets, deactivation,
sessions and the idle timeout; log-in limits (part 6): forwarded addresses, per-account limit,
one limiter for every server process; the 0003 migration."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mrimaster.serving import accounts, security
from mrimaster.serving.accounts import ensure_admin
from mrimaster.serving.app import create_app
from mrimaster.serving.config import load_serve_config, parse_proxies
from mrimaster.serving.context import AppContext, build_context
from mrimaster.serving.deps import forwarded_client
from mrimaster.storage import repository as repo
from mrimaster.storage.database import make_engine, upgrade
from mrimaster.storage.tables import AuditEvent, LoginSession, utcnow
from tests.serving.conftest import ADMIN_PASSWORD, DOCTOR_PASSWORD, make_ctx, serve_env

NEW_PASSWORD = "quiet harbour lanterns 7"


def token(client: TestClient, user: str, password: str, **headers: str) -> dict[str, str]:
    r = client.post("/api/auth/token", json={"username": user, "password": password},
                    headers=headers)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def log_in_page(app: object, user: str, password: str) -> TestClient:
    browser = TestClient(app, follow_redirects=False)  # type: ignore[arg-type]
    csrf = re.search(r'name="csrf" value="([^"]+)"', browser.get("/login").text)
    assert csrf
    r = browser.post("/login", data={"username": user, "password": password,
                                     "csrf": csrf.group(1)})
    assert r.status_code == 303, r.text
    return browser


def page_csrf(browser: TestClient, url: str = "/account") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', browser.get(url).text)
    assert found
    return found.group(1)


def actions(ctx: AppContext, action: str) -> list[AuditEvent]:
    with ctx.sessions() as db:
        return list(db.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))


@pytest.fixture
def forced(tmp_path: Path, db_url: str) -> Iterator[AppContext]:
    """An app where accounts an admin creates must change their password first (the
    default outside the tests), with a proxy trusted on loopback."""
    ctx = make_ctx(tmp_path, db_url, None, MRIMASTER_NEW_USERS_CHANGE_PASSWORD="1",
                   MRIMASTER_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8")
    yield ctx
    ctx.engine.dispose()


# --- one-time passwords -------------------------------------------------------------------

def test_the_generated_admin_password_must_be_changed_first(tmp_path: Path,
                                                            db_url: str) -> None:
    env = {k: v for k, v in serve_env(tmp_path / "app", db_url).items()
           if k != "MRIMASTER_ADMIN_PASSWORD"}
    ctx = build_context(load_serve_config(env), load_models=False)
    password = ensure_admin(ctx)
    assert password
    client = TestClient(create_app(ctx))
    admin = token(client, "admin", password)
    r = client.get("/api/cases", headers=admin)
    assert r.status_code == 403 and r.json()["error"] == "change your password first"
    assert "/api/me/password" in r.json()["hint"]
    assert client.get("/api/users", headers=admin).status_code == 403
    assert client.get("/api/me", headers=admin).status_code == 200  # allowed: who am I
    r = client.post("/api/me/password", headers=admin,
                    json={"current_password": password, "new_password": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    assert client.get("/api/cases", headers=admin).status_code == 200
    assert [e.target for e in actions(ctx, "change-password")] == ["admin"]
    ctx.engine.dispose()


def test_an_account_an_admin_creates_changes_its_password_on_its_page(
        forced: AppContext) -> None:
    client = TestClient(create_app(forced))
    admin = token(client, "admin", ADMIN_PASSWORD)
    assert client.post("/api/users", headers=admin, json={
        "username": "nurse", "password": "given-by-the-admin-1"}).status_code == 200
    browser = log_in_page(client.app, "nurse", "given-by-the-admin-1")
    r = browser.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/account"
    assert browser.get("/cases/new").headers["location"] == "/account"
    account = browser.get("/account")
    assert account.status_code == 200 and "Change your password first" in account.text
    csrf = page_csrf(browser)
    r = browser.post("/account/password", data={"current": "given-by-the-admin-1",
                                                "password": NEW_PASSWORD,
                                                "confirm": "something else entirely",
                                                "csrf": csrf})
    assert r.status_code == 422 and "differ" in r.text
    r = browser.post("/account/password", data={"current": "given-by-the-admin-1",
                                                "password": NEW_PASSWORD,
                                                "confirm": NEW_PASSWORD, "csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/account?changed=1"
    assert browser.get("/").status_code == 200
    # the session cookie's change through the API needs the CSRF header
    assert browser.post("/api/me/password", json={
        "current_password": NEW_PASSWORD, "new_password": "x" * 20}).status_code == 403


# --- changing one's own password ----------------------------------------------------------

@pytest.mark.parametrize(("new", "message"), [
    ("short-pw-1", "too short"),
    ("x" * 129, "too long"),
    ("password1234", "most common"),
    ("Qwertyuiop!!!", "most common"),
    ("doctor-on-call-99", "user name")])
def test_a_weak_new_password_is_refused(client: TestClient, doctor: dict[str, str],
                                        new: str, message: str) -> None:
    r = client.post("/api/me/password", headers=doctor,
                    json={"current_password": DOCTOR_PASSWORD, "new_password": new})
    assert r.status_code == 400 and message in r.json()["error"], r.text
    assert r.json()["hint"]


def test_changing_the_password_needs_the_current_one_and_ends_the_other_sessions(
        client: TestClient, ctx: AppContext, doctor: dict[str, str]) -> None:
    other = token(client, "doctor", DOCTOR_PASSWORD)
    r = client.post("/api/me/password", headers=doctor,
                    json={"current_password": "not-my-password-1", "new_password": NEW_PASSWORD})
    assert r.status_code == 400 and "current password is wrong" in r.json()["error"]
    r = client.post("/api/me/password", headers=doctor,
                    json={"current_password": DOCTOR_PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status_code == 200 and r.json()["other_sessions_ended"] == 1
    assert client.get("/api/me", headers=doctor).status_code == 200  # this one goes on
    assert client.get("/api/me", headers=other).status_code == 401
    assert client.post("/api/auth/token", json={"username": "doctor",
                                                "password": DOCTOR_PASSWORD}).status_code == 401
    token(client, "doctor", NEW_PASSWORD)
    assert [e.detail for e in actions(ctx, "change-password-failed")] == [
        "wrong current password"]


def test_the_policy_uses_the_common_password_list_of_zxcvbn() -> None:
    common = security.common_passwords()
    assert len(common) == 30_000 and {"password", "123456", "qwerty"} <= common
    assert security.password_problem("Summer2026!!!!") is not None  # a common word + digits
    assert security.password_problem("correct horse battery staple") is None
    assert security.password_problem("y" * 128) is None
    assert security.password_problem("ключ от дома 42") is None  # any Unicode (V2.1.4)
    stored = security.hash_password("a" * 100 + "b")  # never truncated (V2.1.3)
    assert not security.verify_password(stored, "a" * 100)
    assert security.verify_password(stored, "a" * 100 + "b")


# --- admin: reset, deactivate --------------------------------------------------------------

def test_an_admin_reset_gives_a_one_time_password_and_ends_the_sessions(
        client: TestClient, ctx: AppContext, admin: dict[str, str],
        doctor: dict[str, str]) -> None:
    r = client.post("/api/users/doctor/reset-password", headers=admin)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    one_time = r.json()["one_time_password"]
    assert len(one_time) >= 12
    assert client.get("/api/me", headers=doctor).status_code == 401
    assert client.post("/api/auth/token", json={"username": "doctor",
                                                "password": DOCTOR_PASSWORD}).status_code == 401
    fresh = token(client, "doctor", one_time)
    assert client.get("/api/cases", headers=fresh).status_code == 403
    assert client.post("/api/me/password", headers=fresh, json={
        "current_password": one_time, "new_password": NEW_PASSWORD}).status_code == 200
    assert client.get("/api/cases", headers=fresh).status_code == 200
    assert client.post("/api/users/admin/reset-password", headers=admin).status_code == 400
    assert [(e.username, e.target) for e in actions(ctx, "reset-password")] == [
        ("admin", "doctor")]


def test_the_users_page_resets_and_shows_the_password_once(client: TestClient,
                                                          admin: dict[str, str]) -> None:
    browser = log_in_page(client.app, "admin", ADMIN_PASSWORD)
    csrf = page_csrf(browser, "/admin/users")
    r = browser.post("/admin/users/doctor/reset-password", data={"csrf": csrf})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    shown = re.search(r'id="one-time">.*<code>([^<]+)</code>', r.text)
    assert shown
    token(client, "doctor", shown.group(1))
    assert 'id="one-time"' not in browser.get("/admin/users").text
    r = browser.post("/admin/users/doctor/deactivate", data={"csrf": csrf})
    assert r.status_code == 303 and "Reactivate" in browser.get("/admin/users").text


def test_deactivation_blocks_log_in_and_ends_sessions_reactivation_restores(
        client: TestClient, ctx: AppContext, admin: dict[str, str],
        doctor: dict[str, str]) -> None:
    r = client.post("/api/users/doctor/deactivate", headers=admin)
    assert r.status_code == 200 and r.json()["active"] is False
    assert client.get("/api/me", headers=doctor).status_code == 401
    assert client.post("/api/auth/token", json={"username": "doctor",
                                                "password": DOCTOR_PASSWORD}).status_code == 401
    assert client.post("/api/users/doctor/reactivate", headers=admin).json()["active"] is True
    token(client, "doctor", DOCTOR_PASSWORD)
    r = client.post("/api/users/admin/deactivate", headers=admin)
    assert r.status_code == 400 and "your own account" in r.json()["error"]
    assert [e.target for e in actions(ctx, "deactivate")] == ["doctor"]
    assert [e.target for e in actions(ctx, "reactivate")] == ["doctor"]


def test_the_last_active_admin_cannot_be_deactivated(client: TestClient, ctx: AppContext,
                                                      admin: dict[str, str]) -> None:
    assert client.post("/api/users", headers=admin, json={
        "username": "admin2", "password": "second-admins-pass-1",
        "role": "admin"}).status_code == 200
    assert client.post("/api/users/admin2/deactivate", headers=admin).status_code == 200
    with ctx.sessions() as db:  # only a stale admin could still ask: the service refuses
        stale = repo.get_user(db, "admin2")
        assert stale is not None
        with pytest.raises(accounts.MRIMasterError, match="last active admin"):
            accounts.set_active(db, stale, "admin", False)


# --- sessions -----------------------------------------------------------------------------

def test_session_list_and_logging_out_everywhere(client: TestClient,
                                                  doctor: dict[str, str]) -> None:
    browser = log_in_page(client.app, "doctor", DOCTOR_PASSWORD)
    second = token(client, "doctor", DOCTOR_PASSWORD)
    rows = client.get("/api/me/sessions", headers=doctor).json()
    assert len(rows) == 3 and sum(r["current"] for r in rows) == 1
    assert sorted(r["kind"] for r in rows) == ["api", "api", "cookie"]
    assert all(set(r) == {"kind", "created_at", "last_seen_at", "expires_at", "current"}
               for r in rows)  # never the secret, its hash or the CSRF token
    page = browser.get("/account").text
    assert "this one" in page and "API token" in page
    r = client.post("/api/me/sessions/logout-all?others=true", headers=doctor)
    assert r.json() == {"ended": 2}
    assert client.get("/api/me", headers=doctor).status_code == 200
    assert client.get("/api/me", headers=second).status_code == 401
    assert browser.get("/").status_code == 303
    browser = log_in_page(client.app, "doctor", DOCTOR_PASSWORD)
    r = browser.post("/account/sessions/logout-all",
                     data={"csrf": page_csrf(browser), "scope": "all"})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/api/me", headers=doctor).status_code == 401


def test_an_idle_session_ends(client: TestClient, ctx: AppContext,
                              doctor: dict[str, str]) -> None:
    def set_last_seen(minutes_ago: float) -> None:
        with ctx.sessions() as db:
            for row in db.scalars(sa.select(LoginSession)):
                row.last_seen_at = utcnow() - timedelta(minutes=minutes_ago)
            db.commit()

    set_last_seen(29)
    assert client.get("/api/me", headers=doctor).status_code == 200
    with ctx.sessions() as db:  # the use was recorded ...
        seen = repo.aware(db.scalars(sa.select(LoginSession.last_seen_at)).one())
    assert utcnow() - seen < timedelta(seconds=30)
    client.get("/api/me", headers=doctor)
    with ctx.sessions() as db:  # ... but not again within the minute
        assert repo.aware(db.scalars(sa.select(LoginSession.last_seen_at)).one()) == seen
    set_last_seen(31)  # MRIMASTER_IDLE_MINUTES: 30
    assert client.get("/api/me", headers=doctor).status_code == 401
    with ctx.sessions() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(LoginSession)) == 0


# --- log-in limits ------------------------------------------------------------------------

def fail(client: TestClient, user: str = "doctor", **headers: str) -> int:
    return client.post("/api/auth/token", json={"username": user, "password": "wrong-one"},
                       headers=headers).status_code


def test_forwarded_for_from_an_untrusted_peer_is_ignored(client: TestClient,
                                                         ctx: AppContext) -> None:
    codes = [fail(client, **{"X-Forwarded-For": f"192.0.2.{i}"}) for i in range(11)]
    assert codes == [401] * 5 + [429] * 6
    assert {e.detail for e in actions(ctx, "login-failed")} == {"from testclient"}


def test_forwarded_for_from_a_trusted_proxy_names_the_client(forced: AppContext) -> None:
    proxy = TestClient(create_app(forced), client=("127.0.0.1", 40000))
    assert [fail(proxy, **{"X-Forwarded-For": "198.51.100.7"}) for _ in range(6)] == [
        401] * 5 + [429]
    # a client's own X-Forwarded-For entry stays left of what the proxy appended
    assert fail(proxy, **{"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}) == 429
    assert fail(proxy, **{"X-Forwarded-For": "198.51.100.8"}) == 401  # another address
    assert "from 198.51.100.7" in {e.detail for e in actions(forced, "login-failed")}


def test_the_right_most_untrusted_address_is_the_client() -> None:
    proxies = parse_proxies("127.0.0.1,10.0.0.0/8,::1")
    assert forwarded_client("192.0.2.1", "1.1.1.1", proxies) == "192.0.2.1"
    assert forwarded_client("127.0.0.1", "1.1.1.1, 2.2.2.2, 10.1.2.3", proxies) == "2.2.2.2"
    assert forwarded_client("::1", "", proxies) == "::1"
    assert forwarded_client("::ffff:127.0.0.1", "1.1.1.1", proxies) == "1.1.1.1"
    assert forwarded_client("127.0.0.1", "10.0.0.1", proxies) == "10.0.0.1"
    with pytest.raises(Exception, match="not an IP address"):
        parse_proxies("proxy.example.org")


def test_one_account_is_limited_whatever_the_addresses(forced: AppContext) -> None:
    proxy = TestClient(create_app(forced), client=("127.0.0.1", 40000))
    codes = [fail(proxy, **{"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(10)]
    assert codes == [401] * 10
    r = proxy.post("/api/auth/token", json={"username": "doctor", "password": DOCTOR_PASSWORD},
                   headers={"X-Forwarded-For": "198.51.100.200"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    token(proxy, "admin", ADMIN_PASSWORD, **{"X-Forwarded-For": "198.51.100.200"})


def test_every_server_process_shares_the_limiter(client: TestClient, ctx: AppContext) -> None:
    other = build_context(ctx.config, load_models=False)  # a second process, same database
    try:
        second = TestClient(create_app(other))
        assert [fail(client) for _ in range(5)] == [401] * 5
        assert fail(second) == 429
    finally:
        other.engine.dispose()


def test_serve_leaves_forwarded_headers_to_the_app(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from mrimaster.cli import serve

    ctx = make_ctx(tmp_path, f"sqlite:///{tmp_path / 'app.db'}", None)
    seen: dict[str, object] = {}

    class Runner:
        def __init__(self, _ctx: AppContext) -> None: ...
        def start(self) -> Runner: return self
        def stop(self) -> None: ...

    monkeypatch.setattr(uvicorn, "run", lambda _app, **kw: seen.update(kw))
    monkeypatch.setattr("mrimaster.serving.config.load_serve_config", lambda: ctx.config)
    monkeypatch.setattr("mrimaster.serving.context.build_context", lambda _config: ctx)
    monkeypatch.setattr("mrimaster.serving.jobs.JobRunner", Runner)
    serve.run(argparse.Namespace(host="127.0.0.1", port=8000), ctx.config.settings)
    assert seen["proxy_headers"] is False
    ctx.engine.dispose()


# --- migration ----------------------------------------------------------------------------

def test_the_migration_keeps_the_accounts_of_a_0002_database(tmp_path: Path,
                                                             db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO users (username, password_hash, role, active, created_at) "
            "VALUES ('old', :h, 'radiologist', :t, :now)"),
            {"h": security.hash_password("older-password-1"), "t": True, "now": utcnow()})
    engine.dispose()
    ctx = build_context(load_serve_config(serve_env(
        tmp_path / "app", db_url, MRIMASTER_NEW_USERS_CHANGE_PASSWORD="1")), load_models=False)
    client = TestClient(create_app(ctx))
    old = token(client, "old", "older-password-1")
    assert client.get("/api/cases", headers=old).status_code == 200  # no forced change
    assert client.get("/api/me/sessions", headers=old).json()[0]["current"] is True
    ctx.engine.dispose()


@pytest.mark.slow
def test_a_real_server_on_loopback_ignores_forwarded_for(tmp_path: Path,
                                                         data_root: Path) -> None:
    """``mrimaster serve`` (uvicorn): a client on 127.0.0.1 cannot pick its address."""
    import httpx

    from tests.serving.server import Server

    server = Server(tmp_path / "app", f"sqlite:///{tmp_path / 'app.db'}").start()
    try:
        with httpx.Client(base_url=server.url) as api:
            codes = [api.post("/api/auth/token", json={"username": "admin", "password": "no"},
                              headers={"X-Forwarded-For": f"192.0.2.{i}"}).status_code
                     for i in range(6)]
        assert codes == [401] * 5 + [429]
    finally:
        server.stop()
