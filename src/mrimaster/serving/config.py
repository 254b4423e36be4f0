"""Settings of the web app, read once when the server starts (never at import).

Environment variables (besides those of :mod:`mrimaster.settings`):
    MRIMASTER_DATABASE_URL: SQLAlchemy URL; default SQLite ``<data root>/app/mrimaster.db``.
        PostgreSQL: ``postgresql+psycopg://user:password@host:5432/dbname``.
    MRIMASTER_APP_DIR: where the app keeps its file store; default ``<data root>/app``.
    MRIMASTER_ADMIN_USER / MRIMASTER_ADMIN_PASSWORD: the admin account the first start creates;
        without a password, a one-time password is printed.
    MRIMASTER_MAX_UPLOAD_MB: largest upload (default 512: a zip of DICOM series).
    MRIMASTER_SESSION_HOURS: how long a log-in lasts at most (default 8).
    MRIMASTER_IDLE_MINUTES: a session unused for longer ends (default 30; ASVS V3.3.2).
    MRIMASTER_NEW_USERS_CHANGE_PASSWORD: ``1`` (default): an account an admin creates must
        change its password at its first log-in (the admin knows it); ``0``: not.
    MRIMASTER_TRUSTED_PROXIES: comma-separated IPs or CIDRs of reverse proxies whose
        ``X-Forwarded-For`` names the client (default none: the header is ignored).
    MRIMASTER_COOKIE_SECURE: ``1`` to send the session cookie over HTTPS only (set it behind TLS).
    MRIMASTER_MODEL / MRIMASTER_SEG_MODEL: classifier and segmenter (default ``default``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mrimaster.errors import ConfigError
from mrimaster.settings import Settings, load_settings


@dataclass(frozen=True)
class ServeConfig:
    """Resolved web-app settings.

    Attributes:
        settings: The project's settings (data root, models folder).
        database_url: SQLAlchemy URL.
        app_dir: Folder of the file store (``store/``).
        admin_user: Name of the first admin account.
        admin_password: Its password (``None``: generate and print a one-time one).
        max_upload_bytes: Largest accepted upload.
        session_hours: Log-in lifetime.
        cookie_secure: Send cookies over HTTPS only.
        model: Classifier reference (``default``, a run or model folder).
        seg_model: Segmenter reference.
        login_attempts: Failed log-ins allowed per user and address in ``login_window_s``.
        login_window_s: The rate-limit window.
        idle_minutes: A session unused for longer ends (> 0).
        new_users_change_password: Accounts an admin creates must change their password first.
        trusted_proxies: Networks of the reverse proxies trusted for ``X-Forwarded-For``.
    """

    settings: Settings
    database_url: str
    app_dir: Path
    admin_user: str = "admin"
    admin_password: str | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    session_hours: float = 8.0
    cookie_secure: bool = False
    model: str = "default"
    seg_model: str = "default"
    login_attempts: int = 5
    login_window_s: float = 300.0
    idle_minutes: float = 30.0
    new_users_change_password: bool = True
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


def parse_proxies(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``MRIMASTER_TRUSTED_PROXIES``: comma-separated IPs or CIDRs (``10.0.0.5, 10.1.0.0/16``).

    Raises:
        ConfigError: an entry is neither.
    """
    out = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigError(f"MRIMASTER_TRUSTED_PROXIES: {item!r} is not an IP address or "
                              "network", "list IPs or CIDRs, comma-separated, e.g. "
                              "127.0.0.1,10.0.0.0/8") from exc
    return tuple(out)


def load_serve_config(env: Mapping[str, str] | None = None) -> ServeConfig:
    """Read the web app's settings from ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env
    settings = load_settings(env)
    app_dir = Path(env.get("MRIMASTER_APP_DIR", str(settings.data_root / "app"))).expanduser()
    url = env.get("MRIMASTER_DATABASE_URL") or f"sqlite:///{(app_dir / 'mrimaster.db').resolve()}"
    try:
        max_mb = float(env.get("MRIMASTER_MAX_UPLOAD_MB", "512"))
        hours = float(env.get("MRIMASTER_SESSION_HOURS", "8"))
        idle = float(env.get("MRIMASTER_IDLE_MINUTES", "30"))
    except ValueError as exc:
        raise ConfigError(f"invalid number in the web app's settings: {exc}",
                          "MRIMASTER_MAX_UPLOAD_MB, MRIMASTER_SESSION_HOURS and "
                          "MRIMASTER_IDLE_MINUTES are numbers") from exc
    if idle <= 0:
        raise ConfigError(f"MRIMASTER_IDLE_MINUTES must be positive, not {idle}",
                          "set minutes, e.g. 30")
    return ServeConfig(settings, url, app_dir, env.get("MRIMASTER_ADMIN_USER", "admin"),
                       env.get("MRIMASTER_ADMIN_PASSWORD") or None, int(max_mb * 1024 * 1024),
                       hours, env.get("MRIMASTER_COOKIE_SECURE", "0") == "1",
                       env.get("MRIMASTER_MODEL", "default"),
                       env.get("MRIMASTER_SEG_MODEL", "default"), idle_minutes=idle,
                       new_users_change_password=env.get(
                           "MRIMASTER_NEW_USERS_CHANGE_PASSWORD", "1") != "0",
                       trusted_proxies=parse_proxies(env.get("MRIMASTER_TRUSTED_PROXIES", "")))
