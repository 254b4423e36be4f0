"""The training pipeline as a Metaflow flow; each step calls the stage function the CLI calls.

    python -m mrimaster.flows.train_flow run --data DATASET --out FOLDER \\
        [--config configs/default.yaml] [--register-as NAME]

Every step writes into ``--out`` (``audit/``, ``split.csv``, ``run/``, ``evaluation/``) and
keeps its summary as a Metaflow artifact (``Flow('TrainFlow').latest_run``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metaflow import FlowSpec, Parameter, step


class TrainFlow(FlowSpec):
    """data -> audit -> split -> train -> evaluate -> calibrate -> register."""

    data = Parameter("data", help="class-per-folder dataset", required=True)
    out = Parameter("out", help="folder for every step's files", required=True)
    config = Parameter("config", help="training config (YAML)", default="")
    overrides = Parameter("set", help="comma-separated KEY=VALUE overrides", default="")
    register_as = Parameter("register-as", help="MLflow registered model name", default="")

    @step
    def start(self) -> None:
        from mrimaster.settings import load_settings

        self.settings = load_settings()
        Path(self.out).mkdir(parents=True, exist_ok=True)
        self.next(self.audit)

    @step
    def audit(self) -> None:
        from mrimaster.data.audit import run_audit, write_audit

        report = run_audit(Path(self.data), progress=False)
        write_audit(report, Path(self.out) / "audit")
        self.audit_summary: dict[str, Any] = {k: report[k] for k in ("n_images", "classes")
                                              if k in report}
        self.next(self.split)

    @step
    def split(self) -> None:
        from mrimaster.data.splits import SplitConfig, make_split

        table, info = make_split(Path(self.data), SplitConfig(), progress=False)
        self.split_file = str(Path(self.out) / "split.csv")
        table.save(Path(self.split_file))
        self.split_counts = info.get("counts", {})
        self.next(self.train)

    @step
    def train(self) -> None:
        from mrimaster.config import load_config
        from mrimaster.training.config import TrainConfig
        from mrimaster.training.train import run_training

        extra = [o for o in self.overrides.split(",") if o.strip()]
        cfg = load_config(TrainConfig, Path(self.config) if self.config else None, extra,
                          data_dir=Path(self.data), split_file=Path(self.split_file),
                          out_dir=Path(self.out) / "run", calibrate=False, track=False)
        self.run_dir = str(run_training(cfg, self.settings))
        self.next(self.evaluate)

    @step
    def evaluate(self) -> None:
        from mrimaster.evaluation.evaluate import EvaluateConfig, run_evaluation

        metrics = run_evaluation(EvaluateConfig(
            self.run_dir, Path(self.data), Path(self.out) / "evaluation",
            split_file=Path(self.split_file), part="test"), self.settings)
        self.test_macro_f1 = float(metrics["macro_f1"])
        self.test_n = int(metrics["n"])
        self.next(self.calibrate)

    @step
    def calibrate(self) -> None:
        from mrimaster.training.checks import run_checks
        from mrimaster.training.fit_trust import CalibrateConfig, run_calibration

        report = run_calibration(CalibrateConfig(self.run_dir, Path(self.data),
                                                 Path(self.split_file)), self.settings)
        run_checks(Path(self.run_dir), self.settings)
        self.temperature = float(report["temperature"])
        self.next(self.register)

    @step
    def register(self) -> None:
        from mrimaster.runs.tracking import register_run

        self.registered = (register_run(Path(self.run_dir), self.register_as, self.settings)
                           if self.register_as else None)
        self.next(self.end)

    @step
    def end(self) -> None:
        print(f"run {self.run_dir}: test macro F1 {self.test_macro_f1:.4f} on {self.test_n} "
              f"images, temperature {self.temperature:.3f}, registered {self.registered}")


if __name__ == "__main__":
    TrainFlow()
