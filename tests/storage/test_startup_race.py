"""Several processes started at the same moment on an empty database (SQLite and a real
PostgreSQL) and an empty app folder: one schema, one admin, one key, no error. ``mrimaster db
upgrade`` migrates explicitly; a schema newer than the code is refused with a clear message."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from mrimaster.cli.main import main
from mrimaster.errors import ConfigError
from mrimaster.serving.config import load_serve_config
from mrimaster.serving.context import build_context
from mrimaster.storage.database import known_revisions, make_engine
from tests.serving.conftest import serve_env

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 5

START = """
import sys, time
from mrimaster.serving.config import load_serve_config
from mrimaster.serving.context import start_up
config = load_serve_config()
at = float(sys.argv[1])
while time.time() < at:
    pass
ctx, password = start_up(config, load_models=False)
print(ctx.key.hex())
"""

KEY = """
import sys, time
from pathlib import Path
from mrimaster.serving.context import load_key
at = float(sys.argv[2])
while time.time() < at:
    pass
print(load_key(Path(sys.argv[1])).hex())
"""


def together(code: str, args: list[str], env: dict[str, str] | None = None,
             n: int = PROCESSES) -> list[str]:
    """Run ``n`` Python processes that start ``code``'s work at the same moment; their
    outputs (each must succeed)."""
    at = time.time() + 2.5  # all have imported by then
    procs = [subprocess.Popen([sys.executable, "-c", code, *args, str(at)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    return [out.strip() for out, _ in outs]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    from tests.serving.conftest import drop_postgres_database, fresh_postgres_database

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app' / 'app.db'}"
        return
    server = request.getfixturevalue("postgres_url")
    url, name = fresh_postgres_database(server)
    try:
        yield url
    finally:
        drop_postgres_database(server, name)


def test_processes_started_at_once_agree(tmp_path: Path, empty_db: str) -> None:
    env = serve_env(tmp_path / "app", empty_db)
    keys = together(START, [], env)
    assert len(set(keys)) == 1 and len(bytes.fromhex(keys[0])) == 32
    assert (tmp_path / "app" / "secret.key").read_bytes().hex() == keys[0]
    engine = make_engine(empty_db)
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))
                ] == [known_revisions()[1]]
        assert conn.execute(sa.text("SELECT username, role FROM users")).all() == [
            ("admin", "admin")]
    engine.dispose()


def test_key_file_race(tmp_path: Path) -> None:
    for round_ in range(2):
        path = tmp_path / f"round{round_}" / "secret.key"
        keys = together(KEY, [str(path)], n=8)
        assert len(set(keys)) == 1 and len(bytes.fromhex(keys[0])) == 32
        assert path.read_bytes().hex() == keys[0] and path.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temp left


def test_the_key_comes_from_the_settings(tmp_path: Path) -> None:
    key = "ab" * 32
    config = load_serve_config(serve_env(tmp_path / "app", f"sqlite:///{tmp_path / 'a.db'}",
                                         MRIMASTER_SECRET_KEY=key))
    ctx = build_context(config, load_models=False)
    assert ctx.key == bytes.fromhex(key) and not (tmp_path / "app" / "secret.key").exists()
    assert key not in repr(config)
    ctx.engine.dispose()
    mounted = tmp_path / "mounted.key"
    mounted.write_text(key + "\n")
    config = load_serve_config(serve_env(tmp_path / "app", f"sqlite:///{tmp_path / 'a.db'}",
                                         MRIMASTER_SECRET_KEY_FILE=str(mounted)))
    ctx = build_context(config, load_models=False)
    assert ctx.key == bytes.fromhex(key)
    ctx.engine.dispose()
    with pytest.raises(ConfigError, match="too short"):
        load_serve_config(serve_env(tmp_path / "app", "sqlite://", MRIMASTER_SECRET_KEY="abcd"))
    mounted.unlink()
    with pytest.raises(ConfigError, match="missing"):
        build_context(config, load_models=False)


def test_db_upgrade_and_a_newer_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    for name, value in serve_env(tmp_path / "app", url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MRIMASTER_AUTO_MIGRATE", "0")
    with pytest.raises(ConfigError, match="mrimaster db upgrade"):  # not migrated yet
        build_context(load_serve_config(), load_models=False)
    assert main(["db", "upgrade"]) == 0
    assert f"schema at {known_revisions()[1]}" in capsys.readouterr().out
    build_context(load_serve_config(), load_models=False).engine.dispose()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099_future'"))
    engine.dispose()
    monkeypatch.setenv("MRIMASTER_AUTO_MIGRATE", "1")
    with pytest.raises(ConfigError, match="newer than this MRIMaster knows"):
        build_context(load_serve_config(), load_models=False)
    assert main(["db", "upgrade"]) == 2
    assert "newer than this MRIMaster knows" in capsys.readouterr().err
