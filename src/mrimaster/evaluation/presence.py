"""Evaluate on a presence-only set (every image shows a tumour of unknown type, maybe a box).

Reports tumour-detection sensitivity under distribution shift (how often "no tumour" wins, and
how confidently), what the trust layer catches, and, where boxes exist, whether Grad-CAM points
at the tumour: the pointing game (Zhang et al., "Top-down Neural Attention by Excitation
Backprop", ECCV 2016): a hit when the map's maximum, on the original image's pixel grid, lies
inside the tumour's box. The same score of a map that always points at the image centre is
reported beside it as the baseline to beat.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.patches import Rectangle

from mrimaster.data.folders import load_slices
from mrimaster.data.images import load_grayscale, slice_geometry, to_original_grid
from mrimaster.data.presence import Box, scan_presence
from mrimaster.data.splits import SplitTable
from mrimaster.data.transforms import eval_batch
from mrimaster.errors import DataError
from mrimaster.evaluation.plots import gallery_grid
from mrimaster.explain.cam import GradCAM
from mrimaster.models.checkpoint import Classifier
from mrimaster.trust.referral import Assessment, TrustRule, assess
from mrimaster.trust.report import presence_trust


def tumour_cams(clf: Classifier, images: np.ndarray, probs: np.ndarray, batch_size: int = 32
                ) -> np.ndarray:
    """Grad-CAM (default layer) of each image's most probable *tumour* class, input-sized.

    Args:
        probs: ``(N, C)`` the images' class probabilities (which tumour class to explain).

    Returns:
        ``(N, S, S)`` float32 >= 0.
    """
    tumour = np.array([i for i, c in enumerate(clf.classes) if c != "no_tumor"])
    targets = tumour[probs[:, tumour].argmax(1)]
    out = []
    with GradCAM(clf.net) as cam:
        for start in range(0, len(images), batch_size):
            x = eval_batch(images[start:start + batch_size])
            out.append(cam(x, [int(t) for t in targets[start:start + batch_size]]).upsampled)
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:], np.float32)


def pointing_hits(maps: list[np.ndarray], boxes: list[Box]) -> tuple[np.ndarray, np.ndarray]:
    """Pointing-game hits of the maps and of the image-centre baseline.

    Args:
        maps: ``(H, W)`` maps on each original image's grid.
        boxes: The tumour box of each image.

    Returns:
        ``((N,) bool map hits, (N,) bool centre-baseline hits)``.
    """
    hits, centre = [], []
    for m, box in zip(maps, boxes, strict=True):
        h, w = m.shape
        top, bottom, left, right = box.pixel_bounds(w, h)
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        hits.append(top <= y < bottom and left <= x < right)
        centre.append(top <= h // 2 < bottom and left <= w // 2 < right)
    return np.array(hits, bool), np.array(centre, bool)


def _gallery(originals: list[np.ndarray], maps: list[np.ndarray], boxes: list[Box | None],
             captions: list[str], path: Path, title: str) -> None:
    fig, axes = gallery_grid(len(originals), 6, "nothing to show")
    for ax, img, m, box, cap in zip(axes.ravel(), originals, maps, boxes, captions,
                                    strict=False):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        peak = m.max()
        ax.imshow(m / peak if peak > 0 else m, cmap="jet", alpha=0.4, vmin=0, vmax=1)
        if box is not None:
            top, bottom, left, right = box.pixel_bounds(img.shape[1], img.shape[0])
            ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False,
                                   edgecolor="lime", lw=1.5))
        ax.set_title(cap, fontsize=7)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def evaluate_presence(clf: Classifier, data_dir: Path, split_file: Path | None = None,
                      part: str = "report", out_dir: Path | None = None,
                      batch_size: int = 64, gallery_size: int = 24) -> dict[str, Any]:
    """Sensitivity, confident misses, referral and pointing game on a presence-only set.

    Args:
        clf: The classifier.
        data_dir: Presence-only folder or box CSV (:mod:`mrimaster.data.presence`).
        split_file: Restrict to one part of this split (``mrimaster data split``).
        part: That part (``report``: never used for training or fitting).
        out_dir: Where to write ``metrics.json``, ``report.md``, ``predictions.csv``,
            ``missed_gradcam.png`` and ``pointing_gradcam.png`` (nothing written if ``None``).

    Returns:
        The metrics (see :func:`mrimaster.trust.report.presence_trust`, plus ``pointing_game``).
    """
    if "no_tumor" not in clf.classes:
        raise DataError(f"the model's classes {clf.classes} have no 'no_tumor': a presence-only "
                        "set measures how often 'no tumour' wins", "use a tumour classifier")
    scan = scan_presence(Path(data_dir))
    paths = scan.paths
    if split_file is not None:
        table = SplitTable.load(split_file)
        rel = [p.relative_to(scan.root).as_posix() for p in paths]
        parts = table.subset(rel).splits
        paths = [p for p, s in zip(paths, parts, strict=True) if s == part]
        if not paths:
            raise DataError(f"{split_file} has no {part!r} images", "use --part fit or report")
    slices = load_slices(paths, None, clf.image_size, progress=False, skipped=scan.skipped)
    if not slices.paths:
        raise DataError(f"none of the images in {data_dir} could be read")
    rule = TrustRule.of(clf)
    result: Assessment = assess(clf.runtime, rule, slices.images, slices.stats, batch_size)
    metrics: dict[str, Any] = {"data": str(data_dir), "split_file": str(split_file or ""),
                               "part": part if split_file else "all",
                               **presence_trust(result, clf.classes)}
    originals = [load_grayscale(p) for p in slices.paths]
    cams = tumour_cams(clf, slices.images, result.probs)
    maps = [to_original_grid(c, slice_geometry(g), g.shape) for c, g in zip(cams, originals,
                                                                             strict=True)]
    boxes = [scan.boxes.get(p) for p in slices.paths]
    with_box = [i for i, b in enumerate(boxes) if b is not None]
    hits = np.zeros(len(maps), bool)
    if with_box:
        hit, centre = pointing_hits([maps[i] for i in with_box],
                                    [b for b in boxes if b is not None])
        hits[with_box] = hit
        metrics["pointing_game"] = {"n": len(with_box), "hits": int(hit.sum()),
                                    "accuracy": float(hit.mean()),
                                    "centre_baseline": float(centre.mean())}
    if out_dir is not None:
        _write(Path(out_dir), metrics, clf, result, slices.paths, originals, maps, boxes, hits,
               gallery_size)
    return metrics


def _write(out: Path, metrics: dict[str, Any], clf: Classifier, result: Assessment,
           paths: list[Path], originals: list[np.ndarray], maps: list[np.ndarray],
           boxes: list[Box | None], hits: np.ndarray, gallery_size: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    probs = result.probs
    with open(out / "predictions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "predicted", "confidence", "status", "reason", "uncertainty",
                         "distance", "pointing_hit", *[f"p_{c}" for c in clf.classes]])
        for i, path in enumerate(paths):
            writer.writerow([str(path), clf.classes[int(probs[i].argmax())],
                             f"{probs[i].max():.6f}", result.status[i], result.reason[i],
                             f"{result.uncertainty[i]:.6f}", f"{result.distance[i]:.4f}",
                             int(hits[i]) if boxes[i] is not None else "",
                             *[f"{p:.6f}" for p in probs[i]]])
    no_tumor = clf.classes.index("no_tumor")
    missed = np.flatnonzero(probs.argmax(1) == no_tumor)
    missed = missed[np.argsort(-probs[missed, no_tumor])][:gallery_size]
    _gallery([originals[i] for i in missed], [maps[i] for i in missed],
             [boxes[i] for i in missed],
             [f"{paths[i].name}: no tumour {probs[i, no_tumor]:.2f}\n{result.status[i]}"
              for i in missed], out / "missed_gradcam.png",
             f"Called 'no tumour' ({metrics['missed']} of {metrics['n']}), most confident first; "
             "Grad-CAM of the top tumour class, box in green")
    sample = np.linspace(0, len(paths) - 1, min(gallery_size, len(paths))).astype(int)
    _gallery([originals[i] for i in sample], [maps[i] for i in sample],
             [boxes[i] for i in sample],
             [f"{paths[i].name}: {'hit' if hits[i] else 'miss'}" for i in sample],
             out / "pointing_gradcam.png", "Pointing game: Grad-CAM maximum inside the box?")
    lines = [f"# Presence-only check: {metrics['data']} ({metrics['part']})", "",
             f"- images: {metrics['n']} (every one shows a tumour)",
             f"- sensitivity (top class is a tumour): {metrics['sensitivity']:.3f}",
             f"- called 'no tumour': {metrics['missed']}, of which confident (p > 0.95): "
             f"{metrics['confident_misses']} ({metrics['confident_misses_caught']} referred or "
             "rejected)",
             f"- 'no tumour' calls that the trust layer let through: "
             f"{metrics['missed_not_caught']}",
             f"- status: {metrics['status']}",
             f"- predicted classes: {metrics['predicted']}"]
    if "pointing_game" in metrics:
        pg = metrics["pointing_game"]
        lines.append(f"- pointing game: {pg['hits']}/{pg['n']} = {pg['accuracy']:.3f} "
                     f"(centre baseline {pg['centre_baseline']:.3f})")
    (out / "report.md").write_text("\n".join(lines) + "\n")
