"""Turn a run folder into a shipped model folder with a model card written from its files.

Every number and statement in ``MODEL_CARD.md`` comes from the run's own records:
``config.yaml``, ``split.csv``, ``extra_training.json``, ``history.json``, ``metrics.json``,
``calibration.json`` and ``checks.json`` (:mod:`mrimaster.training.checks`). A section whose
file is missing is left out rather than filled in.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from mrimaster.data.splits import SplitTable
from mrimaster.errors import ModelError
from mrimaster.models.paths import file_sha256
from mrimaster.runs.cards import MAX_MODEL_BYTES, exported_line, run_lines
from mrimaster.settings import Settings

SHIPPED_FILES = ("model.pt", "config.yaml", "split.csv", "history.json", "metrics.json",
                 "curves.png")
OPTIONAL_FILES = ("run.json", "calibration.json", "checks.json", "extra_training.json",
                  "reliability_val.png", "risk_coverage_val.png", "explain/sanity.json",
                  "checks/presence/missed_gradcam.png", "checks/presence/pointing_gradcam.png")


def _read(run_dir: Path, name: str) -> Any:
    path = run_dir / name
    return json.loads(path.read_text()) if path.is_file() else None


def _class_table(metrics: dict[str, Any]) -> list[str]:
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label, s in metrics["per_class"].items():
        lines.append(f"| {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | "
                     f"{s['support']} |")
    return lines + ["", "Confusion matrix (rows true, columns predicted, order as above):", "",
                    *[f"    {row}" for row in metrics["confusion_matrix"]], ""]


def _labelled_section(title: str, m: dict[str, Any]) -> list[str]:
    t = m["trust"]
    return [f"## {title}", "",
            f"- n = {m['n']}: accuracy **{m['accuracy']:.4f}**, macro F1 **{m['macro_f1']:.4f}**",
            f"- wrong with p > 0.95: {t['wrong_over_0.95']} ({t['wrong_over_0.95_share']:.2%} "
            f"of images), of which not referred or rejected: {t['wrong_over_0.95_not_caught']}",
            f"- status: {t['status']}; error among the {t['coverage']:.1%} accepted: "
            f"{t['error_of_accepted']:.4f}", "", *_class_table(m)]


def _calibration_rows(cal: dict[str, Any] | None, checks: dict[str, Any]) -> list[str]:
    rows = ["| set | | ECE (15 bins) | MCE | NLL | Brier | wrong with p > 0.95 |",
            "|---|---|---:|---:|---:|---:|---:|"]
    sets: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    if cal:
        sets.append(("validation (fitted on)", cal["before"], cal["after"]))
    for key, name in (("in_source", "in-source test"), ("source_held_out", "source-held-out")):
        if key in checks:
            t = checks[key]["trust"]
            sets.append((name, t["calibration_before"], t["calibration_after"]))
    for name, b, a in sets:
        for label, m in (("T = 1", b), ("shipped T", a)):
            rows.append(f"| {name} | {label} | {m['ece']:.4f} | {m['mce']:.4f} | {m['nll']:.4f}"
                        f" | {m['brier']:.4f} | {m['wrong_over_0.95']} |")
    return rows


def _sgr_line(sgr: dict[str, Any]) -> str:
    """What selection with guaranteed risk (:mod:`mrimaster.trust.selective`) chose."""
    if sgr["threshold"] < 0:
        return (f"Selection with guaranteed risk finds no threshold whose risk bound (delta "
                f"{sgr['delta']}) is below {sgr['target_risk']} on these validation images: "
                "too few for that guarantee, it would refer every image.")
    return (f"Selection with guaranteed risk would accept up to {sgr['threshold']:.4f}: "
            f"validation coverage {sgr['coverage']:.1%}, risk bound {sgr['bound']:.3f} at "
            f"delta {sgr['delta']} (for the uncertainty cut alone, the estimator and "
            "temperature chosen on the same images: an estimate, not a proof).")


def _trust_section(cal: dict[str, Any] | None, checks: dict[str, Any]) -> list[str]:
    lines = ["## Confidence, referral and out-of-distribution refusal", ""]
    if cal:
        ood, ref = cal["ood"], cal["referral"]
        shift_aware = cal.get("temperature_shift_aware")
        lines += [f"- Temperature: fitted on validation {cal['temperature_fitted']:.4f}"
                  + (f", on validation with its shifted copies {shift_aware:.4f}"
                     if shift_aware is not None else "")
                  + f"; shipped {cal['temperature']:.4f} (rule: {cal['temperature_rule']}).",
                  f"- Uncertainty: `{cal['chosen_method']}` (validation AURC per estimator, "
                  "with its cost in network passes: "
                  + ", ".join(f"{k} {v['aurc']:.4f} ({v.get('passes', '?')})"
                              for k, v in cal["uncertainty_aurc"].items())
                  + (f"; chosen among those within {cal['max_passes']} passes"
                     if "max_passes" in cal else "")
                  + f"); refer when above {ref['threshold']:.4f} (target error "
                  f"{ref['target_error']}, {ref.get('rule', 'empirical')} rule)."
                  + (" " + _sgr_line(cal["sgr"]) if "sgr" in cal else ""),
                  f"- Feature distance (Mahalanobis, per dimension, fitted on {ood['n_fit']} "
                  f"training images): refer above {ood['refer_above']:.2f} (validation quantile "
                  f"{ood['refer_quantile']}), reject above {ood['reject_above']:.2f} "
                  f"({ood['reject_factor']} x the largest distance of any training or "
                  "validation image).", ""]
    lines += _calibration_rows(cal, checks) + [""]
    if "ood" in checks:
        o = checks["ood"]
        lines += [f"Inputs that are not brain MRI slices ({o['n']} probes): {o['status']}.", "",
                  "| probe | status | why |", "|---|---|---|"]
        lines += [f"| {name} | {p['status']} | {p['reason']} |" for name, p in o["probes"].items()]
        lines.append("")
    if "cost" in checks:
        c = checks["cost"]
        lines += [f"Cost on the machine that ran the checks (batch 64, best of 3): one forward "
                  f"pass {c['forward_ms_per_image']:.1f} ms per image; the whole trust decision "
                  f"(forward pass, input checks, uncertainty, distance) "
                  f"{c['assess_ms_per_image']:.1f} ms, {c['ratio_to_forward']:.2f}x a forward "
                  "pass.", ""]
    return lines


def _presence_section(p: dict[str, Any]) -> list[str]:
    lines = [f"## Tumours from another source: `{Path(p['data']).name}`, part `{p['part']}` "
             "(never trained or fitted on; a same-source check: the set's `fit` part trains "
             "the presence loss)", "",
             f"- n = {p['n']}, every image shows a tumour; sensitivity (top class is a tumour) "
             f"**{p['sensitivity']:.4f}**",
             f"- called 'no tumour': {p['missed']}; with p > 0.95: {p['confident_misses']}, of "
             f"which referred or rejected: {p['confident_misses_caught']}",
             f"- status: {p['status']}; predicted classes: {p['predicted']}"]
    if "pointing_game" in p:
        pg = p["pointing_game"]
        lines.append(f"- Grad-CAM pointing game (maximum inside the tumour box): "
                     f"{pg['hits']}/{pg['n']} = **{pg['accuracy']:.3f}** (a map that always "
                     f"points at the image centre: {pg['centre_baseline']:.3f}); "
                     "`pointing_gradcam.png`, `missed_gradcam.png`")
    return lines + [""]


def _runtime_section(onnx: dict[str, Any]) -> list[str]:
    lines = ["## Inference runtimes (ONNX export)", "",
             f"The network is exported to ONNX (opset {onnx['opset']}) and each variant is "
             "checked against PyTorch on the validation part (decides) and the test part "
             "(reported). `--runtime auto` uses the first kept variant whose engine is "
             "installed, in this order, then PyTorch. A reduced-precision variant carries its "
             "own temperature, referral threshold and feature distance, refitted on its own "
             "outputs. Details in `onnx.json`.", "",
             "| variant | kept | val agreement | val macro F1 (torch) | test agreement | "
             "test macro F1 (torch) | max logit diff (val) | rule or reason |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for name, v in onnx["variants"].items():
        if "val" not in v:
            lines.append(f"| `{name}` | no | | | | | | {v['why']} |")
            continue
        val, test = v["val"], v["test"]
        lines.append(f"| `{name}` | {'yes' if v['kept'] else 'no'} | "
                     f"{val['top1_agreement']:.4f} | {val['macro_f1']:.4f} "
                     f"({val['torch_macro_f1']:.4f}) | {test['top1_agreement']:.4f} | "
                     f"{test['macro_f1']:.4f} ({test['torch_macro_f1']:.4f}) | "
                     f"{val['max_logit_difference']:.3g} | {v['rule']} |")
    refitted = [(n, v) for n, v in onnx["variants"].items() if v.get("kept") and "calibration" in v]
    if refitted:
        lines += ["", "Trust rule of each kept reduced-precision variant, refitted on its own "
                  "outputs:", ""]
    for name, v in refitted:
        cal = v["calibration"]
        lines.append(f"- `{name}`: temperature {cal['temperature']:.4f} (fitted "
                     f"{cal['temperature_fitted']:.4f}); `{cal['referral']['method']}` "
                     f"uncertainty, refer above {cal['referral']['threshold']:.4f} "
                     f"(validation coverage {cal['referral']['val_coverage']:.3f}, error among "
                     f"accepted {cal['referral']['val_error_accepted']:.4f}); feature distance: "
                     f"refer above {cal['ood']['refer_above']:.2f}, reject above "
                     f"{cal['ood']['reject_above']:.2f}; inputs that are not brain MRI "
                     f"({sum(v.get('ood_probes', {}).values())} probes): "
                     f"{v.get('ood_probes', 'not run')}.")
    return lines + [""]


def model_card(run_dir: Path, command: str, onnx: dict[str, Any] | None = None) -> str:
    """Markdown model card from a run folder's files (see the module docstring), plus the
    ONNX export report when there is one."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = _read(run_dir, "metrics.json")
    history = _read(run_dir, "history.json")
    cal = _read(run_dir, "calibration.json")
    checks = _read(run_dir, "checks.json") or {}
    extra = _read(run_dir, "extra_training.json") or {}
    split = SplitTable.load(run_dir / "split.csv")
    parts = Counter(split.splits)
    val = metrics["val"]
    if checks and checks.get("model_sha256") != file_sha256(run_dir / "model.pt"):
        raise ModelError("checks.json was written for another model file than model.pt",
                         "run `mrimaster models calibrate --model RUN` again")
    if cal and abs(cal["val_accuracy"] - val["accuracy"]) > 1e-9:
        raise ModelError("calibration.json was fitted on other weights than model.pt "
                         f"(validation accuracy {cal['val_accuracy']:.4f} vs "
                         f"{val['accuracy']:.4f})", "run `mrimaster models calibrate` on the run")
    data = Path(str(cfg.get("data_dir") or "sartaj-training")).name
    extras = ", ".join(f"{k} {v}" for k, v in sorted(extra.items())) or "none"
    lines = [
        f"# Model card: {cfg['model']} ({run_dir.name})", "",
        exported_line(),
        f"- **Task:** brain MRI slice classification into {', '.join(val['labels'])}, with a "
        "trust status (ok / refer / reject) per image.",
        f"- **Architecture:** `{cfg['model']}`, {cfg['image_size']} px input, "
        f"{'ImageNet-pretrained' if cfg['pretrained'] else 'trained from scratch'}; frozen: "
        f"{cfg['freeze'] or 'nothing'}; augmentation `{cfg['augment']}`.",
        f"- **Data:** `{data}` split by `{cfg.get('split_file') or 'a split computed for the run'}`"
        f" (`split.csv` here): " + ", ".join(f"{k} {v}" for k, v in sorted(parts.items()))
        + f" images; near-duplicates (raw-image 256-bit pHash, <= {cfg['dedup_threshold']} "
        "bits) never cross parts; `shift` holds out whole acquisition-style clusters (what "
        "is left of them is `excluded`: not trained, fitted or scored on). Extra "
        f"training images from other sources: {extras}.",
        f"- **Command:** `{command}`",
        *run_lines(_read(run_dir, "run.json")),
        f"- **Epochs run:** {len(history)} (best validation macro F1 at epoch "
        f"{metrics['summary']['best_epoch']}); curves in `curves.png`; validation accuracy "
        f"{val['accuracy']:.4f}, macro F1 {val['macro_f1']:.4f} (n = {val['n']}).",
        "- **How the figures below were made:** PyTorch fp32 (`model.pt`) with the shipped "
        "temperature and referral rule (see *Confidence*), on the part each heading names; "
        "the reduced-precision runtimes' own figures are in *Inference runtimes*.", ""]
    if "in_source" in checks:
        lines += _labelled_section("In-source held-out test part", checks["in_source"])
    else:
        test = metrics["test"]
        lines += ["## In-source held-out test part", "",
                  f"- accuracy **{test['accuracy']:.4f}**, macro F1 **{test['macro_f1']:.4f}**, "
                  f"n = {test['n']}", "", *_class_table(test)]
    if "source_held_out" in checks:
        lines += _labelled_section("Source-held-out part (acquisition styles never trained on)",
                                   checks["source_held_out"])
    if "presence" in checks:
        lines += _presence_section(checks["presence"])
    lines += _trust_section(cal, checks)
    if onnx:
        lines += _runtime_section(onnx)
    sanity = _read(run_dir, "explain/sanity.json")
    if sanity:
        lines += ["## Grad-CAM sanity check", "",
                  f"Model randomisation (Adebayo et al. 2018) on {len(sanity['spearman'])} "
                  f"images, {sanity['method']}: mean Spearman rank correlation with the "
                  f"re-initialised network's maps {sanity['mean_spearman']:.3f}.", ""]
    lines += ["## Limits", "",
              f"- Trained on {sum(v for k, v in parts.items() if k == 'train')} images of "
              f"`{data}` (no patient IDs: near-duplicate groups approximate patients) and the "
              "extra sources above; every figure here is on public data, not a clinical "
              "population.",
              "- Not a medical device. Every output is to be reviewed by a doctor."]
    return "\n".join(lines) + "\n"


