"""``mrimaster sweep``: a hyper-parameter search over a training config with Optuna.

Each trial trains the config with sampled values (an MLflow child run of the sweep's run when
tracking), reports its validation macro F1 after every epoch so that Optuna's median rule can
stop hopeless trials early (Optuna's ``MedianPruner``), and is scored by its best validation
macro F1: selection never looks at the test part. The study lives in a database
(``<runs dir>/optuna.db`` by default, or ``--storage``: e.g. a database on the MLflow store's
PostgreSQL server; not the MLflow database itself, as both keep an ``alembic_version`` table),
so an interrupted sweep resumes with the same command. ``best.yaml`` is the config with the
best trial's values.

The search space is a YAML file, one entry per config key::

    lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    batch_size: {type: categorical, choices: [16, 32]}
    label_smoothing: {type: float, low: 0.0, high: 0.2}
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from mrimaster.config import config_to_dict, load_config, save_config
from mrimaster.errors import ConfigError
from mrimaster.settings import Settings
from mrimaster.training.config import TrainConfig

log = logging.getLogger(__name__)
TYPES = ("float", "int", "categorical")


@dataclass
class SweepConfig:
    """Inputs of ``mrimaster sweep``.

    Attributes:
        config: The training config (YAML) the trials start from.
        space: The search space (YAML, see the module's docstring).
        trials: Trials to run now (added to those the study already has).
        out_dir: Sweep folder: trial run folders, ``trials.csv``, ``best.yaml``.
        study: Study name (default: the space file's stem and the config's).
        storage: Optuna storage URL (default: see the module's docstring).
        overrides: ``key=value`` overrides of the training config for every trial.
        seed: Seed of the sampler.
    """

    config: Path
    space: Path
    trials: int
    out_dir: Path
    study: str = ""
    storage: str = ""
    overrides: list[str] | None = None
    seed: int = 0


def load_space(path: Path) -> dict[str, dict[str, Any]]:
    """Read and check a search space.

    Raises:
        ConfigError: unreadable file, unknown config key or parameter type, bad bounds.
    """
    try:
        space = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the search space {path}: {exc}") from exc
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{path} defines no parameter", "see `mrimaster sweep --help`")
    known = set(TrainConfig.__dataclass_fields__)
    for key, spec in space.items():
        if key not in known:
            raise ConfigError(f"{path}: {key!r} is not a training config key")
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in TYPES:
            raise ConfigError(f"{path}: {key} needs type one of {', '.join(TYPES)}")
        if kind == "categorical" and not spec.get("choices"):
            raise ConfigError(f"{path}: {key} needs choices")
        if kind != "categorical" and not spec.get("low", 0) < spec.get("high", 0):
            raise ConfigError(f"{path}: {key} needs low < high")
    return space


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One sampled value per parameter."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            values[key] = trial.suggest_float(key, spec["low"], spec["high"],
                                              log=bool(spec.get("log")))
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(key, spec["low"], spec["high"],
                                            log=bool(spec.get("log")))
        else:
            values[key] = trial.suggest_categorical(key, spec["choices"])
    return values


def default_storage(settings: Settings) -> str:
    """``<runs dir>/optuna.db`` (beside MLflow's default store)."""
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(settings.runs_dir / 'optuna.db').resolve()}"


def run_sweep(cfg: SweepConfig, settings: Settings) -> dict[str, Any]:
    """Run ``cfg.trials`` more trials; write ``trials.csv`` and ``best.yaml``; return the
    best trial's number, value (validation macro F1) and parameters."""
    import optuna

    from mrimaster.runs.tracking import Tracker
    from mrimaster.training.train import run_training

    space = load_space(cfg.space)
    base = load_config(TrainConfig, cfg.config, cfg.overrides or [])
    name = cfg.study or f"{cfg.config.stem}-{cfg.space.stem}"
    study = optuna.create_study(
        study_name=name, storage=cfg.storage or default_storage(settings),
        direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=cfg.seed + len(cfg.out_dir.name)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    parent = Tracker(base.track, settings.tracking_uri, base.experiment, f"sweep-{name}")
    parent.params({"study": name, "space": cfg.space.read_text()[:500],
                   "base_config": str(cfg.config)})

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space)
        run_cfg = replace(base, **values, out_dir=cfg.out_dir / f"trial-{trial.number:03d}",
                          registered_model="", calibrate=False, resume=None)
        best = -1.0

        def report(epoch: int, row: dict[str, Any]) -> None:
            nonlocal best
            best = max(best, float(row["val_macro_f1"]))
            trial.report(best, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation macro F1 {best:.4f} after epoch {epoch}")

        run_training(run_cfg, settings, on_epoch=report)
        return best

    try:
        study.optimize(objective, n_trials=cfg.trials, catch=())
    finally:
        parent.close()
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ConfigError("no trial finished", "look at the trials' logs; widen the space")
    best = study.best_trial
    save_config(replace(base, **best.params, out_dir=None, resume=None),
                cfg.out_dir / "best.yaml")
    with open(cfg.out_dir / "trials.csv", "w", newline="") as f:
        writer = csv.writer(f)
        keys = list(space)
        writer.writerow(["trial", "state", "val_macro_f1", *keys])
        for t in study.trials:
            writer.writerow([t.number, t.state.name.lower(), t.value, *[t.params.get(k)
                                                                        for k in keys]])
    log.info("best trial %d: validation macro F1 %.4f with %s", best.number, best.value,
             best.params)
    return {"study": name, "best_trial": best.number, "best_value": best.value,
            "best_params": best.params, "trials": len(study.trials),
            "config": config_to_dict(base)}
