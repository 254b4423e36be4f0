"""Segmentation models in any runtime: PyTorch + MONAI, or the exported graph without torch.

A segmentation model folder exported by :mod:`mrimaster.segmentation.onnx_export` holds, beside
``model.pt``, ``model.onnx`` (the U-Net on one batch of patches: input ``image``
``(B, C, *patch)``, output ``logits`` ``(B, 3, *patch)``) and ``model.onnx.json`` (modalities,
patch, the SHA-256 of both files, and per variant the export check against PyTorch: Dice of
each region on the check cases). A variant listed as kept was validated; ``--runtime auto``
uses the first kept one whose engine is installed (:data:`SEG_VARIANTS`, fastest first), else
PyTorch. The torch-free path blends patches with
:func:`mrimaster.segmentation.sliding_window.sliding_window`, which reproduces MONAI's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mrimaster.errors import ModelError
from mrimaster.inference.onnx_runtime import (
    Graph,
    choose_variant,
    engine_problem,
    export_mismatch,
    open_graph,
)
from mrimaster.segmentation.sliding_window import sliding_window

FORMAT = "mrimaster-segmenter-onnx/1"
GRAPH = "model.onnx"
META = "model.onnx.json"
SEG_VARIANTS: tuple[str, ...] = ("openvino-bf16", "openvino-fp32", "onnx-fp32")
"""Variants of the segmentation graph, fastest first (see ``benchmarks/bench_segment.py``)."""


class SegModel(Protocol):
    """What segmentation inference needs, whichever runtime runs the network."""

    modalities: list[str]
    patch: tuple[int, int, int]
    modality_dropout: bool
    meta: dict[str, Any]
    runtime_name: str

    def logits(self, image: np.ndarray, overlap: float = 0.25, batch_size: int = 2
               ) -> np.ndarray:
        """``(C, D, H, W)`` float32 -> ``(3, D, H, W)`` float32 WT/TC/ET logits."""
        ...


@dataclass
class OnnxSegmenter:
    """A segmentation model running its exported graph (see the module docstring)."""

    modalities: list[str]
    patch: tuple[int, int, int]
    modality_dropout: bool
    runtime_name: str
    graph: Graph
    meta: dict[str, Any] = field(default_factory=dict)

    def logits(self, image: np.ndarray, overlap: float = 0.25, batch_size: int = 2
               ) -> np.ndarray:
        return sliding_window(np.ascontiguousarray(image, np.float32), self.patch,
                              lambda x: self.graph(x)["logits"], overlap, batch_size)


def read_seg_meta(folder: Path) -> dict[str, Any]:
    """``model.onnx.json`` of a segmentation model folder."""
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder / META} is not readable ({type(exc).__name__})",
                         "export the model again with `mrimaster seg export-onnx`") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{folder / META} is not an MRIMaster segmentation export")
    return meta


def seg_variant_problem(folder: Path, variant: str) -> str | None:
    """Why ``variant`` of ``folder``'s export cannot be used here (``None`` when it can)."""
    problem = engine_problem(variant)
    if problem:
        return problem
    if not (folder / GRAPH).is_file() or not (folder / META).is_file():
        return f"{folder} has no ONNX export ({GRAPH}, {META})"
    meta = read_seg_meta(folder)
    if not meta.get("variants", {}).get(variant, {}).get("kept"):
        return f"{variant} was not validated for this model"
    return export_mismatch(folder / GRAPH, meta, META)


def load_seg_variant(folder: Path, variant: str) -> OnnxSegmenter:
    """Load a validated variant (check it first with :func:`seg_variant_problem`)."""
    meta = read_seg_meta(folder)
    patch = meta["patch"]
    return OnnxSegmenter(list(meta["modalities"]), (int(patch[0]), int(patch[1]), int(patch[2])),
                         bool(meta["modality_dropout"]), variant,
                         open_graph(folder / GRAPH, variant), meta.get("meta", {}))


def load_segmenter_for_inference(ref: str | Path, models_dir: Path, runtime: str = "auto",
                                 device: str = "auto") -> SegModel:
    """The segmentation model ``ref`` (``default``, run or model folder, file) in ``runtime``.

    Raises:
        ModelError: unknown runtime, or ``onnx``/``openvino`` asked for but not usable here.
    """
    from mrimaster.models.paths import resolve_model_path

    path = resolve_model_path(ref, models_dir, default="seg-default")
    variant, where = choose_variant(path.parent, runtime, device, SEG_VARIANTS,
                                    seg_variant_problem)
    if variant is not None:
        return load_seg_variant(path.parent, variant)
    from mrimaster.segmentation.model import load_segmenter

    return load_segmenter(path, where)
