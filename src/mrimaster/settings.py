"""Process-wide settings, read once at start-up from the environment (never at import).

Environment variables:
    MRIMASTER_DATA_ROOT: folder holding datasets (e.g. ``sartaj-training/``). Default
        ``~/.mrimaster/data``.
    MRIMASTER_RUNS_DIR: where run folders are written. Default ``./runs``.
    MRIMASTER_MODELS_DIR: folder of shipped models (``default/model.pt``). Default: the
        package's ``shipped/`` folder, which the wheel carries (in the repository, a link to
        ``models/``).
    MLFLOW_TRACKING_URI / MRIMASTER_TRACKING_URI: MLflow store; default a local SQLite store
        ``sqlite:///<runs dir>/mlflow.db``.
    MRIMASTER_CACHE_DIR: what is worth keeping between runs on this machine (the results of
        each model variant's check on this CPU). Default ``$XDG_CACHE_HOME/mrimaster`` or
        ``~/.cache/mrimaster``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mrimaster.errors import ConfigError

SHIPPED_MODELS = Path(__file__).resolve().parent / "shipped"


@dataclass(frozen=True)
class Settings:
    """Resolved settings.

    Attributes:
        data_root: Folder holding datasets.
        runs_dir: Default parent folder of run folders.
        models_dir: Folder of shipped models.
        tracking_uri: MLflow tracking URI.
        cache_dir: Per-machine cache (``None``: nothing cached).
        check_brain_mri: Run the 3D brain-MRI check before segmenting
            (:mod:`mrimaster.trust.volume_check`); off only for volumes known to be brain MRI
            that it refuses, or synthetic test volumes (every result then says so).
    """

    data_root: Path
    runs_dir: Path
    models_dir: Path
    tracking_uri: str
    cache_dir: Path | None = None
    check_brain_mri: bool = True


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    data_root = Path(env.get("MRIMASTER_DATA_ROOT", "~/.mrimaster/data")).expanduser()
    runs_dir = Path(env.get("MRIMASTER_RUNS_DIR", "runs")).expanduser()
    models_dir = Path(env.get("MRIMASTER_MODELS_DIR", str(SHIPPED_MODELS))).expanduser()
    tracking_uri = env.get("MRIMASTER_TRACKING_URI") or env.get("MLFLOW_TRACKING_URI") or ""
    if not tracking_uri:
        tracking_uri = f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}"
    cache_home = Path(env.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    cache_dir = Path(env.get("MRIMASTER_CACHE_DIR") or cache_home / "mrimaster").expanduser()
    check = env.get("MRIMASTER_CHECK_BRAIN_MRI", "on").strip().lower()
    if check not in ("on", "off"):
        raise ConfigError(f"MRIMASTER_CHECK_BRAIN_MRI is {check!r}", "set it to on or off")
    return Settings(data_root, runs_dir, models_dir, tracking_uri, cache_dir, check == "on")
