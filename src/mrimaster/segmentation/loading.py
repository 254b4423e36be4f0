"""Load the segmentation model that inference runs: the fold ensemble, or one model.

A model folder exported with its cross-validation folds (``folds/fold_K``) segments with the
ensemble of the folds (nnU-Net's default), planned and cleaned up by the final model's
settings; ``fast`` runs the final model alone. Either way the folder's fitted trust rule
(``trust.json``, :mod:`mrimaster.segmentation.case_trust`) goes with the model, and so does
the brain-MRI check of the models folder (``brain-check``, else the shipped one), which
inference runs on every sequence before segmenting it (:mod:`mrimaster.trust.volume_check`).

This module sits above :mod:`mrimaster.segmentation.runtime` (the exported graphs),
:mod:`mrimaster.segmentation.model` (PyTorch) and :mod:`mrimaster.segmentation.ensemble`, so
none of them imports another's loader.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mrimaster.errors import ModelError
from mrimaster.inference.onnx_runtime import choose_variant, export_mismatch
from mrimaster.models.paths import resolve_model_path
from mrimaster.segmentation.case_trust import load_rule
from mrimaster.segmentation.ensemble import fold_folders, load_ensemble
from mrimaster.segmentation.runtime import (
    GRAPH,
    META,
    SEG_VARIANTS,
    SegInfo,
    SegModel,
    info_from_dict,
    load_seg_variant,
    read_seg_meta,
    seg_variant_problem,
)
from mrimaster.settings import SHIPPED_MODELS
from mrimaster.trust.brain_check import FOLDER as BRAIN_CHECK
from mrimaster.trust.brain_check import BrainCheck, load_brain_check

log = logging.getLogger(__name__)


def load_single(path: Path, runtime: str = "auto", device: str = "auto") -> SegModel:
    """The model of ``path`` (a ``model.pt``) in the first usable variant of ``runtime``
    exported beside it, else PyTorch."""
    variant, where = choose_variant(path.parent, runtime, device, SEG_VARIANTS,
                                    seg_variant_problem)
    if variant is not None:
        return load_seg_variant(path.parent, variant)
    from mrimaster.segmentation.model import load_segmenter

    return load_segmenter(path, where)


def load_segmenter_for_inference(ref: str | Path, models_dir: Path, runtime: str = "auto",
                                 device: str = "auto", fast: bool = False,
                                 check_brain_mri: bool = True) -> SegModel:
    """The segmentation model ``ref`` (``default``, run or model folder, file) in ``runtime``:
    its fold ensemble unless ``fast`` or it has none, with its trust rule (``trust``) and the
    brain-MRI check (``brain_check``: :func:`volume_brain_check`; ``check_brain_mri`` false, the
    settings' ``MRIMASTER_CHECK_BRAIN_MRI=off``: none, and a note that every result carries).

    A member runs in the first usable exported variant of ``runtime``, else from its
    ``model.pt``; where a member can do neither (``runtime`` torch and no ``model.pt``, say)
    the final model runs alone, and the log says why.

    Raises:
        ModelError: unknown runtime, or ``onnx``/``openvino`` asked for but not usable here.
    """
    path = resolve_model_path(ref, models_dir, default="seg-default")
    model: SegModel | None = None
    notes: list[str] = []
    if not fast and fold_folders(path.parent):
        try:
            model = load_ensemble(final_info(path), path.parent, runtime)
        except ModelError as exc:
            notes.append("the fold ensemble could not run here, so the final model ran alone "
                         f"({exc.message})")
            log.warning(notes[-1])
    if model is None:
        model = load_single(path, runtime, device)
    model.trust = load_rule(path.parent)
    model.brain_check = volume_brain_check(models_dir) if check_brain_mri else None
    if model.brain_check is None:
        notes.append("not checked to be brain MRI: the brain-MRI check is "
                     + ("switched off (MRIMASTER_CHECK_BRAIN_MRI=off)" if not check_brain_mri
                        else "not installed"))
    model.notes = notes
    return model


def volume_brain_check(models_dir: Path) -> BrainCheck | None:
    """The brain-MRI check of ``models_dir`` (its ``brain-check`` folder), else the shipped
    one; ``None`` (and a warning) when neither is there."""
    for folder in (Path(models_dir), SHIPPED_MODELS):
        if (folder / BRAIN_CHECK).is_dir():
            return load_brain_check(folder)
    log.warning("no brain-MRI check in %s or the shipped models: 3D volumes are segmented "
                "without checking that they are brain MRI", models_dir)
    return None


def final_info(path: Path) -> SegInfo:
    """The final model's settings (inputs, spacing, post-processing) without its network:
    from its export's record when that belongs to ``path``, else from ``path`` itself."""
    folder = path.parent
    if (folder / GRAPH).is_file() and (folder / META).is_file():
        meta = read_seg_meta(folder)
        if export_mismatch(folder / GRAPH, meta, META) is None:
            return SegInfo(**info_from_dict(meta))
    from mrimaster.segmentation.model import load_segmenter

    return load_segmenter(path)
