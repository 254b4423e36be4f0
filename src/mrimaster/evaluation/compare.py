"""``mrimaster compare``: several runs side by side. Their validation curves overlaid
(``curves.png``), a table of their held-out metrics with the config keys that differ between
them (``compare.md``, ``compare.json``). Runs are run folders or MLflow run IDs (whose logged
files are downloaded)."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mrimaster.errors import DataError

log = logging.getLogger(__name__)

CURVES = {"classification": ("val_macro_f1", "validation macro F1"),
          "segmentation": ("val_score", "validation mean Dice")}
HELD_OUT = {"classification": ("test", ("accuracy", "macro_f1", "nll"))}


@dataclass
class RunSummary:
    """What comparing needs of one run.

    Attributes:
        name: Shown name (folder name or MLflow run name).
        kind: ``classification`` or ``segmentation``.
        history: Per-epoch rows (``history.json``).
        held_out: Held-out metrics, flat (``metrics.json``'s test part; the
            cross-validation means for a segmentation CV run).
        config: The resolved config, flattened to ``a.b`` keys.
    """

    name: str
    kind: str
    history: list[dict[str, Any]] = field(default_factory=list)
    held_out: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_run_folder(folder: Path, name: str | None = None) -> RunSummary:
    """A run folder of ``mrimaster train``, ``seg train`` or ``seg cv``.

    Raises:
        DataError: no ``history.json`` / ``cv.json``, or unreadable files.
    """
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text()) if (
            folder / "config.yaml").is_file() else {}
        if (folder / "cv.json").is_file():  # a cross-validation run: its final model's curve
            cv = json.loads((folder / "cv.json").read_text())
            final = folder / "final"
            history = json.loads((final / "history.json").read_text()) if (
                final / "history.json").is_file() else []
            means = {f"cv_{region}_{m}": float(row[m])
                     for region, row in (cv.get("all", {}).get("mean") or {}).items()
                     for m in ("dice", "hd95") if isinstance(row, dict) and m in row}
            return RunSummary(name or folder.name, "segmentation", history, means,
                              _flatten(config or {}))
        history = json.loads((folder / "history.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text()) if (
            folder / "metrics.json").is_file() else {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise DataError(f"{folder}: not a readable run folder ({exc})",
                        "pass run folders written by mrimaster train / seg train / seg cv, "
                        "or MLflow run IDs") from exc
    kind = "classification" if history and "val_macro_f1" in history[0] else "segmentation"
    held: dict[str, float] = {}
    if kind == "classification":
        part, keys = HELD_OUT[kind]
        held = {f"{part}_{k}": float(v) for k, v in (metrics.get(part) or {}).items()
                if isinstance(v, int | float) and k in keys}
    elif (config or {}).get("val_cases") and metrics.get("best_val_score") is not None:
        # a single segmentation run has only its validation cases (none without val_cases)
        held["val_dice_best"] = float(metrics["best_val_score"])
    return RunSummary(name or folder.name, kind, history, held, _flatten(config or {}))


def read_mlflow_run(run_id: str, tracking_uri: str) -> RunSummary:
    """An MLflow run's logged files (``config.yaml``, ``history.json``, ``metrics.json``).

    Raises:
        DataError: unknown run ID, or a run without those files.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    try:
        run = mlflow.get_run(run_id)
        tmp = Path(tempfile.mkdtemp(prefix="mrimaster-compare-"))
        for name in ("config.yaml", "history.json", "metrics.json"):
            try:
                mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name,
                                                    dst_path=str(tmp))
            except (MlflowException, OSError):
                continue
    except MlflowException as exc:
        raise DataError(f"no MLflow run {run_id!r} at {tracking_uri} ({exc.message})",
                        "pass a run folder, or a run ID of this tracking store "
                        "(MRIMASTER_TRACKING_URI)") from exc
    return read_run_folder(tmp, run.info.run_name or run_id)


def load_run(ref: str, tracking_uri: str) -> RunSummary:
    """A run folder if ``ref`` is one, else an MLflow run ID."""
    path = Path(ref)
    if path.is_dir():
        return read_run_folder(path)
    return read_mlflow_run(ref, tracking_uri)


def differing(runs: list[RunSummary]) -> list[str]:
    """Config keys whose values are not the same in every run (missing counts as different)."""
    keys = sorted({k for r in runs for k in r.config})
    return [k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True, default=str)
                                    for r in runs}) > 1]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    text = json.dumps(v, default=str) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "..."


def compare_runs(refs: list[str], out: Path, tracking_uri: str) -> dict[str, Any]:
    """Write ``curves.png``, ``compare.md`` and ``compare.json`` for ``refs`` into ``out``."""
    if len(refs) < 2:
        raise DataError("compare needs at least two runs", "pass two or more runs")
    runs = [load_run(r, tracking_uri) for r in refs]
    out.mkdir(parents=True, exist_ok=True)
    diff = differing(runs)
    metric_keys = sorted({k for r in runs for k in r.held_out})
    lines = ["| run | kind | " + " | ".join(metric_keys) + " |",
             "|---|---|" + "---:|" * len(metric_keys)]
    best = {k: max((r.held_out[k] for r in runs if k in r.held_out), default=None)
            for k in metric_keys}
    for r in runs:
        cells = []
        for k in metric_keys:
            v = r.held_out.get(k)
            text = "-" if v is None else f"{v:.4f}"
            higher_better = "nll" not in k and "hd95" not in k
            cells.append(f"**{text}**" if v is not None and v == best[k] and higher_better
                         else text)
        lines.append(f"| {r.name} | {r.kind} | " + " | ".join(cells) + " |")
    lines += ["", "Config keys that differ (bold: the value differs from the first run's):", ""]
    if diff:
        lines.append("| key | " + " | ".join(r.name for r in runs) + " |")
        lines.append("|---|" + "---|" * len(runs))
        for k in diff:
            first = runs[0].config.get(k)
            vals = [_fmt(r.config.get(k)) if i == 0 or r.config.get(k) == first
                    else f"**{_fmt(r.config.get(k))}**" for i, r in enumerate(runs)]
            lines.append(f"| `{k}` | " + " | ".join(vals) + " |")
    else:
        lines.append("(none: the runs share every config value)")
    (out / "compare.md").write_text("# Runs compared\n\n" + "\n".join(lines) + "\n")
    report = {"runs": [{"name": r.name, "kind": r.kind, "held_out": r.held_out,
                        "epochs": len(r.history)} for r in runs],
              "differing_config": {k: [r.config.get(k) for r in runs] for k in diff}}
    (out / "compare.json").write_text(json.dumps(report, indent=2, default=str))
    plot_curves(runs, out / "curves.png")
    return report


def plot_curves(runs: list[RunSummary], path: Path) -> None:
    """Validation curve (and training loss) per epoch of every run, overlaid."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    ax_val, ax_loss = fig.subplots(1, 2)
    for r in runs:
        key, label = CURVES[r.kind]
        epochs = [row["epoch"] for row in r.history]
        has_val = r.kind == "classification" or bool(r.config.get("val_cases"))
        vals = [row.get(key) if has_val else None for row in r.history]
        if any(v is not None for v in vals):
            ax_val.plot(epochs, [float("nan") if v is None else v for v in vals], marker="o",
                        ms=3, label=r.name)
        ax_loss.plot(epochs, [row.get("train_loss") for row in r.history], label=r.name)
    kinds = {r.kind for r in runs}
    ax_val.set_title(" / ".join(CURVES[k][1] for k in sorted(kinds)))
    ax_loss.set_title("training loss")
    for ax in (ax_val, ax_loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
