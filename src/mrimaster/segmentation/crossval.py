"""``mrimaster seg cv``: k-fold cross-validation of a segmentation recipe, by patient.

Every case of the recipe's ``train_cases`` is held out exactly once: fold ``k`` trains the
recipe (its own run folder, ``fold_k/``) on the other cases and segments its held-out cases
with every modality they have, and again from FLAIR alone. The post-processing is then chosen
per region on these predictions (:mod:`mrimaster.segmentation.postprocess`), the table is
written (``cv.json``, ``cv.md``, ``cv.png``), and, unless told not to, the recipe is trained
once more on every case (``final/``) and given the chosen post-processing: that is the model
to ship. Folds whose run folder already holds a finished model are not trained again, and a
table that scored the same fold models on the same grid and data (their SHA-256 in
``cv.json``; :mod:`mrimaster.segmentation.cv_store`) is not computed again, so an interrupted
run resumes. ``only`` trains one fold (or the final model) and stops: several processes can
then train the folds side by side (on a GPU, say), and a last run without it
finds them finished, scores them and writes the tables.

Folds are assigned round-robin over the cases grouped by source (their first path part), so
each fold mixes sources; cases are patients here (the shared cases are 14 distinct patients).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mrimaster.atomic import write_whole
from mrimaster.errors import ConfigError, DataError
from mrimaster.provenance import data_fingerprint
from mrimaster.runs.data_roots import dataset_dir
from mrimaster.segmentation.case_trust import (
    CaseTrustRule,
    TrustRow,
    fit_and_report,
    save_rule,
    trust_markdown,
)
from mrimaster.segmentation.cases import Case, find_case
from mrimaster.segmentation.checkpoint import recipe_differences
from mrimaster.segmentation.cv_store import (
    fold_fingerprints,
    record_grid,
    scored_earlier,
)
from mrimaster.segmentation.evaluate import score_prediction, scored_regions
from mrimaster.segmentation.figures import plot_cross_validation
from mrimaster.segmentation.infer import case_subset, plan_inputs, prepare_inputs
from mrimaster.segmentation.metrics import dice, mean_scores
from mrimaster.segmentation.passes import run_passes
from mrimaster.segmentation.postprocess import choose_postprocessing, clean_regions, describe
from mrimaster.segmentation.train import SegTrainConfig, run_seg_training
from mrimaster.settings import Settings

log = logging.getLogger(__name__)

SETTINGS = ("all", "flair")
"""What the tables report: every modality each case has (as the shipped pipeline uses them),
FLAIR alone."""

DROPPABLE = ("t1", "t2")
"""Modalities that cross-validation may decide to leave out at inference (T1-Gd never: it is
the only source of tumour core and enhancing tumour; FLAIR never: it is the base input)."""


@dataclass
class CrossValConfig:
    """A cross-validation run; saved as ``cv.yaml`` (each fold saves its own training config).

    Attributes:
        train: The recipe; its ``train_cases`` are split into folds, ``val_cases`` ignored.
        folds: Number of folds (2 to the number of cases).
        final: Also train on every case (``final/``) and store the chosen post-processing in
            it.
        out_dir: Run folder.
        only: Train just this fold (``"0"`` to ``folds - 1``) or ``"final"``, then stop
            (no scoring, no tables); ``None``: the whole run.
    """

    train: SegTrainConfig
    folds: int = 5
    final: bool = True
    out_dir: Path | None = None
    only: str | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.folds <= len(self.train.train_cases):
            raise ConfigError(f"folds={self.folds} needs 2 to {len(self.train.train_cases)}",
                              "cross-validation holds out each case once")
        allowed = [str(k) for k in range(self.folds)] + ["final"]
        if self.only is not None and self.only not in allowed:
            raise ConfigError(f"fold {self.only!r} does not exist",
                              f"choose one of {', '.join(allowed)}")


def assign_folds(cases: list[str], folds: int) -> list[int]:
    """Fold index of each case: round-robin over the cases sorted by source, then name."""
    order = sorted(range(len(cases)), key=lambda i: (cases[i].split("/")[0], cases[i]))
    out = [0] * len(cases)
    for rank, i in enumerate(order):
        out[i] = rank % folds
    return out


def finished(folder: Path, expected: SegTrainConfig) -> bool:
    """Whether ``folder`` holds a finished model trained with ``expected``'s recipe.

    Raises:
        ConfigError: it holds a finished model of another recipe (the table would mix them).
    """
    from mrimaster.config import config_to_dict

    if not ((folder / "model.pt").is_file() and (folder / "metrics.json").is_file()):
        return False
    if not (folder / "config.yaml").is_file():
        raise ConfigError(f"{folder} holds a model without its config.yaml, so its recipe is "
                          "unknown", "use a new --out folder, or delete that folder to retrain")
    saved = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    # a setting newer than the saved run had its default there
    differ = recipe_differences(saved, config_to_dict(expected), config_to_dict(
        SegTrainConfig(train_cases=expected.train_cases)))
    if differ:
        raise ConfigError(
            f"{folder} was trained with another recipe ({', '.join(differ)})",
            "pass the same --config and --set options as that run, or use a new --out folder")
    return True


def train_folds(cfg: CrossValConfig, settings: Settings, run_dir: Path) -> list[Path]:
    """Train (or find, when finished earlier) each fold's model; returns the fold folders.
    With ``cfg.only`` set to a fold, only that fold is trained."""
    cases = cfg.train.train_cases
    fold_of = assign_folds(cases, cfg.folds)
    folders = []
    for k in range(cfg.folds):
        folder = run_dir / f"fold_{k}"
        folders.append(folder)
        if cfg.only is not None and cfg.only != str(k):
            continue
        train = [c for c, f in zip(cases, fold_of, strict=True) if f != k]
        recipe = replace(cfg.train, train_cases=train, val_cases=[], out_dir=folder,
                         track=False)
        if finished(folder, recipe):
            log.info("fold %d/%d: finished earlier, kept", k + 1, cfg.folds)
            continue
        log.info("fold %d/%d: training on %d cases", k + 1, cfg.folds, len(train))
        run_seg_training(recipe, settings)
    return folders


def train_final(cfg: CrossValConfig, settings: Settings, run_dir: Path) -> Path:
    """Train (or find) the model on every case: ``final/``."""
    final = run_dir / "final"
    recipe = replace(cfg.train, val_cases=[], out_dir=final, track=False)
    if not finished(final, recipe):
        run_seg_training(recipe, settings)
    return final


def segment_held_out(folders: list[Path], cfg: CrossValConfig, root: Path
                     ) -> dict[str, dict[str, Any]]:
    """Raw (un-cleaned) predictions of every case by the fold that held it out.

    Returns:
        ``{case: {"fold", "settings": {setting: (volume, plan, (3, D, H, W) bool)},
        "features": {setting: trust figures}}}``
        (:func:`mrimaster.segmentation.passes.run_passes`: one more pass, mirrored left-right,
        measures each prediction); a setting the model cannot run on a case (no trained
        combination in it) is left out.
    """
    from mrimaster.segmentation.model import load_segmenter

    fold_of = assign_folds(cfg.train.train_cases, cfg.folds)
    out: dict[str, dict[str, Any]] = {}
    for k, folder in enumerate(folders):
        seg = load_segmenter(folder / "model.pt")  # on the recipe's grid (record_grid)
        for name, f in zip(cfg.train.train_cases, fold_of, strict=True):
            if f != k:
                continue
            case = find_case(root / name)
            settings: dict[str, Any] = {}
            features: dict[str, Any] = {}
            for setting, sub in _inputs(case, seg):
                try:
                    vol, plan = prepare_inputs(seg, sub)
                except DataError as exc:
                    log.warning("fold %d: %s not segmented from %s: %s", k + 1, name, setting,
                                exc)
                    continue
                passes = run_passes(seg, vol.image, vol.voxel_ml)
                settings[setting] = (vol, plan, passes.raw)
                features[setting] = passes.features
            log.info("fold %d: segmented %s", k + 1, name)
            out[name] = {"fold": k, "settings": settings, "features": features}
    return out


def _inputs(case: Case, seg: Any) -> list[tuple[str, Case]]:
    """The inputs a held-out case is segmented from: every modality it has, FLAIR alone, and
    each of :data:`DROPPABLE` that the model would use for it left out."""
    out = [("all", case), ("flair", case_subset(case, ["flair"]))]
    used = plan_inputs(seg, case).used if case.image4d is None else []
    for m in DROPPABLE:
        rest = [x for x in used if x != m]
        if m in used and rest:
            out.append((f"without_{m}", case_subset(case, rest)))
    return out


def _effective(held_out: dict[str, dict[str, Any]], excluded: str | None
               ) -> dict[str, tuple[Any, ...]]:
    """Per case, the prediction the pipeline makes with ``excluded`` left out."""
    out = {}
    for name, item in held_out.items():
        key = f"without_{excluded}"
        setting = key if excluded and key in item["settings"] else "all"
        if setting in item["settings"]:
            out[name] = item["settings"][setting]
    return out


def _choose_postprocessing(chosen_inputs: dict[str, tuple[Any, ...]]
                           ) -> tuple[dict[str, float | None], dict[str, dict[str, float]]]:
    names = list(chosen_inputs)

    def score(k: int, i: int, mask: np.ndarray) -> float | None:
        vol, plan, _ = chosen_inputs[names[k]]
        if not scored_regions(vol, plan)[i]:
            return None
        return dice(mask, vol.regions[i])  # working grid: the shared cases are at 1 mm

    return choose_postprocessing([chosen_inputs[n][2] for n in names], score)


def _best_wt(chosen: dict[str, float | None], table: dict[str, dict[str, float]]) -> float:
    value = chosen.get("WT")
    return table["WT"]["off" if value is None else f"{value:g}"]


def choose_inputs(held_out: dict[str, dict[str, Any]]
                  ) -> tuple[dict[str, str], dict[str, float | None], dict[str, Any]]:
    """Whether to leave one of :data:`DROPPABLE` out at inference, and the post-processing.

    For each option (leave nothing out, or one droppable modality), the post-processing is
    chosen on the predictions that option gives; the option with the highest mean
    whole-tumour Dice after its post-processing wins, leaving nothing out unless another
    beats it.

    Returns:
        ``(excluded, postprocess, search)``: ``{modality: reason}`` (empty or one entry),
        the chosen post-processing, and every option's post-processing table.
    """
    options: dict[str | None, tuple[float, dict[str, float | None], Any]] = {}
    for m in (None, *DROPPABLE):
        if m is not None and not any(f"without_{m}" in it["settings"]
                                     for it in held_out.values()):
            continue
        chosen, table = _choose_postprocessing(_effective(held_out, m))
        options[m] = (_best_wt(chosen, table), chosen, table)
    best = max(options, key=lambda m: (options[m][0], m is None))
    if options[best][0] <= options[None][0]:
        best = None
    excluded = {} if best is None else {best: (
        f"cross-validation: whole-tumour Dice {options[None][0]:.3f} with it, "
        f"{options[best][0]:.3f} without it")}
    search = {"none" if m is None else f"without_{m}": v[2] for m, v in options.items()}
    return excluded, options[best][1], search


def summarise(held_out: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Choose the inputs and the post-processing (:func:`choose_inputs`), then score every
    case in every setting on its input grid: Dice, HD95 and volume difference per region.
    ``all`` is what the shipped pipeline does (every modality each case has, less an excluded
    one); ``every_modality`` feeds them all."""
    excluded, chosen, search = choose_inputs(held_out)
    effective = _effective(held_out, next(iter(excluded), None))
    for name, item in held_out.items():
        item["settings"]["every_modality"] = item["settings"].get("all")
        if name in effective:
            item["settings"]["all"] = effective[name]
    results: dict[str, Any] = {"postprocess": chosen, "excluded": excluded,
                               "postprocess_search": search["none" if not excluded else
                                                            f"without_{next(iter(excluded))}"],
                               "input_search": search}
    for setting in (*SETTINGS, "every_modality"):
        per_case = {}
        for name, item in held_out.items():
            if item["settings"].get(setting) is None:
                continue
            vol, plan, raw = item["settings"][setting]
            per_case[name.split("/")[-1]] = score_prediction(clean_regions(raw, chosen), vol,
                                                             plan)
        results[setting] = {"per_case": per_case, "mean": mean_scores(per_case)}
    results["folds"] = {n.split("/")[-1]: item["fold"] for n, item in held_out.items()}
    results["trust"] = asdict(fit_and_report(trust_rows(held_out, results,
                                                        next(iter(excluded), None))))
    return results


