"""Everything a request needs, built once when a process starts: settings, database, object
store, secret key, models and the log-in limiter.

Several processes may start at once on one database and one store (``serve`` replicas and
``worker`` processes on several hosts): a start migrates the schema and creates the first admin
under the database's start-up lock, and it never deletes or re-queues anything another process
may be using (work files and unreferenced objects go with ``mrimaster cleanup``; jobs of a dead
worker are taken over when their lease expires).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mrimaster.serving.config import ServeConfig, parse_key
from mrimaster.serving.security import LoginLimiter
from mrimaster.storage.database import (
    check_schema,
    make_engine,
    migrate,
    session_factory,
    startup_lock,
)
from mrimaster.storage.objectstore import ObjectStore
from mrimaster.storage.private_files import private_dir
from mrimaster.storage.store_url import open_store

if TYPE_CHECKING:
    from mrimaster.serving.models import ServedModels

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    """The app's long-lived state (one per server or worker process)."""

    config: ServeConfig
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    key: bytes
    models: ServedModels | None
    limiter: LoginLimiter
    infer_lock: threading.Lock = field(default_factory=threading.Lock)
    seg_lock: threading.Lock = field(default_factory=threading.Lock)

    def models_or_fail(self) -> ServedModels:
        from mrimaster.errors import ModelError

        if self.models is None:
            raise ModelError("this server was started without models", "restart it with models")
        return self.models


def load_key(path: Path) -> bytes:
    """The bytes of the key file ``path``; when it is missing, 32 random bytes are written to it
    (mode 0600) first.

    Safe when several processes start at once: each writes its own temporary file and links it
    to ``path`` (``os.link`` fails when ``path`` exists); the losers read the winner's key, which
    was complete and on disk before it was linked. So all agree on one key, never an empty one.
    """
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                log.debug("%s: another process created it first", path.name)
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes()


def server_key(config: ServeConfig) -> bytes:
    """The server key (sessions, pseudonyms, UIDs): ``MRIMASTER_SECRET_KEY``, else the file
    ``MRIMASTER_SECRET_KEY_FILE``, else ``<app dir>/secret.key`` (created once by
    :func:`load_key`).

    Raises:
        ConfigError: the key is shorter than 32 bytes, or ``MRIMASTER_SECRET_KEY_FILE`` names a
            missing file (a mounted secret that is missing must not silently become a new key).
    """
    from mrimaster.errors import ConfigError

    if config.secret_key is not None:
        return config.secret_key
    if config.secret_key_file is not None:
        if not config.secret_key_file.is_file():
            raise ConfigError(f"MRIMASTER_SECRET_KEY_FILE {config.secret_key_file} is missing",
                              "mount the deployment's key file there, or unset it")
        return parse_key(config.secret_key_file.read_bytes(), "MRIMASTER_SECRET_KEY_FILE")
    return parse_key(load_key(config.key_path), str(config.key_path.name))


def build_context(config: ServeConfig, load_models: bool = True) -> AppContext:
    """Open the database (migrated to the latest schema under the start-up lock, or checked
    when ``config.auto_migrate`` is off), the object store and the models.

    Raises:
        ConfigError: the schema is newer than this version knows (or not current while
            auto-migration is off); the server key is invalid.
    """
    private_dir(config.app_dir)  # 0700: the key, database and work files are nobody else's
    engine = make_engine(config.database_url)
    if config.auto_migrate:
        migrate(engine)
    else:
        check_schema(engine, migrate=False)
    sessions = session_factory(engine)
    store = open_store(config.store_url, config.app_dir / "store", config.s3_endpoint_url)
    models = None
    if load_models:
        from mrimaster.serving.models import ServedModels

        models = ServedModels.load(config.settings, config.model, config.seg_model)
    # the limiter keeps its failures in the database: every server process shares them
    return AppContext(config, engine, sessions, store, server_key(config), models,
                      LoginLimiter(config.login_attempts, config.login_window_s))


def create_first_admin(ctx: AppContext) -> str | None:
    """The first admin account, created under the start-up lock (one admin however many
    processes start at once); returns its one-time password when one was generated."""
    from mrimaster.serving.accounts import ensure_admin

    with startup_lock(ctx.engine):
        return ensure_admin(ctx)


def start_up(config: ServeConfig, load_models: bool = True) -> tuple[AppContext, str | None]:
    """What a ``serve`` or ``worker`` process does first: :func:`build_context`, then
    :func:`create_first_admin`."""
    ctx = build_context(config, load_models)
    return ctx, create_first_admin(ctx)
