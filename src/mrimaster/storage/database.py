"""The database engine and its schema migrations (Alembic), built on demand, never at import.

SQLite (a file under the data root) by default; PostgreSQL given a URL such as
``postgresql+psycopg://user:pw@host/db``. A SQLite file is only readable by the server's
account: created 0600 before SQLite opens it (SQLite gives its ``-wal``, ``-shm`` and
``-journal`` files the database file's mode), and tightened to 0600 when it already exists.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or ``None`` (in memory, or not SQLite)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def secure_sqlite(path: Path) -> list[Path]:
    """Create the SQLite file ``path`` 0600 if it is missing, and make it and its side files
    (``-wal``, ``-shm``, ``-journal``) 0600; returns the files whose mode was tightened."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    changed = []
    for suffix in SQLITE_SIDE_FILES:
        side = Path(f"{path}{suffix}")
        if side.is_file() and stat.S_IMODE(side.stat().st_mode) != 0o600:
            os.chmod(side, 0o600)
            changed.append(side)
    return changed


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL and a busy timeout (several
    threads of one server write to it), and its files are made private
    (:func:`secure_sqlite`)."""
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            secure_sqlite(path)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the package's Alembic migrations."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (``None``: not migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
