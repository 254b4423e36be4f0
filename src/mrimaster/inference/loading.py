"""Load a classifier for inference in the runtime asked for (``--runtime``).

``auto`` takes the first validated variant of the model's ONNX export whose engine is
installed (:data:`mrimaster.inference.onnx_runtime.VARIANTS`, fastest first) and falls back to
PyTorch, which is always available. torch is imported only when PyTorch runs the model.
"""

from __future__ import annotations

from pathlib import Path

from mrimaster.inference.onnx_runtime import (
    VARIANTS,
    choose_variant,
    load_variant,
    variant_problem,
)
from mrimaster.inference.runtime import ClassifierModel
from mrimaster.models.paths import resolve_model_path


def load_for_inference(ref: str | Path, models_dir: Path, runtime: str = "auto",
                       device: str = "auto") -> ClassifierModel:
    """The classifier ``ref`` (``default``, run or model folder, ``model.pt``) in ``runtime``.

    Raises:
        ModelError: unknown runtime; ``onnx``/``openvino`` asked for but not usable here (the
            reason says why: engine not installed, no validated export, stale export).
    """
    path = resolve_model_path(ref, models_dir)
    variant, where = choose_variant(path.parent, runtime, device, tuple(VARIANTS),
                                    variant_problem)
    if variant is not None:
        return load_variant(path.parent, variant)
    from mrimaster.models.checkpoint import load_classifier

    return load_classifier(path, where)
