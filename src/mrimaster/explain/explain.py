"""The explain stage: maps, overlays and the layer-by-layer figure for image files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mrimaster.data.images import prepare_slice, slice_geometry, to_original_grid
from mrimaster.data.transforms import eval_batch
from mrimaster.device import inference_device
from mrimaster.errors import DataError, MRIMasterError
from mrimaster.explain.cam import conv_layers, default_layer, get_cam, resolve_layer
from mrimaster.explain.figures import save_layer_figure, save_overlay
from mrimaster.explain.sanity import randomization_check
from mrimaster.inference.predict import predict_files, read_gray
from mrimaster.inference.runtime import softmax
from mrimaster.models.checkpoint import load_classifier
from mrimaster.models.paths import resolve_model_path
from mrimaster.settings import Settings
from mrimaster.trust.brain_check import load_brain_check


@dataclass
class ExplainConfig:
    """Inputs of ``mrimaster explain``.

    Attributes:
        model: Run folder, model file or ``default``.
        images: Image files.
        out_dir: Output folder.
        layer: A module's name, ``all`` (every convolutional layer), or ``None`` for the
            model's default (a rectified block output).
        target: Class label to explain (default: the predicted class).
        method: ``gradcam`` or ``gradcam++``.
        sanity_check: Also run the model-randomisation check (``sanity.json``).
        device: ``auto`` (a CUDA GPU when there is one), ``cpu`` or ``cuda``.
    """

    model: str
    images: list[Path]
    out_dir: Path
    layer: str | None = None
    target: str | None = None
    method: str = "gradcam"
    sanity_check: bool = False
    device: str = "auto"


def run_explain(cfg: ExplainConfig, settings: Settings) -> list[dict[str, Any]]:
    """For each image: ``<stem>_overlay.png`` (chosen or default layer, on the original image:
    crop, pad and resize undone), ``<stem>_map_original.npy`` (that map on the original's pixel
    grid, float32 >= 0), ``<stem>_layers.png``
    (every conv layer with ``layer=all``, else the chosen one), ``<stem>_maps/<layer>.npy`` (raw
    maps, float32 >= 0 at the layer's own resolution). Returns one summary per image (also
    ``explain.json``), with ``status`` and ``reason`` as ``predict`` gives them.

    Images are read as ``predict`` reads them (files, DICOM slices, folders), and each gets
    its trust decision first (:func:`mrimaster.inference.predict.predict_files`): a rejected
    image (not a brain MRI slice the model knows) is listed with its reason and gets no class
    and no map; a file that cannot be read is listed as ``skipped``; neither stops the others.

    Raises:
        DataError: no image could be explained (each one's reason is in the message).
    """
    clf = load_classifier(resolve_model_path(cfg.model, settings.models_dir),
                          inference_device(cfg.device))
    cam_cls = get_cam(cfg.method)
    if cfg.layer == "all":  # every conv layer, then the default (rectified) layer last
        names = [n for n in conv_layers(clf.net) if n != default_layer(clf.net)]
        names.append(default_layer(clf.net))
    else:
        names = [resolve_layer(clf.net, cfg.layer)[0]]
    target = None
    if cfg.target is not None:
        if cfg.target not in clf.classes:
            raise MRIMasterError(f"unknown class {cfg.target!r}",
                                 f"choose one of: {', '.join(clf.classes)}")
        target = clf.classes.index(cfg.target)
    # the trust decision first, as predict makes it: a rejected image (not a brain MRI slice)
    # gets no class and no map; a referred one is explained, with its status in the title
    rows, skipped = predict_files(clf, cfg.images, brain_check=load_brain_check(
        settings.models_dir), log_skipped=False)
    shown = [r for r in rows if r["status"] != "reject"]
    not_shown = ([{"image": r["path"], "status": "reject", "reason": r["reason"]}
                  for r in rows if r["status"] == "reject"]
                 + [{"image": s["path"], "status": "skipped", "reason": s["reason"]}
                    for s in skipped])
    if not shown:
        raise DataError("nothing to explain: " + "; ".join(
            f"{Path(e['image']).name}: {e['reason']}" for e in not_shown),
            "give brain MRI slices (JPEG, PNG, 16-bit PNG or TIFF, DICOM)")
    paths = [Path(r["path"]) for r in shown]
    originals = [read_gray(p) for p in paths]
    images = [prepare_slice(g, clf.image_size) for g in originals]
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x = eval_batch(np.stack(images))
    per_layer = {}
    for name in tqdm(names, desc="Grad-CAM layers", unit="layer", leave=False, disable=None):
        with cam_cls(clf.net, name) as cam:
            per_layer[name] = cam(x, target)
    summaries = []
    for i, path in enumerate(tqdm(paths, desc="figures", unit="img", leave=False,
                                  disable=None)):
        last = per_layer[names[-1]]
        cls = int(last.classes[i])
        probs = softmax(last.logits[i:i + 1], clf.temperature)[0]
        refer = " REFER TO A RADIOLOGIST," if shown[i]["status"] == "refer" else ""
        title = (f"{path.name}: {clf.classes[cls]} (p = {probs[cls]:.3f}),{refer} "
                 f"{cfg.method}")
        stem = f"{i:03d}_{path.stem}"
        on_original = to_original_grid(per_layer[names[-1]].upsampled[i],
                                       slice_geometry(originals[i]), originals[i].shape)
        save_overlay(originals[i], on_original, out / f"{stem}_overlay.png",
                     f"{title}, layer {names[-1]}")
        np.save(out / f"{stem}_map_original.npy", on_original)
        save_layer_figure(images[i], names, [per_layer[n].maps[i] for n in names],
                          [per_layer[n].upsampled[i] for n in names], out / f"{stem}_layers.png",
                          title)
        maps_dir = out / f"{stem}_maps"
        maps_dir.mkdir(exist_ok=True)
        for n in names:
            np.save(maps_dir / f"{n}.npy", per_layer[n].maps[i])
        summaries.append({"image": str(path), "status": shown[i]["status"],
                          "reason": shown[i]["reason"], "class": clf.classes[cls],
                          "probability": float(probs[cls]), "layers": names,
                          "method": cfg.method, "files": [f"{stem}_overlay.png",
                                                          f"{stem}_layers.png",
                                                          f"{stem}_map_original.npy",
                                                          f"{stem}_maps/"]})
    summaries += [{**e, "class": None, "probability": None, "layers": [], "files": []}
                  for e in not_shown]
    (out / "explain.json").write_text(json.dumps(summaries, indent=2))
    if cfg.sanity_check:
        layer = None if cfg.layer == "all" else names[-1]
        report = randomization_check(clf.net, np.stack(images), layer, cfg.method)
        report["images"] = [str(p) for p in paths]
        (out / "sanity.json").write_text(json.dumps(report, indent=2))
    return summaries
