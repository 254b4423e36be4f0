"""The checks a calibrated run must pass before it ships, written to ``checks.json``.

- ``in_source``: the held-out ``test`` part of the split (same sources as training).
- ``source_held_out``: the ``shift`` part: whole acquisition-style clusters no training or
  fitting step saw (:mod:`mrimaster.data.styles`).
- ``presence``: the ``report`` part of the presence-only set named in the run's config (e.g.
  ``br35h-tumour``): sensitivity, confident misses, referral, pointing game.
- ``ood``: inputs that are not brain MRI slices (photos, noise, blank, tiny): how many are
  rejected, referred, or given a class.
- ``cost``: milliseconds per image of one forward pass and of the whole trust decision.

The model card (:mod:`mrimaster.training.export`) is written from this file.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mrimaster.config import load_config
from mrimaster.data.folders import load_slices
from mrimaster.data.images import prepare_slice, raw_stats
from mrimaster.data.splits import SHIFT_PART, SplitTable
from mrimaster.evaluation.evaluate import labelled_evaluation, load_part
from mrimaster.evaluation.presence import evaluate_presence
from mrimaster.inference.forward import predict_logits
from mrimaster.models.checkpoint import Classifier, load_classifier
from mrimaster.models.paths import file_sha256
from mrimaster.runs.data_roots import dataset_dir, under_root
from mrimaster.settings import Settings
from mrimaster.training.config import TrainConfig
from mrimaster.trust.referral import TrustRule, assess
from mrimaster.trust.report import status_counts

log = logging.getLogger(__name__)


def ood_probes(seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs that are not brain MRI slices, as ``(H, W, 3)`` uint8 images.

    Synthetic probes always; scikit-image's bundled photos (no download) where it is installed.
    """
    rng = np.random.default_rng(seed)
    probes = {
        "uniform_noise_gray": np.repeat(rng.integers(0, 256, (256, 256, 1), np.uint8), 3, 2),
        "uniform_noise_colour": rng.integers(0, 256, (256, 256, 3), np.uint8),
        "blank_black": np.zeros((256, 256, 3), np.uint8),
        "blank_white": np.full((256, 256, 3), 255, np.uint8),
        "blank_1x1": np.zeros((1, 1, 3), np.uint8),
        "tiny_16x16_noise": rng.integers(0, 256, (16, 16, 3), np.uint8),
        "gradient": np.repeat(np.repeat(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None],
                                        256, 0), 3, 2),
        "checkerboard": np.repeat(((np.indices((256, 256)) // 32).sum(0) % 2 * 255)
                                  .astype(np.uint8)[..., None], 3, 2),
    }
    try:
        from skimage import data as skdata
    except ImportError:
        return probes
    for name in SKIMAGE_PHOTOS:
        try:
            img = np.asarray(getattr(skdata, name)())
        except Exception:  # noqa: BLE001 - a photo that needs a download is left out
            continue
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, 2)
        if img.dtype != np.uint8:
            img = img.astype(np.float64)
            img = (255 * (img - img.min()) / max(float(img.max() - img.min()), 1e-9)
                   ).astype(np.uint8)
        probes[f"skimage_{name}"] = np.ascontiguousarray(img[..., :3])
    return probes


SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cat", "checkerboard", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry",
    "logo", "moon", "page", "retina", "rocket", "text", "microaneurysms", "binary_blobs")
"""2D images that scikit-image ships inside its wheel."""


def check_ood(clf: Any, rule: TrustRule) -> dict[str, Any]:
    """Status of every OOD probe (none should get ``ok``).

    Args:
        clf: A :class:`~mrimaster.models.checkpoint.Classifier` or an exported variant
            (:class:`~mrimaster.inference.onnx_runtime.OnnxClassifier`): anything with
            ``runtime``, ``image_size`` and ``classes``.
    """
    probes = ood_probes()
    images, stats = [], []
    for img in probes.values():
        gray = np.asarray(Image.fromarray(img).convert("L"))
        images.append(prepare_slice(gray, clf.image_size))
        stats.append(raw_stats(img))
    result = assess(clf.runtime, rule, np.stack(images), stats)
    per = {name: {"status": result.status[i], "reason": result.reason[i],
                  "prediction": clf.classes[int(result.probs[i].argmax())],
                  "confidence": float(result.probs[i].max())}
           for i, name in enumerate(probes)}
    return {"n": len(per), "status": status_counts(result), "probes": per}


def measure_cost(clf: Classifier, rule: TrustRule, images: np.ndarray, repeats: int = 3
                 ) -> dict[str, float]:
    """Milliseconds per image of one forward pass and of :func:`assess` (forward pass, input
    checks, uncertainty, feature distance, decision), best of ``repeats``, batch 64."""
    def best(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1000 * min(times) / len(images)

    forward = best(lambda: predict_logits(clf.net, images))
    full = best(lambda: assess(clf.runtime, rule, images))
    return {"images": int(len(images)), "forward_ms_per_image": forward,
            "assess_ms_per_image": full, "trust_overhead_ms_per_image": full - forward,
            "ratio_to_forward": full / forward}


def run_checks(run_dir: Path, settings: Settings, model_path: Path | None = None,
               data_dir: Path | None = None) -> dict[str, Any]:
    """Run every check on a calibrated model of the run (default ``run_dir/model.pt``); write
    ``checks.json`` beside it (with the model file's SHA-256) and the presence-only figures
    under ``checks/``.

    Args:
        data_dir: The dataset the run's split refers to (default: from its config).
    """
    model_path = Path(model_path or run_dir / "model.pt")
    clf = load_classifier(model_path)
    rule = TrustRule.of(clf)
    cfg = load_config(TrainConfig, run_dir / "config.yaml", resume=None)
    data_dir = Path(data_dir) if data_dir else dataset_dir(cfg.data_dir, settings)
    table = SplitTable.load(run_dir / "split.csv")
    report: dict[str, Any] = {"model": str(model_path), "model_sha256": file_sha256(model_path)}
    for key, part in (("in_source", "test"), ("source_held_out", SHIFT_PART)):
        if table.indices(part):
            data = load_part(data_dir, table, part, clf.image_size, progress=False)
            report[key] = labelled_evaluation(clf, data)[0]
    if cfg.presence_dir and cfg.presence_split:
        report["presence"] = evaluate_presence(
            clf, under_root(Path(cfg.presence_dir), settings), Path(cfg.presence_split),
            "report", run_dir / "checks" / "presence")
    report["ood"] = check_ood(clf, rule)
    val = table.indices("val")[:64]
    if val:
        images = load_slices([data_dir / table.paths[i] for i in val], None, clf.image_size,
                             progress=False).images
        report["cost"] = measure_cost(clf, rule, images)
    (run_dir / "checks.json").write_text(json.dumps(report, indent=2))
    log.info("checks written to %s", run_dir / "checks.json")
    return report
