"""The database engine and its schema migrations (Alembic), built on demand, never at import.

SQLite (a file under the data root) by default; PostgreSQL given a URL such as
``postgresql+psycopg://user:pw@host/db``. A SQLite file is only readable by the server's
account: created 0600 before SQLite opens it (SQLite gives its ``-wal``, ``-shm`` and
``-journal`` files the database file's mode), and tightened to 0600 when it already exists.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from mrimaster.errors import ConfigError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
STARTUP_LOCK_ID = 0x6D72_696D  # "mrim": the PostgreSQL advisory lock of start-up work


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


@contextmanager
def startup_lock(engine: Engine) -> Iterator[None]:
    """Hold the database's start-up lock: one process at a time migrates the schema and creates
    the first admin, however many start at once.

    PostgreSQL: a session advisory lock (``pg_advisory_lock``) on a connection of its own.
    SQLite: an exclusive ``flock`` on ``<database>.lock`` beside the file (the processes that
    share an SQLite file share its folder); an in-memory database needs none.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": STARTUP_LOCK_ID})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": STARTUP_LOCK_ID})
                conn.commit()
        return
    path = sqlite_path(str(engine.url)) if engine.dialect.name == "sqlite" else None
    if path is None:
        yield
        return
    import fcntl

    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)  # like the database's own files (an existing one is tightened)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def known_revisions() -> tuple[set[str], str]:
    """Every revision of the package's migrations, and the head."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    assert head is not None
    return {r.revision for r in script.walk_revisions()}, head


def check_schema(engine: Engine, migrate: bool = True) -> str | None:
    """The database's revision, refused when this version cannot run on it.

    Raises:
        ConfigError: the schema is newer than this version knows (a newer MRIMaster migrated
            it), or older than it needs while ``migrate`` is off.
    """
    current = current_revision(engine)
    known, head = known_revisions()
    if current is not None and current not in known:
        raise ConfigError(
            f"the database's schema (revision {current}) is newer than this MRIMaster knows "
            f"(up to {head}): a newer version migrated it",
            "run the newer MRIMaster (every process of a deployment must be upgraded "
            "together), or point MRIMASTER_DATABASE_URL at another database")
    if not migrate and current != head:
        raise ConfigError(
            f"the database's schema is at {current or 'nothing'}, this MRIMaster needs {head}",
            "run `mrimaster db upgrade` once (or start with MRIMASTER_AUTO_MIGRATE=1)")
    return current


def migrate(engine: Engine) -> str:
    """Check the schema (:func:`check_schema`) and bring it to the head under the start-up
    lock (safe when several processes start at once); returns the head."""
    with startup_lock(engine):
        check_schema(engine)
        upgrade(engine)
    return known_revisions()[1]
