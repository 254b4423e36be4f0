"""The referral threshold of a classifier under two rules, on its own split: the measured rule
it ships (the largest threshold whose validation error is within the target) and selection with
guaranteed risk (:mod:`mrimaster.trust.selective`, Geifman & El-Yaniv 2017) at each target given;
coverage, error and the 95% binomial upper bound of the error on the validation part (fitted
on) and the test part (never fitted on). The network runs in PyTorch fp32 with the model's
temperature and its own uncertainty estimator (the referral's ``method``).

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/eval_sgr.py [--model default]
"""

from __future__ import annotations

import argparse

import numpy as np

from mrimaster.models.checkpoint import load_classifier
from mrimaster.models.paths import resolve_model_path
from mrimaster.settings import load_settings
from mrimaster.training.fit_trust import CalibrateConfig, load_calibration_data
from mrimaster.trust.referral import TrustRule
from mrimaster.trust.selective import risk_upper_bound, sgr_threshold
from mrimaster.trust.uncertainty import choose_threshold, uncertainty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--targets", default="0.03,0.05", help="target errors, comma-separated")
    parser.add_argument("--delta", type=float, default=0.05)
    args = parser.parse_args()
    settings = load_settings()
    path = resolve_model_path(args.model, settings.models_dir)
    clf = load_classifier(path)
    data = load_calibration_data(path.parent, CalibrateConfig(str(path)), settings)

    rule = TrustRule.of(clf)

    def part(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = clf.runtime.forward(x)
        unc = uncertainty(rule.method, clf.runtime, x, rule.temperature, logits, features)
        return unc, logits.argmax(1) == y

    parts = {"validation": part(data.x_val, data.y_val), "test": part(data.x_test, data.y_test)}
    print(f"model {path}; temperature {rule.temperature:.3f}; uncertainty {rule.method}; "
          + "; ".join(
        f"{k} {len(c)} images, accuracy {c.mean():.4f}" for k, (_, c) in parts.items()))
    rules = [("measured rule, target 0.03", choose_threshold(*parts["validation"], 0.03))]
    for target in (float(t) for t in args.targets.split(",")):
        g = sgr_threshold(*parts["validation"], target, args.delta)
        rules.append((f"SGR, target {target}, delta {args.delta}", g.threshold))
    print("| rule | threshold | " + " | ".join(
        f"{k}: coverage, error (wrong/accepted), 95% bound" for k in parts) + " |")
    print("|---|---:|" + "---|" * len(parts))
    for name, t in rules:
        cells = []
        for u, c in parts.values():
            accepted = u <= t
            n, e = int(accepted.sum()), int((~c[accepted]).sum())
            cells.append(f"{accepted.mean():.3f}, {e / max(n, 1):.4f} ({e}/{n}), "
                         f"{risk_upper_bound(e, n, 0.05):.4f}")
        shown = "none (refer all)" if t < 0 else f"{t:.4f}"
        print(f"| {name} | {shown} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
