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
from mrimaster.inference.graph import Graph, engine_problem, open_graph
from mrimaster.inference.onnx_runtime import export_mismatch
from mrimaster.segmentation.sliding_window import GRIDS, sliding_window

FORMAT = "mrimaster-segmenter-onnx/1"
GRAPH = "model.onnx"
META = "model.onnx.json"
SEG_VARIANTS: tuple[str, ...] = ("openvino-bf16", "openvino-fp32", "onnx-fp32")
"""Variants of the segmentation graph, fastest first (see ``benchmarks/bench_segment.py``)."""


@dataclass
class SegInfo:
    """What a segmentation model carries besides its network, whichever runtime runs it.

    Attributes:
        modalities: Input channels, in order.
        patch: Training patch size (also the sliding-window size), voxels.
        modality_dropout: Trained to tolerate missing modalities (zero-filled channels).
        spacing: Voxel size (mm) of the training data; inputs are resampled to it.
        combinations: The sets of modalities the training cases had (before dropout).
            Inference uses the largest of them (and its subsets) that a case has, so that the
            network only ever sees combinations it was trained on; empty for models from before
            this was recorded (every combination allowed).
        postprocess: Per region (``WT``, ``TC``, ``ET``), the component clean-up chosen by
            cross-validation: drop components smaller than this fraction of the largest, or
            ``None`` for none.
        excluded: ``{modality: reason}``: modalities cross-validation found to lower the Dice;
            not fed even when a case has them (unless nothing else usable is left).
        meta: Provenance and metrics.
        grid: The sliding window's patch grid
            (:data:`mrimaster.segmentation.sliding_window.GRIDS`), part of what the model's
            cross-validation measured; ``monai`` for models from before it was recorded.
        runtime_name: ``torch`` or the exported variant that runs the network.
        notes: What loading noticed that every result should say (e.g. that the fold
            ensemble could not run, so the final model ran alone); not saved.
        trust: The model folder's fitted case trust rule
            (:class:`mrimaster.segmentation.case_trust.CaseTrustRule`), set by the loader;
            ``None`` without one.
        brain_check: The 2D brain-MRI check that inference runs on slices across each
            sequence before segmenting it (:mod:`mrimaster.trust.volume_check`), set by the
            loader; ``None``: not checked (said in ``volumes.json``).
    """

    modalities: list[str]
    patch: tuple[int, int, int]
    modality_dropout: bool
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    combinations: list[list[str]] = field(default_factory=list)
    postprocess: dict[str, float | None] = field(default_factory=lambda: {"WT": 0.1})
    excluded: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    grid: str = "monai"
    runtime_name: str = "torch"
    notes: list[str] = field(default_factory=list, compare=False)
    trust: Any = field(default=None, compare=False, repr=False)
    brain_check: Any = field(default=None, compare=False, repr=False)

    def info_dict(self) -> dict[str, Any]:
        """The fields saved with the model (and copied into its ONNX export)."""
        return {"modalities": list(self.modalities), "patch": list(self.patch),
                "modality_dropout": self.modality_dropout, "spacing": list(self.spacing),
                "combinations": [list(c) for c in self.combinations],
                "postprocess": dict(self.postprocess), "excluded": dict(self.excluded),
                "grid": self.grid, "meta": self.meta}


def info_from_dict(d: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`SegInfo` from a saved dict (older files lack the newer
    fields: 1 mm, every combination, WT clean-up at 0.1, MONAI's patch grid as before)."""
    patch = d["patch"]
    spacing = d.get("spacing", (1.0, 1.0, 1.0))
    grid = str(d.get("grid", "monai"))
    if grid not in GRIDS:
        raise ModelError(f"the model's sliding-window grid {grid!r} is unknown to this version "
                         f"({', '.join(GRIDS)})", "update mrimaster, or use another model")
    return {"modalities": list(d["modalities"]),
            "patch": (int(patch[0]), int(patch[1]), int(patch[2])),
            "modality_dropout": bool(d["modality_dropout"]),
            "spacing": (float(spacing[0]), float(spacing[1]), float(spacing[2])),
            "combinations": [list(c) for c in d.get("combinations", [])],
            "postprocess": dict(d.get("postprocess", {"WT": 0.1})),
            "excluded": dict(d.get("excluded", {})), "grid": grid,
            "meta": d.get("meta", {})}


class SegModel(Protocol):
    """What segmentation inference needs, whichever runtime runs the network."""

    modalities: list[str]
    patch: tuple[int, int, int]
    modality_dropout: bool
    spacing: tuple[float, float, float]
    combinations: list[list[str]]
    postprocess: dict[str, float | None]
    excluded: dict[str, str]
    meta: dict[str, Any]
    grid: str
    runtime_name: str
    notes: list[str]
    trust: Any
    brain_check: Any

    def logits(self, image: np.ndarray, overlap: float = 0.25, batch_size: int = 2
               ) -> np.ndarray:
        """``(C, D, H, W)`` float32 -> ``(3, D, H, W)`` float32 WT/TC/ET logits, a fresh array
        the caller owns and may overwrite (the passes turn it into probabilities in place)."""
        ...


@dataclass
class OnnxSegmenter(SegInfo):
    """A segmentation model running its exported graph (see the module docstring)."""

    graph: Graph | None = field(default=None, kw_only=True)

    def logits(self, image: np.ndarray, overlap: float = 0.25, batch_size: int | None = None
               ) -> np.ndarray:
        # by default one patch a call for each of OpenVINO's CPU streams (open_graph's
        # parallel; at least 2): on 2 cores as fast a patch as 4 a call (57-60 ms a 96^3
        # patch in bf16) with half the working memory, whose first touch the kernel pays for:
        # a cold `seg predict` with the fold ensemble 9.83 s -> 8.89 s (median of 7 each,
        # interleaved) and 2.86 -> 1.93 GB at its peak, the same logits (2026-12-07; README,
        # Segmentation)
        graph = self.graph
        assert graph is not None
        batch = batch_size or max(2, int(getattr(graph, "streams", 2)))
        return sliding_window(np.ascontiguousarray(image, np.float32), self.patch,
                              lambda x: graph(x)["logits"], overlap, batch, self.grid)


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
    return OnnxSegmenter(**info_from_dict(meta), runtime_name=variant,
                         graph=open_graph(folder / GRAPH, variant, parallel=True))
