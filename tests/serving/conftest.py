"""Fixtures of the web-app tests: an app on SQLite and on a real PostgreSQL server, the shipped
models (loaded once), logged-in clients."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mrimaster.serving.accounts import create_user, ensure_admin
from mrimaster.serving.app import create_app
from mrimaster.serving.config import load_serve_config
from mrimaster.serving.context import AppContext, build_context
from mrimaster.serving.models import ServedModels
from mrimaster.settings import load_settings
from mrimaster.storage import repository as repo

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "admin-password-1"
DOCTOR_PASSWORD = "doctor-password-1"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server: the one ``.ci/run`` started (``MRIMASTER_TEST_DATABASE_URL``),
    else one started here with ``.ci/postgres.sh`` (PostgreSQL 15's initdb and pg_ctl)."""
    url = os.environ.get("MRIMASTER_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.fail("PostgreSQL tests need initdb and pg_ctl on PATH (PostgreSQL 15 server "
                    "binaries), or MRIMASTER_TEST_DATABASE_URL")
    folder = Path(tempfile.mkdtemp(prefix="mrimaster-pg-"))
    with socket.socket() as s:  # a free port: several test runs may share the machine
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = subprocess.run([str(ROOT / ".ci" / "postgres.sh"), str(folder), port],
                         capture_output=True, text=True, check=True).stdout
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.split("\n") if line)
    try:
        yield env["MRIMASTER_TEST_DATABASE_URL"]
    finally:
        cmd = ["pg_ctl", "-D", env["MRIMASTER_TEST_PGDATA"], "-m", "immediate", "stop"]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_postgres_database(url: str) -> tuple[str, str]:
    """A new empty database on the server of ``url``: ``(its URL, its name)``."""
    import psycopg

    base, _, _ = url.rpartition("/")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"),
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}", name


def drop_postgres_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"),
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def served_models(data_root: Path) -> ServedModels:
    """The shipped classifier, loaded once for every app test."""
    return ServedModels.load(load_settings())


def serve_env(app_dir: Path, db_url: str, **extra: str) -> dict[str, str]:
    """The server's environment: the admin's password set, and accounts an admin creates
    usable at once (no forced change at the first log-in; test_accounts.py turns it on)."""
    return {**os.environ, "MRIMASTER_APP_DIR": str(app_dir), "MRIMASTER_DATABASE_URL": db_url,
            "MRIMASTER_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MRIMASTER_NEW_USERS_CHANGE_PASSWORD": "0", **extra}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each app test runs on an embedded SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    server = request.getfixturevalue("postgres_url")
    url, name = fresh_postgres_database(server)
    try:
        yield url
    finally:
        drop_postgres_database(server, name)


def make_ctx(tmp_path: Path, db_url: str, models: ServedModels | None, **extra: str
             ) -> AppContext:
    ctx = build_context(load_serve_config(serve_env(tmp_path / "app", db_url, **extra)),
                        load_models=False)
    ctx.models = models
    ensure_admin(ctx)
    with ctx.sessions() as db:
        admin = repo.get_user(db, "admin")
        assert admin is not None
        create_user(db, admin, "doctor", DOCTOR_PASSWORD, "radiologist")
    return ctx


@pytest.fixture
def ctx(tmp_path: Path, db_url: str, served_models: ServedModels) -> Iterator[AppContext]:
    context = make_ctx(tmp_path, db_url, served_models)
    yield context
    context.engine.dispose()


def bearer(client: TestClient, user: str, password: str) -> dict[str, str]:
    r = client.post("/api/auth/token", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture
def client(ctx: AppContext) -> TestClient:
    return TestClient(create_app(ctx))


@pytest.fixture
def doctor(client: TestClient) -> dict[str, str]:
    return bearer(client, "doctor", DOCTOR_PASSWORD)


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    return bearer(client, "admin", ADMIN_PASSWORD)
