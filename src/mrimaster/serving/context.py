"""Everything a request needs, built once when the server starts: settings, database, file
store, secret key, models and the log-in limiter."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mrimaster.serving.config import ServeConfig
from mrimaster.serving.models import ServedModels
from mrimaster.serving.security import LoginLimiter
from mrimaster.storage import repository as repo
from mrimaster.storage.database import make_engine, session_factory, upgrade
from mrimaster.storage.filestore import FileStore, private_dir

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    """The app's long-lived state (one per server process)."""

    config: ServeConfig
    engine: Engine
    sessions: sessionmaker[Session]
    store: FileStore
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
    """The server's secret key (pseudonyms, UIDs): created once (mode 0600), then reused."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        os.replace(tmp, path)
    return path.read_bytes()


def build_context(config: ServeConfig, load_models: bool = True) -> AppContext:
    """Open the database (migrated to the latest schema), the file store (swept of temporary
    files and of objects no case refers to: what an interrupted upload left) and the models."""
    private_dir(config.app_dir)  # 0700: the key, database and store are nobody else's
    engine = make_engine(config.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    store = FileStore(config.app_dir / "store")
    with sessions() as db:
        requeued, failed = repo.recover_jobs(db)
        removed = store.sweep(repo.referenced_digests(db))
    if removed:
        log.info("file store: removed %d unfinished or unreferenced files", removed)
    if requeued or failed:
        log.info("jobs interrupted by the last stop: %d resumed, %d marked failed", requeued,
                 failed)
    models = (ServedModels.load(config.settings, config.model, config.seg_model)
              if load_models else None)
    # the limiter keeps its failures in the database: every server process shares them
    return AppContext(config, engine, sessions, store, load_key(config.app_dir / "secret.key"),
                      models, LoginLimiter(config.login_attempts, config.login_window_s))