def trust_rows(held_out: dict[str, dict[str, Any]], results: dict[str, Any],
               excluded: str | None) -> list[TrustRow]:
    """The held-out predictions the trust rule is fitted on: per case, every modality it has
    (as the pipeline uses them) and FLAIR alone, with their figures and whole-tumour Dice."""
    rows = []
    for name, item in held_out.items():
        short = name.split("/")[-1]
        for setting in SETTINGS:
            key = setting
            if setting == "all" and excluded and f"without_{excluded}" in item["features"]:
                key = f"without_{excluded}"
            scores = results[setting]["per_case"].get(short, {})
            if key in item.get("features", {}) and "WT" in scores:
                rows.append(TrustRow(short, setting, item["features"][key],
                                     float(scores["WT"]["dice"])))
    return rows


def markdown(results: dict[str, Any]) -> str:
    """The cross-validation tables (every modality; FLAIR alone) as Markdown."""
    from mrimaster.segmentation.evaluate import markdown_table

    pp = ", ".join(f"{r} {describe(v)}" for r, v in results["postprocess"].items())
    excluded = "".join(f"{m} not used ({why}); " for m, why in results["excluded"].items())
    every = results["every_modality"]["mean"]
    return ("### Every modality each case has, as the model uses them\n\n" +
            markdown_table(results["all"]) +
            "\n### FLAIR alone (every other modality removed; WT only)\n\n" +
            markdown_table(results["flair"]) +
            f"\nInputs chosen: {excluded or 'every modality used; '}with every modality fed, "
            "mean Dice " + ", ".join(f"{r} {m['dice']:.3f}" for r, m in every.items()) +
            f". Post-processing chosen: {pp}.\n" + trust_markdown(results.get("trust")))


