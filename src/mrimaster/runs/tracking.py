"""MLflow tracking behind a small interface that does nothing when tracking is off."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Tracker:
    """Logs params, per-epoch metrics and artifacts of one run to MLflow.

    Args:
        enabled: When false every method is a no-op.
        tracking_uri: MLflow store (a local ``sqlite:///`` file by default, or a server URI).
        experiment: Experiment name.
        run_name: Name of the MLflow run.
    """

    def __init__(self, enabled: bool, tracking_uri: str, experiment: str, run_name: str) -> None:
        self.enabled = enabled
        self._mlflow: Any = None
        if not enabled:
            return
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            artifacts = None
            if tracking_uri.startswith("sqlite:///"):  # keep artifacts beside the local store
                store = Path(tracking_uri.removeprefix("sqlite:///"))
                store.parent.mkdir(parents=True, exist_ok=True)
                artifacts = (store.parent / "mlartifacts").resolve().as_uri()
            mlflow.create_experiment(experiment, artifact_location=artifacts)
        mlflow.set_experiment(experiment)
        # inside a sweep's parent run, each training is a child run
        self.run = mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None)
        self._mlflow = mlflow
        log.info("MLflow run %s at %s", self.run.info.run_id, tracking_uri)

    def params(self, params: dict[str, Any]) -> None:
        if self._mlflow:
            self._mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self._mlflow:
            self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def artifact(self, path: Path) -> None:
        if self._mlflow and path.exists():
            if path.is_dir():
                self._mlflow.log_artifacts(str(path), artifact_path=path.name)
            else:
                self._mlflow.log_artifact(str(path))

    def model(self, net: Any, input_example: Any) -> None:
        """Log the network with MLflow's PyTorch flavour (as ``model``).

        Args:
            net: The network, in eval mode.
            input_example: A ``(1, 3, S, S)`` float32 array, used to trace the network.
        """
        if self._mlflow:
            import mlflow.pytorch

            mlflow.pytorch.log_model(net, name="model", input_example=input_example)

    def register(self, run_dir: Path, files: list[str], name: str) -> str | None:
        """Put the run's files (MRIMaster's own model file, card, split, calibration) under the
        run's ``mrimaster-model/`` artifacts and register ``runs:/<run>/mrimaster-model`` as a
        new version of ``name`` in the model registry.

        Returns:
            The new version number (``None`` when tracking is off or ``name`` is empty).
        """
        if not self._mlflow or not name:
            return None
        for f in files:
            if (run_dir / f).is_file():
                self._mlflow.log_artifact(str(run_dir / f), artifact_path="mrimaster-model")
        from mlflow.exceptions import MlflowException

        client = self._mlflow.MlflowClient()
        with contextlib.suppress(MlflowException):  # already registered: add a version
            client.create_registered_model(name)
        version = client.create_model_version(
            name, source=f"{self.run.info.artifact_uri}/mrimaster-model",
            run_id=self.run.info.run_id, description=f"mrimaster run {self.run.info.run_name}")
        log.info("registered %s version %s", name, version.version)
        return str(version.version)

    def close(self, status: str = "FINISHED") -> None:
        if self._mlflow:
            self._mlflow.end_run(status=status)
            self._mlflow = None


def register_run(run_dir: Path, name: str, settings: Any) -> str | None:
    """Log a finished run folder's files to a new MLflow run and register them as a version of
    ``name`` (the flows' register step); returns the version."""
    tracker = Tracker(True, settings.tracking_uri, "mrimaster-classification",
                      f"register-{run_dir.name}")
    try:
        return tracker.register(run_dir, ["model.pt", "config.yaml", "split.csv",
                                          "calibration.json", "checks.json", "metrics.json",
                                          "run.json"], name)
    finally:
        tracker.close()
