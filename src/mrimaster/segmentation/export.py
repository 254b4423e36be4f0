"""Turn a cross-validation run (``mrimaster seg cv``) into a model folder with a model card.

The folder gets the final model (trained on every case, with the post-processing the
cross-validation chose), its config, history and curves, the cross-validation results
(``cv.json``, ``cv.md``, ``cv.png``, ``cv.yaml``), the fitted case trust rule
(``trust.json``) and the fold models that inference averages (``folds/fold_K``: each fold's
exported graph and its check, ``model.onnx`` + ``model.onnx.json``, or its ``model.pt`` where it
was not exported); the card states the data, the folds, the command and the per-case table.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from mrimaster.atomic import write_whole
from mrimaster.errors import ModelError
from mrimaster.runs.cards import MAX_MODEL_BYTES, exported_line, run_lines
from mrimaster.segmentation.case_trust import (
    TRUST_FILE,
    CaseTrustRule,
    fit_and_report,
    fit_rule,
    recorded_rows,
    trust_markdown,
)
from mrimaster.segmentation.ensemble import FOLDS_DIR, numbered_folds
from mrimaster.segmentation.postprocess import describe
from mrimaster.segmentation.sliding_window import GRID_WORDS

log = logging.getLogger(__name__)

FINAL_FILES = ("model.pt", "config.yaml", "history.json", "curves.png")
CV_FILES = ("cv.json", "cv.md", "cv.png", "cv.yaml")
FOLD_GRAPH_FILES = ("model.onnx", "model.onnx.json")


def copy_folds(cv_dir: Path, out_dir: Path) -> list[str]:
    """Copy each fold's network into ``out_dir/folds/fold_K``: its ONNX export where it has
    one (``mrimaster seg export-onnx --model RUN/fold_K``), else its ``model.pt``. Returns
    what each fold got, in fold order. Members of an earlier export there are removed
    first: a stale one would join the ensemble."""
    out = []
    shutil.rmtree(out_dir / FOLDS_DIR, ignore_errors=True)
    for fold in numbered_folds(cv_dir):
        names = FOLD_GRAPH_FILES if all((fold / n).is_file() for n in FOLD_GRAPH_FILES) \
            else ("model.pt",)
        if not (fold / names[0]).is_file():
            raise ModelError(f"{fold} holds no model", "run `mrimaster seg cv` to the end first")
        dest = out_dir / FOLDS_DIR / fold.name
        dest.mkdir(parents=True, exist_ok=True)
        for n in names:
            shutil.copy2(fold / n, dest / n)
        history = fold / "history.json"
        pace = ""
        if history.is_file():
            rows = json.loads(history.read_text())
            if rows:
                pace = f", {rows[-1]['elapsed_s'] / len(rows):.0f} s an epoch"
        out.append(f"{fold.name}: {', '.join(names)}{pace}")
    return out


def export_seg_run(cv_dir: Path, out_dir: Path, command: str) -> Path:
    """Copy the final model and the cross-validation results of ``cv_dir`` into ``out_dir``
    and write ``MODEL_CARD.md``.

    Raises:
        ModelError: the run is unfinished (no final model or no ``cv.json``) or the model is
            over the size budget.
    """
    final = cv_dir / "final"
    missing = [f"final/{n}" for n in FINAL_FILES if not (final / n).is_file()] + \
        [n for n in CV_FILES if not (cv_dir / n).is_file()]
    if missing:
        raise ModelError(f"{cv_dir} is not a finished cross-validation run (missing "
                         f"{', '.join(missing)})", "run `mrimaster seg cv` to the end first")
    if (final / "model.pt").stat().st_size > MAX_MODEL_BYTES:
        raise ModelError("model.pt is over 10 MB")
    out_dir.mkdir(parents=True, exist_ok=True)
    for n in (*FINAL_FILES, "run.json"):
        if (final / n).is_file():
            shutil.copy2(final / n, out_dir / n)
    for n in CV_FILES:
        shutil.copy2(cv_dir / n, out_dir / n)
    (out_dir / TRUST_FILE).unlink(missing_ok=True)  # an earlier export's rule is not this one's
    if (final / TRUST_FILE).is_file():
        shutil.copy2(final / TRUST_FILE, out_dir / TRUST_FILE)
    folds = copy_folds(cv_dir, out_dir)
    _warn_if_refit_differs(cv_dir / "cv.json", out_dir)
    cfg = yaml.safe_load((final / "config.yaml").read_text())
    cv = json.loads((cv_dir / "cv.json").read_text())
    record = yaml.safe_load((cv_dir / "cv.yaml").read_text())
    history = json.loads((final / "history.json").read_text())
    run = json.loads((final / "run.json").read_text()) if (final / "run.json").is_file() \
        else None
    from mrimaster.segmentation.model import load_segmenter

    seg = load_segmenter(out_dir / "model.pt")
    if seg.postprocess != cv["postprocess"] or seg.excluded != cv["excluded"]:
        raise ModelError("the final model's post-processing or inputs differ from the "
                         "cross-validation's choice",
                         "run `mrimaster seg cv` again to finish the run")
    (out_dir / "MODEL_CARD.md").write_text(card({**cfg, "grid": seg.grid}, cv, record, history,
                                                run, command, seg.combinations, folds))
    return out_dir


def _mean_line(cv: dict[str, Any], setting: str) -> str:
    mean = cv[setting]["mean"]
    return ", ".join(f"{r} {m['dice']:.3f} (lowest {m['min_dice']:.3f}, {m['cases']} cases)"
                     for r, m in mean.items())


def card(cfg: dict[str, Any], cv: dict[str, Any], record: dict[str, Any],
         history: list[dict[str, Any]], run: dict[str, Any] | None, command: str,
         combinations: list[list[str]], folds: list[str] | None = None) -> str:
    """The model card's Markdown."""
    from mrimaster.segmentation.crossval import markdown

    trained = sorted({m for c in combinations for m in c})
    unused = [m for m in cfg["modalities"] if m not in trained]
    pp = cv["postprocess"]
    search = "; ".join(f"{r}: " + ", ".join(f"{k} {v:.3f}" for k, v in t.items())
                       for r, t in cv["postprocess_search"].items())
    lines = [
        "# Model card: 3D U-Net tumour segmentation (seg-default)", "",
        exported_line(), *run_lines(run),
        f"- **Inputs:** channels {', '.join(cfg['modalities'])}, z-scored inside the brain "
        f"and cropped to it, resampled to {cfg['spacing']} mm (the training spacing, recorded "
        f"in the model file; outputs go back to the input grid, nearest-neighbour). Trained "
        f"with modality dropout {cfg['modality_dropout']}: each case with the modalities it "
        "has (combinations: " + "; ".join("+".join(c) for c in combinations) + "). "
        "Inference feeds the largest combination of modalities seen in training that a "
        "case has (preferring one with T1-Gd) and reports the others as not used"
        + (f"; {', '.join(unused)} never occurs in the training data, so it is never used"
           if unused else "")
        + "".join(f"; {m} is not used either ({why})" for m, why in cv["excluded"].items())
        + ".",
        "- **Outputs:** WT / TC / ET as BraTS 2021 labels on the input grid; without T1-Gd "
        "only the whole tumour (1 = tumour) and \"not assessable without T1-Gd\" for TC and ET.",
        f"- **Network:** MONAI residual UNet, channels {cfg['channels']}, instance norm; "
        f"patches {cfg['patch']}, sliding-window inference (Gaussian blending, overlap 0.25, "
        f"{GRID_WORDS[cfg.get('grid', 'monai')]}); "
        "optional test-time mirroring (`--tta`, 8 passes).",
        "- **Training:** nnU-Net-style augmentation (rotation, scaling, elastic deformation, "
        "mirroring, gamma, brightness, noise, simulated low resolution), Dice + BCE per region "
        "masked to the regions each case's labels define, AdamW with cosine decay, "
        f"{cfg['epochs']} epochs x {cfg['iterations']} steps x batch {cfg['batch_size']}, "
        f"{'bf16 autocast where supported' if cfg.get('precision') != 'fp32' else 'fp32'}; "
        "the last epoch is kept (no selection on a case).",
        "- **Data:** the 14 shared brats-mini patients: BraTS 2015 (2013 subset) from "
        "DeepMedic's examples (FLAIR, T1-Gd, 4-class labels; Menze et al. 2015, Kamnitsas et "
        "al. 2017) and BraTS 2018 from DeepVoxNet2's demo (FLAIR, T1, whole-tumour labels "
        "only; Bakas et al. 2017, 2018). Training cases: " + ", ".join(cfg["train_cases"]),
        f"- **Cross-validation:** {record['folds']} folds by patient (assignment in `cv.yaml`),"
        " each fold trained with the same recipe on the other patients; every case is scored "
        "once, by the fold that held it out, on its input grid.",
        "- **Post-processing** chosen on the cross-validation predictions (nnU-Net's rule: "
        "only where it raised the mean Dice): "
        + ", ".join(f"{r} {describe(v)}" for r, v in pp.items())
        + f" (mean Dice per candidate: {search}). The inputs were chosen the same way: a "
        "modality is left out only where that raised the mean whole-tumour Dice. Both choices "
        "were made on the same predictions that the table reports, so its means are slightly "
        "optimistic.",
        f"- **Command:** `{command}`",
        f"- **Final model:** {len(history)} epochs on all {len(cfg['train_cases'])} cases; "
        "`curves.png`.",
        "- **Inference:** "
        + (f"the ensemble of the {len(folds)} fold models (`folds/`: "
           + "; ".join(folds) + "), their probabilities averaged, planned and cleaned up with "
           "the final model's settings (seconds an epoch: that fold's training time over its "
           "epochs, as recorded on the machine that trained it); `uncertainty.nii.gz` is the "
           "members' disagreement per voxel (mutual information of the whole tumour, bits). "
           "`--fast` runs the final model alone (its uncertainty: the disagreement of a "
           "left-right mirrored pass)."
           if folds else "the final model alone."),
        "- **Case trust rule** (`trust.json`): each result gets `status` ok or refer and the "
        "reason. Its figures come from one network's plain and left-right mirrored passes "
        "(the first fold member in the ensemble, the final model with `--fast`), the same "
        "figures the rule was fitted on in cross-validation (each case by the fold model "
        "that never saw it); any sequence problem also refers. Table below.", "",
        "## Cross-validation (held-out Dice, HD95 in mm, volume difference in mL)", "",
        f"Mean Dice, every modality each case has as the model uses them: "
        f"{_mean_line(cv, 'all')}. FLAIR alone: {_mean_line(cv, 'flair')}. Every modality "
        f"fed (no input left out): {_mean_line(cv, 'every_modality')}.", "",
        "Cases without T1-Gd are scored on WT only (TC and ET are not written for them); "
        "the DeepVoxNet2 cases only have whole-tumour labels. `cv.png` draws the table.", "",
        markdown(cv), "",
        "## Limits", "",
        "- Cases under 0.60 whole-tumour Dice in cross-validation: "
        + (", ".join(f"{n} ({v['WT']['dice']:.3f}, {v['WT']['volume_diff_ml']:+.0f} mL)"
                     for n, v in cv["all"]["per_case"].items() if v["WT"]["dice"] < 0.6)
           or "none") + ". Large over-segmentation of this kind is what a reviewer must look "
        "for: compare the overlay with the FLAIR.",
        *_trust_limits(cv.get("trust")),
        "- Six patients carry tumour-core and enhancing-tumour labels: TC and ET are learnt "
        "from very little data and vary widely between cases. WT is the dependable output.",
        "- No training case has T1 and T1-Gd together, or T2: on a complete BraTS case the "
        "network reads FLAIR and T1-Gd and says that T1 and T2 were not used.",
        "- Not a medical device; every mask is to be checked by a doctor.",
    ]
    return "\n".join(lines) + "\n"