def run_cross_validation(cfg: CrossValConfig, settings: Settings) -> Path:
    """Train the folds, segment the held-out cases, choose the post-processing, write the
    tables and figure, and train the final model; returns the run folder."""
    from mrimaster.config import config_to_dict
    from mrimaster.segmentation.model import load_segmenter, save_segmenter

    root = dataset_dir(cfg.train.data_dir, settings, "brats-mini")
    run_dir = Path(cfg.out_dir) if cfg.out_dir else settings.runs_dir / "seg-cv"
    run_dir.mkdir(parents=True, exist_ok=True)
    cases = cfg.train.train_cases
    record = {"folds": cfg.folds, "final": cfg.final,
              "assignment": dict(zip(cases, assign_folds(cases, cfg.folds), strict=True)),
              "train": {k: v for k, v in config_to_dict(cfg.train).items()
                        if k not in ("out_dir", "data_dir", "val_cases")}}
    _write_record(run_dir / "cv.yaml", record)
    if cfg.only == "final":
        train_final(cfg, settings, run_dir)
        return run_dir
    folders = train_folds(cfg, settings, run_dir)
    if cfg.only is not None:
        return run_dir
    record_grid(folders, cfg.train.grid)
    scored_on = {"grid": cfg.train.grid, "data": data_fingerprint(root)["sha256"][:16]}
    results = scored_earlier(run_dir, folders, scored_on)
    if results is None:
        results = summarise(segment_held_out(folders, cfg, root))
        results["fold_models"] = fold_fingerprints(folders)
        results["scored_on"] = scored_on
        (run_dir / "cv.md").write_text(markdown(results))
        plot_cross_validation(results, run_dir / "cv.png")
        # last and whole: a table is kept on a later run only when it is complete
        write_whole(run_dir / "cv.json", json.dumps(results, indent=2))
        log.info("cross-validation:\n%s", markdown(results))
    else:
        log.info("cross-validation: the fold models are those cv.json scored, kept")
    if cfg.final:
        final = train_final(cfg, settings, run_dir)
        seg = load_segmenter(final / "model.pt")
        seg.postprocess = dict(results["postprocess"])
        seg.grid = cfg.train.grid
        seg.excluded = dict(results["excluded"])
        seg.meta["postprocess_from"] = "cross-validation"
        save_segmenter(final / "model.pt", seg)
        save_rule(CaseTrustRule(**results["trust"]), final)
    return run_dir


def _write_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``cv.yaml`` whole or not at all (processes started side by side with ``only``
    each write it)."""
    write_whole(path, yaml.safe_dump(record, sort_keys=False))
