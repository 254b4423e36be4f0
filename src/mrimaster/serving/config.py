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

Several processes (see docs/scaling.md):
    MRIMASTER_STORE_URL: where the files are: a local folder (default ``<app dir>/store``) or
        ``s3://bucket/prefix`` (an S3-compatible bucket; server-side encryption AES256).
    MRIMASTER_S3_ENDPOINT_URL: another S3-compatible endpoint (MinIO, moto), else AWS.
    MRIMASTER_SECRET_KEY: the server key (sessions, patient pseudonyms) as 64 hex characters;
        or MRIMASTER_SECRET_KEY_FILE: a file holding it (hex text or 32+ raw bytes). Neither
        set: ``<app dir>/secret.key``, created once. Every process must have the same key.
    MRIMASTER_JOB_LEASE_S: a worker's lease on a running job (default 30 s, renewed every
        third of it); a job whose worker died is taken over once its lease expires.
    MRIMASTER_JOB_MAX_ATTEMPTS: how many workers may start a job before it fails (default 3).
    MRIMASTER_JOB_TIMEOUT_S: the longest a job may run (default 1800 s): a worker stops
        renewing the lease of a job that runs longer (hung), so it is taken over or failed.
    MRIMASTER_AUTO_MIGRATE: ``1`` (default): each start migrates the schema (under a lock);
        ``0``: refuse a schema that is not current (run ``mrimaster db upgrade``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
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
        store_url: The object store (``""``: the folder ``app_dir/store``; ``s3://...``).
        s3_endpoint_url: Another S3-compatible endpoint, or ``None`` for AWS.
        secret_key: The server key from the settings, or ``None`` (see ``secret_key_file``).
        secret_key_file: The file of the server key (``None``: ``app_dir/secret.key``).
        job_lease_s: A worker's lease on a running job, in seconds.
        job_max_attempts: Workers that may start a job before it is marked failed.
        job_timeout_s: The longest a job runs before its worker gives its lease up.
        auto_migrate: Migrate the schema at start-up (else refuse one not current).
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
    store_url: str = ""
    s3_endpoint_url: str | None = None
    secret_key: bytes | None = field(default=None, repr=False)
    secret_key_file: Path | None = None
    job_lease_s: float = 30.0
    job_max_attempts: int = 3
    job_timeout_s: float = 1800.0
    auto_migrate: bool = True

    @property
    def key_path(self) -> Path:
        """The server key's file (when the key is not given in the settings)."""
        return self.secret_key_file or self.app_dir / "secret.key"


MIN_KEY_BYTES = 32


def parse_key(value: bytes, source: str) -> bytes:
    """A server key from ``value``: hex text (64+ characters, surrounding space ignored) or
    32+ raw bytes (the ``secret.key`` the app creates).

    Raises:
        ConfigError: shorter than 32 bytes.
    """
    stripped = value.strip()
    try:
        key = bytes.fromhex(stripped.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = value
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"the server key from {source} is too short ({len(key)} bytes)",
                          "use 32 random bytes, e.g. python -c 'import secrets; "
                          "print(secrets.token_hex(32))'")
    return key


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
    try:
        lease = float(env.get("MRIMASTER_JOB_LEASE_S", "30"))
        attempts = int(env.get("MRIMASTER_JOB_MAX_ATTEMPTS", "3"))
        timeout = float(env.get("MRIMASTER_JOB_TIMEOUT_S", "1800"))
    except ValueError as exc:
        raise ConfigError(f"invalid number in the job settings: {exc}",
                          "MRIMASTER_JOB_LEASE_S and MRIMASTER_JOB_TIMEOUT_S are seconds, "
                          "MRIMASTER_JOB_MAX_ATTEMPTS a whole number") from exc
    if lease <= 0 or attempts < 1 or timeout <= lease:
        raise ConfigError(f"MRIMASTER_JOB_LEASE_S ({lease}) must be positive, "
                          f"MRIMASTER_JOB_MAX_ATTEMPTS ({attempts}) at least 1 and "
                          f"MRIMASTER_JOB_TIMEOUT_S ({timeout}) longer than the lease",
                          "e.g. 30, 3 and 1800")
    key_text = env.get("MRIMASTER_SECRET_KEY", "")
    key = parse_key(key_text.encode(), "MRIMASTER_SECRET_KEY") if key_text else None
    key_file = env.get("MRIMASTER_SECRET_KEY_FILE", "")
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
                       trusted_proxies=parse_proxies(env.get("MRIMASTER_TRUSTED_PROXIES", "")),
                       store_url=env.get("MRIMASTER_STORE_URL", ""),
                       s3_endpoint_url=env.get("MRIMASTER_S3_ENDPOINT_URL") or None,
                       secret_key=key,
                       secret_key_file=Path(key_file).expanduser() if key_file else None,
                       job_lease_s=lease, job_max_attempts=attempts, job_timeout_s=timeout,
                       auto_migrate=env.get("MRIMASTER_AUTO_MIGRATE", "1") != "0")
