"""Where a model reference (``default``, a run folder, a file) points, and model file
fingerprints. No torch needed."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mrimaster.errors import ModelError


def resolve_model_path(ref: str | Path, models_dir: Path, default: str = "default") -> Path:
    """``default`` -> the shipped model ``models_dir/<default>/model.pt``; a run folder -> its
    ``model.pt``; ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> that version from the
    MLflow model registry (downloaded once); else the file itself."""
    if str(ref).startswith("models:/"):
        return registry_model(str(ref))
    if str(ref) == "default":
        path = models_dir / default / "model.pt"
        if not path.is_file():
            raise ModelError(f"the default model is not at {path}",
                             f"set MRIMASTER_MODELS_DIR to the folder holding {default}/model.pt")
        return path
    path = Path(ref)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise ModelError(f"no model at {ref}",
                         "pass a run folder, a model.pt file, or `default`")
    return path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes: ties a record to the exact model file it describes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def refuse_shipped(path: Path, models_dir: Path, allowed: bool = False) -> None:
    """Refuse to write into a shipped model folder unless the caller asked for it explicitly.

    Raises:
        ModelError: ``path`` lies inside ``models_dir`` (the shipped models) and ``allowed`` is
            false.
    """
    try:
        inside = Path(path).resolve().is_relative_to(Path(models_dir).resolve())
    except OSError:
        inside = False
    if inside and not allowed:
        raise ModelError(f"refusing to rewrite the shipped model in {Path(path).parent}",
                         "work on a run folder or a copy, or pass --write-shipped to update "
                         "the shipped model on purpose")


def registry_model(uri: str) -> Path:
    """The ``model.pt`` of a registered model version (``models:/NAME@ALIAS`` or
    ``models:/NAME/VERSION``), downloaded with its files (calibration, card, split) into
    ``<runs dir>/.registry/NAME/VERSION/`` the first time.

    Raises:
        ModelError: unknown name, alias or version; a version without MRIMaster's files.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from mrimaster.settings import load_settings

    settings = load_settings()
    client = mlflow.MlflowClient(settings.tracking_uri)
    spec = uri.removeprefix("models:/")
    try:
        if "@" in spec:
            name, alias = spec.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = spec.rsplit("/", 1)
            version = client.get_model_version(name, number)
        target = settings.runs_dir / ".registry" / name / str(version.version)
        model = target / "model.pt"
        if not model.is_file():
            mlflow.set_tracking_uri(settings.tracking_uri)
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version.version}", dst_path=str(target))
    except (MlflowException, ValueError) as exc:
        raise ModelError(f"cannot get {uri} from the model registry at "
                         f"{settings.tracking_uri} ({exc})",
                         "check the name and alias (mrimaster models registry) and "
                         "MRIMASTER_TRACKING_URI") from exc
    if not model.is_file():
        raise ModelError(f"{uri} has no MRIMaster model files",
                         "register models with `mrimaster train` (tracking on)")
    return model