def export_run(run_dir: Path, out_dir: Path, command: str, settings: Settings | None = None
               ) -> Path:
    """Copy a run's model and records into ``out_dir`` and write ``MODEL_CARD.md``.

    With ``settings`` (for the run's data), the network is also exported to ONNX and each
    faster variant validated (:func:`mrimaster.inference.onnx_export.export_variants`);
    ``onnx.json`` records the checks.
    """
    missing = [n for n in SHIPPED_FILES if not (run_dir / n).is_file()]
    if missing:
        raise ModelError(f"run folder {run_dir} lacks {', '.join(missing)}",
                         "export a finished run of `mrimaster train`")
    size = (run_dir / "model.pt").stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"model.pt is {size / 2**20:.1f} MB; shipped models must be <= 10 MB")
    model_card(run_dir, command)  # refuse stale records before writing anything
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES + OPTIONAL_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out_dir / Path(name).name)
    onnx = None
    if settings is not None:
        onnx = _export_onnx(run_dir, out_dir, settings)
        (out_dir / "onnx.json").write_text(json.dumps(onnx, indent=2))
    (out_dir / "MODEL_CARD.md").write_text(model_card(run_dir, command, onnx))
    return out_dir


def _export_onnx(run_dir: Path, out_dir: Path, settings: Settings) -> dict[str, Any]:
    from mrimaster.inference.onnx_export import export_variants
    from mrimaster.models.checkpoint import load_classifier
    from mrimaster.training.fit_trust import CalibrateConfig, load_calibration_data

    data = load_calibration_data(run_dir, CalibrateConfig(str(run_dir)), settings)
    clf = load_classifier(out_dir / "model.pt")
    return export_variants(clf, out_dir / "model.pt", out_dir, data)
