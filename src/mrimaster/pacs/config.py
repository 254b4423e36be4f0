"""Where the PACS is and how to log in: :class:`PacsConfig`, read by :func:`pacs_config`.

Settings (read by :func:`pacs_config`, at start-up, never at import):

* ``MRIMASTER_DICOMWEB_URL``: the DICOMweb root, e.g. ``http://pacs:8042/dicom-web``;
* ``MRIMASTER_DICOMWEB_USER`` + ``MRIMASTER_DICOMWEB_PASSWORD``: HTTP basic authentication;
* ``MRIMASTER_DICOMWEB_TOKEN``: a bearer token (instead of basic);
* ``MRIMASTER_DICOMWEB_TIMEOUT`` (seconds, default 30), ``MRIMASTER_DICOMWEB_RETRIES``
  (attempts after the first, default 3).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from mrimaster.pacs.errors import PacsError


@dataclass(frozen=True)
class PacsConfig:
    """Where the PACS is and how to log in.

    Attributes:
        url: DICOMweb root (QIDO, WADO and STOW under it), e.g. ``http://host:8042/dicom-web``.
        user, password: HTTP basic authentication (both or neither).
        token: Bearer token (exclusive with basic).
        timeout_s: Seconds to wait for each answer.
        retries: Further attempts of a failed search or retrieval (backoff 0.5 s, 1 s, 2 s...).
        backoff_s: First wait before a retry.
    """

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^/\s]+", self.url or ""):
            raise PacsError(f"the DICOMweb URL {self.url!r} is not an http(s) URL",
                            "set MRIMASTER_DICOMWEB_URL (or --dicomweb) to e.g. "
                            "http://pacs.example.org:8042/dicom-web")
        if (self.user is None) != (self.password is None):
            raise PacsError("basic authentication needs both a user and a password",
                            "set both MRIMASTER_DICOMWEB_USER and MRIMASTER_DICOMWEB_PASSWORD")
        if self.token and self.user:
            raise PacsError("both a bearer token and a basic-auth user are set",
                            "set MRIMASTER_DICOMWEB_TOKEN or MRIMASTER_DICOMWEB_USER, not both")

    @property
    def auth(self) -> str:
        """``"none"``, ``"basic"`` or ``"bearer"``."""
        return "bearer" if self.token else "basic" if self.user else "none"


def pacs_config(env: Mapping[str, str] | None = None, url: str | None = None) -> PacsConfig:
    """The PACS settings from ``env`` (default ``os.environ``); ``url`` overrides the URL.

    Raises:
        PacsError: no URL set, or inconsistent authentication settings.
    """
    env = os.environ if env is None else env
    url = url or env.get("MRIMASTER_DICOMWEB_URL", "")
    if not url:
        raise PacsError("no PACS configured",
                        "set MRIMASTER_DICOMWEB_URL (e.g. http://pacs:8042/dicom-web) or pass "
                        "--dicomweb URL")
    try:
        timeout = float(env.get("MRIMASTER_DICOMWEB_TIMEOUT", "30"))
        retries = int(env.get("MRIMASTER_DICOMWEB_RETRIES", "3"))
    except ValueError as exc:
        raise PacsError(f"bad DICOMweb timeout or retries setting ({exc})",
                        "MRIMASTER_DICOMWEB_TIMEOUT is seconds, MRIMASTER_DICOMWEB_RETRIES a "
                        "whole number") from None
    return PacsConfig(url.rstrip("/"), env.get("MRIMASTER_DICOMWEB_USER") or None,
                      env.get("MRIMASTER_DICOMWEB_PASSWORD") or None,
                      env.get("MRIMASTER_DICOMWEB_TOKEN") or None, timeout, max(0, retries))
