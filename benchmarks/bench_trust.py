"""What the trust decision costs per image, as a ratio to one forward pass, on this CPU.

Runs the shipped (or given) classifier on real slices in the given runtime and times, in one
process: one forward pass (logits and penultimate features); the feature distance; each
uncertainty estimator; and the whole decision (:func:`mrimaster.trust.referral.assess`) with
the model's own estimator.

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/bench_trust.py [--runtime torch]

Figures are medians of repeated calls after a warm-up, batch 64; compare rows within one run.
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
from bench_classify import _median_time  # same folder: run as `python benchmarks/...`

from mrimaster.data.folders import load_slices, scan_class_folders
from mrimaster.errors import MRIMasterError
from mrimaster.inference.loading import load_for_inference
from mrimaster.inference.runtime import RUNTIMES
from mrimaster.settings import load_settings
from mrimaster.trust.referral import TrustRule, assess
from mrimaster.trust.uncertainty import UNCERTAINTY_METHODS, uncertainty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto")
    args = parser.parse_args()
    settings = load_settings()
    clf = load_for_inference(args.model, settings.models_dir, args.runtime)
    rule = TrustRule.of(clf)
    scan = scan_class_folders(settings.data_root / "sartaj-training")
    pick = np.linspace(0, len(scan.paths) - 1, args.images).astype(int)
    slices = load_slices([scan.paths[i] for i in pick], None, clf.image_size, progress=False)
    images = slices.images
    n = len(images)
    runtime = clf.runtime
    print(f"model {args.model} ({clf.arch}, {clf.image_size} px), runtime {runtime.name}, {n} "
          f"real slices; ms per image (median of {args.repeats})")
    forward = _median_time(lambda: runtime.forward(images), args.repeats)
    logits, feats = runtime.forward(images)
    rows = [("forward pass (logits and features)", forward)]
    if rule.distance is not None:
        distance = rule.distance
        rows.append(("feature distance alone", _median_time(lambda: distance.distance(feats),
                                                       args.repeats)))
    for method in UNCERTAINTY_METHODS:
        try:
            rows.append((f"uncertainty {method} alone", _median_time(functools.partial(
                uncertainty, method, runtime, images, rule.temperature, logits, feats),
                args.repeats)))
        except MRIMasterError as exc:  # e.g. MC dropout on a network without dropout
            print(f"uncertainty {method}: {exc.message}")
    rows.append((f"whole decision (assess, uncertainty {rule.method})", _median_time(
        lambda: assess(runtime, rule, images, slices.stats), args.repeats)))
    print(f"{'step':<48} {'ms/img':>8} {'x forward':>10}")
    for name, seconds in rows:
        print(f"{name:<48} {1000 * seconds / n:8.2f} {seconds / forward:10.2f}")


if __name__ == "__main__":
    main()