def _warn_if_refit_differs(cv_path: Path, out_dir: Path) -> None:
    """Log when a run's recorded trust rule is not what this version fits on its own recorded
    held-out predictions (a run fitted by an earlier version): the export ships it as
    recorded, and says how to refit it."""
    trust = json.loads(cv_path.read_text()).get("trust") or {}
    rows = recorded_rows(trust)
    if rows and fit_rule(rows, trust.get("targets")).thresholds != trust.get("thresholds"):
        log.warning("the trust rule this run recorded was fitted by an earlier version of "
                    "MRIMaster; it is exported as recorded. `mrimaster seg refit-trust --model "
                    "%s` refits it with this version's fit", out_dir)


def refit_trust(folder: Path, when: str) -> CaseTrustRule:
    """Refit a model folder's case trust rule with this version's
    :func:`~mrimaster.segmentation.case_trust.fit_and_report`, on the held-out predictions
    its cross-validation recorded (``cv.json``: ``trust.cv.rows``, each case's figures and
    whole-tumour Dice by the fold model that never saw it), and rewrite what shows it:
    ``trust.json``, ``cv.json``'s ``trust``, ``cv.md`` and the card's trust table and limit.
    The networks and every other figure are unchanged.

    Args:
        folder: A model folder written by :func:`export_seg_run`.
        when: The date to record in the rule's ``fitted_on``.

    Raises:
        ModelError: the folder has no recorded held-out predictions to refit on.
    """
    from mrimaster.segmentation.crossval import markdown

    cv_path = folder / "cv.json"
    try:
        cv = json.loads(cv_path.read_text())
        old = cv["trust"]
        rows = recorded_rows(old)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{folder} records no held-out predictions to refit a trust rule on "
                         f"({type(exc).__name__}: {exc})",
                         "run `mrimaster seg cv` and `mrimaster seg export` again") from exc
    if not rows:
        raise ModelError(f"{cv_path} records no held-out predictions",
                         "run `mrimaster seg cv` and `mrimaster seg export` again")
    rule = fit_and_report(rows, dict(old.get("targets") or {}) or None)
    rule.fitted_on += (f"; refitted {when} from the held-out predictions in cv.json "
                       "(`mrimaster seg refit-trust`)")
    cv["trust"] = asdict(rule)
    texts = {TRUST_FILE: json.dumps(asdict(rule), indent=2), "cv.json": json.dumps(cv, indent=2)}
    try:
        texts["cv.md"] = markdown(cv)
    except KeyError as exc:
        raise ModelError(f"{cv_path} lacks the cross-validation results ({exc}) its tables "
                         "need", "run `mrimaster seg cv` and `mrimaster seg export` "
                         "again") from exc
    card_path = folder / "MODEL_CARD.md"
    if card_path.is_file():
        text, blocks = re.subn(r"\n### Case-level trust rule.*?(?=\n+## )",
                               lambda _: trust_markdown(cv["trust"]).rstrip("\n"),
                               card_path.read_text(), flags=re.S)
        limits = _trust_limits(cv["trust"])
        text, lines = re.subn(r"^- The trust rule was fitted on .*$", lambda _: limits[0], text,
                              flags=re.M)
        if (blocks, lines) != (1, 1):
            raise ModelError(f"{card_path} has {blocks} trust-rule tables and {lines} trust-rule "
                             "limits where one of each was expected, so it cannot be updated "
                             "in place", "export the model again with `mrimaster seg export`")
        texts["MODEL_CARD.md"] = text
    # every text is made before any file is written, and each file replaced whole
    for name, content in texts.items():
        write_whole(folder / name, content)
    return rule


