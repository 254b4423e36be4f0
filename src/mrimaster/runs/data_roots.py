"""Where a run's dataset lies: a path as given, or a name under the configured data root."""

from __future__ import annotations

from pathlib import Path

from mrimaster.settings import Settings


def under_root(path: Path, settings: Settings) -> Path:
    """``path`` as given when absolute or existing, else under the data root."""
    return path if path.is_absolute() or path.exists() else settings.data_root / path


def dataset_dir(value: Path | str | None, settings: Settings,
                default: str = "sartaj-training") -> Path:
    """The dataset folder a config names: an existing or absolute path as given, else a name
    under the data root (how run configs store it); ``None`` -> ``default`` under the root."""
    return under_root(Path(value), settings) if value else settings.data_root / default