def _trust_limits(trust: dict[str, Any] | None) -> list[str]:
    """The trust rule's limits in the card: what it refers when fitted on every case, and
    what it misses when each case is left out of the fit."""
    if not trust:
        return []
    rows = trust["cv"]["rows"]
    bad = [r for r in rows if r["dice"] < trust["targets"][r["setting"]]]
    missed = sorted({f"{r['case']} ({r['setting']})" for r in bad
                     if r["status_leave_one_out"] == "ok"})
    loo = {k: "-" if v is None else f"{v:.3f}"
           for k, v in trust["cv"]["leave_one_out"]["overall"].items()
           if k in ("coverage", "risk")}
    return [f"- The trust rule was fitted on {len(rows)} held-out predictions of which "
            f"{len(bad)} were under target; it refers all of them as fitted. Refitted without "
            "each case in turn, it "
            + (f"misses {', '.join(missed)}" if missed else "still refers every one")
            + f" (leave-one-out coverage {loo['coverage']}, risk {loo['risk']}): with "
            "this few failures, one whose figures lie among the acceptable cases' is caught "
            "only where the rule has seen it."
            + (" Each figure is capped at the largest an acceptable held-out prediction had, "
               "with no margin: that case sits on the cap." if trust.get("envelope") else "")
            + " A `status` of ok is no licence to skip the review."]

